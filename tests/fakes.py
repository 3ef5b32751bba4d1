"""Real HTTP stand-ins for the outside services Ezra calls: one small WSGI app per service,
served on 127.0.0.1 (a free port) by werkzeug's threaded server from a background thread, so
the production clients (``requests`` for the remote Whisper service, the ``openai`` package
for OpenAI-compatible APIs) run unchanged against them. Each speaks only what Ezra sends:

* :class:`FakeWhisperService`: the remote submit-then-poll service (``POST /process``
  multipart, ``POST /result`` JSON).
* :class:`FakeOpenAI`: ``POST /v1/audio/transcriptions`` (``json`` and ``verbose_json``) and
  ``POST /v1/chat/completions``, as OpenAI, Groq, DeepSeek or speaches answer them.
* :class:`FakeDrive`: Google Drive's ``/uc?id=...`` download of one shared file.

:class:`FakeService` holds what they share: start/stop, the bearer-key check, per-endpoint
delays, one-shot error answers (``fail_next``) and in-flight counters. Requests are parsed by
werkzeug (multipart forms, JSON); there is no parser of our own.
"""
from __future__ import annotations

import hashlib
import json
import math
import socketserver
import threading
import time
import uuid
from typing import Any, Callable, Iterable

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

__all__ = ["FakeDrive", "FakeOpenAI", "FakeService", "FakeWhisperService"]

MAX_OPENAI_UPLOAD_BYTES = 25 * 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status, headers, mimetype="application/json")


class _QuietHandler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # headers and body in two writes: no delayed-ACK stalls

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 - werkzeug's name
        pass  # every request the tests care about is recorded by the fake itself


class _Server(ThreadedWSGIServer):
    block_on_close = False  # stop() must not wait for a handler sleeping through a delay

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for our name (socket.getfqdn), which can stall
        # without a network; the address is all we need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeService:
    """A WSGI app served on 127.0.0.1. Subclasses fill ``routes`` ((method, path) -> endpoint
    name) and give one ``_handle_<endpoint>(request)`` method per endpoint, and ``_error``.

    Attributes (safe to change while it runs):

    * ``api_key``: the expected bearer key (None: no check) -> 401 on a mismatch.
    * ``delay``: seconds before each answer: a number, or ``{endpoint: seconds}``.
    * ``in_flight`` / ``peak_in_flight``: endpoint -> requests being served now / at most.
    * ``errors``: exceptions raised by the fake's own handlers (each answered 500); the
      fixtures check that it stays empty.
    """

    routes: dict[tuple[str, str], str] = {}

    def __init__(self, *, api_key: str | None = None,
                 delay: float | dict[str, float] = 0.0) -> None:
        self.api_key = api_key
        self.delay = delay
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._port = 0
        self._faults: list[dict[str, Any]] = []
        self._attempts: list[str] = []
        self.errors: list[BaseException] = []
        names = set(self.routes.values())
        self.in_flight = dict.fromkeys(names, 0)
        self.peak_in_flight = dict.fromkeys(names, 0)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self):
        """Serve from a daemon thread; after a stop() the same port is bound again."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server("127.0.0.1", self._port, self, _QuietHandler)
            self._port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"{type(self).__name__}:{self._port}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and wake any handler sleeping through a delay."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.shutdown()
            server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return f"http://127.0.0.1:{self._port}"

    def reset(self) -> None:
        """Forget every record, pending fault and peak (the configuration stays)."""
        with self._lock:
            self._faults.clear()
            self._attempts.clear()
            self.errors.clear()
            self.peak_in_flight.update(self.in_flight)
            self._reset_records()

    def _reset_records(self) -> None:
        """Subclass hook: clear the subclass's own records."""

    # -- faults ---------------------------------------------------------------------------------

    def fail_next(self, endpoint: str, status: int = 500, *, times: int = 1,
                  retry_after: float | None = None, message: str | None = None) -> None:
        """Answer the next ``times`` requests of ``endpoint`` with ``status`` and the service's
        error body; ``retry_after`` (seconds) adds ``Retry-After`` and ``retry-after-ms``."""
        if endpoint not in self.in_flight:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(self.in_flight)}")
        with self._lock:
            self._faults += [{"endpoint": endpoint, "status": status, "message": message,
                              "retry_after": retry_after}] * times

    def attempts(self, endpoint: str) -> int:
        """How many requests reached ``endpoint``, whatever the answer."""
        with self._lock:
            return self._attempts.count(endpoint)

    def _take_fault(self, endpoint: str) -> Response | None:
        with self._lock:
            fault = next((f for f in self._faults if f["endpoint"] == endpoint), None)
            if fault is None:
                return None
            self._faults.remove(fault)
        response = self._error(fault["status"], fault["message"])
        if fault["retry_after"] is not None:
            seconds = fault["retry_after"]
            response.headers["Retry-After"] = f"{seconds:g}"
            response.headers["retry-after-ms"] = str(round(seconds * 1000))
        return response

    # -- the WSGI app ---------------------------------------------------------------------------

    def _error(self, status: int, message: str | None = None) -> Response:
        raise NotImplementedError

    def _not_found(self, request: Request) -> Response:
        return self._error(404, f"Not found: {request.method} {request.path}")

    def __call__(self, environ, start_response):
        request = Request(environ)
        endpoint = self.routes.get((request.method, request.path))
        if endpoint is None:
            return self._not_found(request)(environ, start_response)
        with self._lock:
            self._attempts.append(endpoint)
            self.in_flight[endpoint] += 1
            self.peak_in_flight[endpoint] = max(self.peak_in_flight[endpoint],
                                                self.in_flight[endpoint])
        try:
            response = self._answer(request, endpoint)
        except Exception as exc:  # a bug in the fake itself: answered, and kept for the test
            with self._lock:
                self.errors.append(exc)
            response = self._error(500, f"fake internal error: {exc!r}")
        finally:
            with self._lock:
                self.in_flight[endpoint] -= 1
        return response(environ, start_response)

    def _answer(self, request: Request, endpoint: str) -> Response:
        delay = self.delay.get(endpoint, 0) if isinstance(self.delay, dict) else self.delay
        if delay and self._stopping.wait(delay):
            return self._error(503, "stopping")
        if self.api_key is not None and \
                request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401)
        return self._take_fault(endpoint) or getattr(self, f"_handle_{endpoint}")(request)


# The remote Whisper service ---------------------------------------------------------------------

def default_transcript(audio: bytes, *_: Any) -> str:
    return f"Transcript of {len(audio)} bytes of audio (sha256 {sha256(audio)[:12]})."


class FakeWhisperService(FakeService):
    """The remote submit-then-poll transcription service.

    * ``POST /process``: multipart with the file ``audio`` and the fields
      ``transcription_id`` and optional ``prompt``; 200 ``{"message": "Transcription
      started"}``, 400 ``{"error": ...}`` when a part is missing.
    * ``POST /result``: JSON ``{"transcription_id"}``; 404 ``{"detail": "Transcription file
      not found"}`` while unknown and for the first ``polls_before_ready`` polls, then 200
      ``{"message": "still processing"}`` for ``processing_polls`` polls (for ever with
      ``never_finish``), then 200 text/plain: the transcript.

    Settings: ``transcript_for(audio, transcription_id, prompt)``; ``submit_status`` (every
    submit answers that status, no job made); ``result_failure`` (every poll answers that).
    Records: ``submits`` (transcription_id, prompt, filename, content_type, size, sha256, auth,
    status), ``polls`` (the ids polled, in order), ``jobs`` (id -> text, polls, ...).
    """

    routes = {("POST", "/process"): "process", ("POST", "/result"): "result"}
    NOT_FOUND_DETAIL = "Transcription file not found"
    STILL_PROCESSING = "still processing"

    def __init__(self, *, api_key: str | None = "whisper-test-key", polls_before_ready: int = 0,
                 processing_polls: int = 0, never_finish: bool = False,
                 transcript_for: Callable[[bytes, str, str | None], str] | None = None,
                 submit_status: int | None = None, result_failure: int | None = None,
                 delay: float | dict[str, float] = 0.0) -> None:
        super().__init__(api_key=api_key, delay=delay)
        self.polls_before_ready = polls_before_ready
        self.processing_polls = processing_polls
        self.never_finish = never_finish
        self.transcript_for = transcript_for or default_transcript
        self.submit_status = submit_status
        self.result_failure = result_failure
        self.submits: list[dict[str, Any]] = []
        self.polls: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}

    @property
    def submit_url(self) -> str:
        return f"{self.url}/process"

    @property
    def result_url(self) -> str:
        return f"{self.url}/result"

    def _reset_records(self) -> None:
        self.submits.clear()
        self.polls.clear()
        self.jobs.clear()

    def _error(self, status: int, message: str | None = None) -> Response:
        texts = {400: "Bad request", 401: "Unauthorized", 404: "Not found"}
        return json_answer(status, {"error": message or texts.get(status, "Server error")})

    def _handle_process(self, request: Request) -> Response:
        audio = request.files.get("audio")
        data = audio.read() if audio else b""
        tid = request.form.get("transcription_id")
        record = {"transcription_id": tid, "prompt": request.form.get("prompt"),
                  "filename": audio and audio.filename, "content_type": audio and audio.content_type,
                  "size": len(data) if audio else None, "sha256": sha256(data) if audio else None,
                  "auth": request.headers.get("Authorization")}
        if audio is None or not tid:
            response = self._error(400, "No audio file provided" if audio is None
                                   else "No transcription_id provided")
        elif self.submit_status is not None:
            response = self._error(self.submit_status)
        else:
            text = self.transcript_for(data, tid, record["prompt"])
            with self._lock:
                self.jobs[tid] = {"sha256": record["sha256"], "prompt": record["prompt"],
                                  "text": text, "polls": 0}
            response = json_answer(200, {"message": "Transcription started"})
        with self._lock:
            self.submits.append({**record, "status": response.status_code})
        return response

    def _handle_result(self, request: Request) -> Response:
        payload = request.get_json(silent=True)
        tid = payload.get("transcription_id") if isinstance(payload, dict) else None
        if not tid:
            return self._error(400, "No transcription_id provided")
        with self._lock:
            self.polls.append(str(tid))
            job = self.jobs.get(str(tid))
            if job is not None:
                job["polls"] += 1
        if self.result_failure is not None:
            return self._error(self.result_failure)
        if job is None or job["polls"] <= self.polls_before_ready:
            return json_answer(404, {"detail": self.NOT_FOUND_DETAIL})
        if self.never_finish or job["polls"] <= self.polls_before_ready + self.processing_polls:
            return json_answer(200, {"message": self.STILL_PROCESSING})
        return Response(job["text"], 200, mimetype="text/plain")


# The OpenAI-compatible API -----------------------------------------------------------------------

def default_chat_answer(system: str, user: str, model: str) -> str:
    return f"PROOFREAD[{user}]"


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class FakeOpenAI(FakeService):
    """An OpenAI-compatible API: ``POST /v1/audio/transcriptions`` (endpoint
    ``"transcriptions"``) and ``POST /v1/chat/completions`` (``"chat"``), with errors in the
    OpenAI shape ``{"error": {"message", "type", "param", "code"}}``.

    Settings: ``transcript_for(audio, model, prompt)``; ``chat_answer(system, user, model)``
    (``system``: the system messages joined, ``user``: the last user message);
    ``known_models`` (None: any model; else others are 404 ``model_not_found``);
    ``max_upload_bytes`` (413 above it); ``enforce_max_tokens`` (cut a longer answer at
    ``max_tokens``, ~4 characters a token, with ``finish_reason="length"``);
    ``RESPONSE_FORMATS`` (what the transcription route accepts; a provider without
    ``verbose_json`` answers it 400, as Groq's older models did).
    Records: ``transcription_requests`` (model, prompt, language, response_format, filename,
    size, sha256, status) and ``chat_requests`` (model, system, user, messages, max_tokens,
    temperature, status).
    """

    routes = {("POST", "/v1/audio/transcriptions"): "transcriptions",
              ("POST", "/v1/chat/completions"): "chat"}
    RESPONSE_FORMATS = ("json", "verbose_json")

    def __init__(self, *, api_key: str | None = "sk-test",
                 transcript_for: Callable[[bytes, str, str | None], str] | None = None,
                 chat_answer: Callable[[str, str, str], str] | None = None,
                 known_models: Iterable[str] | None = None,
                 max_upload_bytes: int = MAX_OPENAI_UPLOAD_BYTES,
                 enforce_max_tokens: bool = False,
                 delay: float | dict[str, float] = 0.0) -> None:
        super().__init__(api_key=api_key, delay=delay)
        self.transcript_for = transcript_for or default_transcript
        self.chat_answer = chat_answer or default_chat_answer
        self.known_models = set(known_models) if known_models is not None else None
        self.max_upload_bytes = max_upload_bytes
        self.enforce_max_tokens = enforce_max_tokens
        self.transcription_requests: list[dict[str, Any]] = []
        self.chat_requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    def _reset_records(self) -> None:
        self.transcription_requests.clear()
        self.chat_requests.clear()

    def _error(self, status: int, message: str | None = None, code: str | None = None,
               param: str | None = None) -> Response:
        if status == 401:
            kind, text, default_code = ("invalid_request_error", "Incorrect API key provided.",
                                        "invalid_api_key")
        elif status == 429:
            kind, text, default_code = ("requests", "Rate limit reached for requests.",
                                        "rate_limit_exceeded")
        elif status >= 500:
            kind, text, default_code = ("server_error", "The server had an error while "
                                        "processing your request.", None)
        else:
            kind, text, default_code = "invalid_request_error", "Invalid request.", None
        return json_answer(status, {"error": {"message": message or text, "type": kind,
                                              "param": param, "code": code or default_code}},
                           {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"})

    def _refusal(self, model: Any) -> Response | None:
        """The answer to a request for an unknown model, or None."""
        if not model or not isinstance(model, str):
            return self._error(400, "you must provide a model parameter", param="model")
        if self.known_models is not None and model not in self.known_models:
            return self._error(404, f"The model `{model}` does not exist or you do not have "
                                    f"access to it.", "model_not_found")
        return None

    def _handle_transcriptions(self, request: Request) -> Response:
        upload = request.files.get("file")
        data = upload.read() if upload else b""
        form = request.form
        response_format = form.get("response_format", "json")
        record = {"model": form.get("model"), "prompt": form.get("prompt"),
                  "language": form.get("language"), "response_format": response_format,
                  "filename": upload and upload.filename, "size": len(data),
                  "sha256": sha256(data)}
        response = self._transcribe(upload, data, record)
        with self._lock:
            self.transcription_requests.append({**record, "status": response.status_code})
        return response

    def _transcribe(self, upload, data: bytes, record: dict[str, Any]) -> Response:
        if upload is None:
            return self._error(400, "Missing required parameter: 'file'.", param="file")
        if record["response_format"] not in self.RESPONSE_FORMATS:
            return self._error(400, f"Invalid value for 'response_format': "
                                    f"'{record['response_format']}'.", param="response_format")
        if len(data) > self.max_upload_bytes:
            return self._error(413, f"Maximum content size limit ({self.max_upload_bytes}) "
                                    f"exceeded ({len(data)} bytes read)", "request_too_large")
        refusal = self._refusal(record["model"])
        if refusal is not None:
            return refusal
        text = self.transcript_for(data, record["model"], record["prompt"])
        duration = round(max(len(data) / 16000.0, 0.1), 2)
        if record["response_format"] == "json":
            return json_answer(200, {"text": text})
        return json_answer(200, {
            "task": "transcribe", "language": record["language"] or "english",
            "duration": duration, "text": text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": " " + text,
                          "tokens": [], "temperature": 0.0, "avg_logprob": -0.2,
                          "compression_ratio": 1.2, "no_speech_prob": 0.01}]})

    def _handle_chat(self, request: Request) -> Response:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return self._error(400, "We could not parse the JSON body of your request.")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "Invalid 'messages': expected a non-empty array.",
                               param="messages")
        texts = {role: [str(m.get("content") or "") for m in messages
                        if isinstance(m, dict) and m.get("role") == role]
                 for role in ("system", "user")}
        record = {"model": payload.get("model"), "system": "\n".join(texts["system"]),
                  "user": (texts["user"] or [""])[-1], "messages": messages,
                  "max_tokens": payload.get("max_tokens"),
                  "temperature": payload.get("temperature")}
        response = self._refusal(record["model"]) or self._complete(record)
        with self._lock:
            self.chat_requests.append({**record, "status": response.status_code})
        return response

    def _complete(self, record: dict[str, Any]) -> Response:
        answer = self.chat_answer(record["system"], record["user"], record["model"])
        finish_reason, limit = "stop", record["max_tokens"]
        if self.enforce_max_tokens and limit is not None and approx_tokens(answer) > limit:
            answer, finish_reason = answer[:limit * 4], "length"
        prompt_tokens = sum(approx_tokens(str(m.get("content") or ""))
                            for m in record["messages"] if isinstance(m, dict))
        return json_answer(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": record["model"],
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": answer,
                                     "refusal": None}}],
            "usage": {"prompt_tokens": prompt_tokens,
                      "completion_tokens": approx_tokens(answer),
                      "total_tokens": prompt_tokens + approx_tokens(answer)}})


# Google Drive's download --------------------------------------------------------------------------

class FakeDrive(FakeService):
    """Google Drive's download endpoint: ``GET /uc?id=<file_id>`` answers ``body`` with the
    headers Drive sends for a shared file (gdown then treats it as a plain download); any
    other id is a 404. Started at once; point DRIVE_BASE_URL at ``url``."""

    routes = {("GET", "/uc"): "download"}

    def __init__(self, body: bytes, file_id: str, filename: str):
        super().__init__()
        self.body, self.file_id, self.filename = body, file_id, filename
        self.start()

    def _error(self, status: int, message: str | None = None) -> Response:
        return Response(message or "Not Found", status, mimetype="text/plain")

    def _handle_download(self, request: Request) -> Response:
        if request.args.get("id") != self.file_id:
            return self._error(404)
        return Response(self.body, 200, mimetype="audio/mpeg", headers={
            "Content-Disposition": f'attachment; filename="{self.filename}"'})
