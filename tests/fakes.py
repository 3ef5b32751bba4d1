"""Real HTTP stand-ins for the outside services Ezra talks to.

Both fakes are genuine HTTP/1.1 servers on 127.0.0.1 (random free port, served
from a background thread), so the production clients (``requests`` for the
private Whisper service, the ``openai`` package for OpenAI-compatible APIs) run
unchanged against them.  Standard library only.

* :class:`FakeWhisperService` -- the private submit-then-poll transcription
  service (``POST /process`` multipart, ``POST /result`` JSON).
* :class:`FakeOpenAI` -- an OpenAI-compatible API (``/v1/audio/transcriptions``,
  ``/v1/chat/completions``, ``/v1/models``) as exposed by OpenAI, Groq,
  DeepSeek or speaches.

Shared plumbing lives in :class:`_FakeServer`: start/stop/context manager,
``reset()``, bearer-key checks, per-endpoint delays, one-shot fault injection
(``fail_next``, ``hang_next``, ``disconnect_next``), in-flight / peak
concurrency counters and a log of every request.

Typical use::

    with FakeOpenAI(api_key="sk-test") as fake:
        fake.fail_next("chat", status=429, times=2, retry_after=0)
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.chat_requests[0]["user"] == "..."
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import json
import math
import select
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FakeOpenAI",
    "FakeWhisperService",
    "Fault",
    "FormPart",
    "MultipartError",
    "MultipartForm",
    "Request",
    "Response",
    "parse_multipart",
]

MAX_OPENAI_UPLOAD_BYTES = 25 * 1024 * 1024


# --------------------------------------------------------------------------
# Requests, responses and multipart parsing
# --------------------------------------------------------------------------


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


@dataclass
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self, encoding: str = "utf-8") -> str:
        return self.data.decode(encoding, errors="replace")


@dataclass
class MultipartForm:
    """Parsed multipart/form-data: all parts, in order, with lookup helpers."""

    parts: list[FormPart] = field(default_factory=list)

    def get(self, name: str) -> FormPart | None:
        """The last part called ``name`` (file or plain field), or None."""
        for part in reversed(self.parts):
            if part.name == name:
                return part
        return None

    def getlist(self, name: str) -> list[FormPart]:
        return [part for part in self.parts if part.name == name]

    def value(self, name: str, default: str | None = None) -> str | None:
        """A plain field's text value (last one wins), or ``default``."""
        part = self.get(name)
        return default if part is None else part.text()

    def file(self, name: str) -> FormPart | None:
        """A part called ``name`` that carries a file name, or None."""
        part = self.get(name)
        return part if part is not None and part.is_file else None

    @property
    def fields(self) -> dict[str, str]:
        return {p.name: p.text() for p in self.parts if not p.is_file}

    @property
    def files(self) -> dict[str, FormPart]:
        return {p.name: p for p in self.parts if p.is_file}


def _parse_header_block(raw: bytes) -> email.message.Message:
    # Header bytes are decoded as UTF-8 (what browsers and httpx send for
    # non-ASCII file names), falling back to latin-1 byte-for-byte.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text + "\r\n\r\n")


def parse_multipart(body: bytes, content_type: str) -> MultipartForm:
    """Parse a multipart/form-data ``body`` given its Content-Type header value.

    Hand-written (the ``cgi`` module is deprecated): splits on the boundary,
    parses each part's headers with :mod:`email`, keeps part bodies as raw
    bytes (binary-safe).  Raises :class:`MultipartError` when malformed.
    """
    ctype = _parse_header_block(b"Content-Type: " + content_type.encode("latin-1", "replace"))
    if ctype.get_content_type() != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {content_type!r}")
    boundary = ctype.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise MultipartError("multipart boundary missing")
    delimiter = b"--" + boundary.encode("latin-1")

    form = MultipartForm()
    # The first delimiter may be preceded by a preamble.
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise MultipartError("multipart boundary not found in body")
        pos = start + 2 + len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            return form  # closing delimiter; anything after is epilogue
        # Transport padding, then CRLF.
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed multipart delimiter line")
        pos = eol + 2
        if body[pos : pos + 2] == b"\r\n":  # part without headers
            raw_headers, data_start = b"", pos + 2
        else:
            header_end = body.find(b"\r\n\r\n", pos)
            if header_end < 0:
                raise MultipartError("multipart part headers not terminated")
            raw_headers, data_start = body[pos:header_end], header_end + 4
        next_delim = body.find(b"\r\n" + delimiter, data_start)
        if next_delim < 0:
            raise MultipartError("multipart closing boundary missing")
        data = body[data_start:next_delim]
        pos = next_delim + 2 + len(delimiter)

        headers = _parse_header_block(raw_headers)
        disposition = headers.get("Content-Disposition")
        if disposition is None:
            raise MultipartError("multipart part without Content-Disposition")
        name = headers.get_param("name", header="content-disposition")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
        if not name:
            raise MultipartError("multipart part without a name")
        filename = headers.get_filename()
        form.parts.append(
            FormPart(
                name=name,
                data=data,
                filename=filename,
                content_type=headers.get("Content-Type"),
                headers={k: str(v) for k, v in headers.items()},
            )
        )


@dataclass
class Request:
    """An HTTP request as seen by a fake (body already fully read)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # http.client.HTTPMessage (case-insensitive .get)
    body: bytes
    client: tuple[str, int]
    chunked: bool = False
    _gone: Callable[[], bool] | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "") or ""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def json(self) -> Any:
        """The body decoded as JSON (raises ValueError when it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> MultipartForm:
        """The body parsed as multipart/form-data (raises MultipartError)."""
        return parse_multipart(self.body, self.content_type)

    def client_gone(self) -> bool:
        """True when the client has already closed its connection."""
        return bool(self._gone and self._gone())


@dataclass
class Response:
    """What a fake answers.  ``disconnect=True`` drops the connection instead."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> "Response":
        return cls(
            status,
            json.dumps(payload).encode("utf-8"),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def text(
        cls,
        status: int,
        text: str,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> "Response":
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type, **(headers or {})})


@dataclass
class Fault:
    """A planned one-shot response for the next request of ``endpoint``.

    kind: ``"error"`` (answer ``status`` with an error body), ``"hang"`` (wait
    ``seconds`` then serve normally -- or drop the request if the client left
    meanwhile) or ``"disconnect"`` (close the connection without answering).
    """

    endpoint: str
    kind: str = "error"
    status: int = 500
    seconds: float = 0.0
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Server plumbing
# --------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself; never wait on a hung handler
    request_queue_size = 128  # benches open many connections at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: "_FakeServer") -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS look-up that can
        # stall without a network; we know our name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai/httpx client expects
    server_version = "EzraFake/1.0"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid 40 ms delayed-ACK stalls
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; every request is in fake.request_log

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # -- body -------------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ValueError("connection closed mid-body")
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ValueError("connection closed mid-chunk")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size line {line!r}") from None
            if size == 0:
                # Trailer headers (ignored) up to an empty line.
                while True:
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(chunks)
            chunks.append(self._read_exact(size))
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise ValueError("chunk not followed by CRLF")

    def _read_body(self) -> tuple[bytes, bool]:
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            return self._read_chunked(), True
        length = self.headers.get("Content-Length")
        if length is None:
            return b"", False
        n = int(length)
        if n < 0:
            raise ValueError("negative Content-Length")
        return self._read_exact(n), False

    # -- dispatch ---------------------------------------------------------

    def _client_gone(self) -> bool:
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _dispatch(self) -> None:
        fake = self.server.fake
        try:
            body, chunked = self._read_body()
        except (ValueError, OSError) as exc:
            self.close_connection = True
            self._write(Response.json(400, {"error": f"unreadable request body: {exc}"}))
            return
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        request = Request(
            method=self.command,
            path=path,
            query=parse_qs(url.query),
            headers=self.headers,
            body=body,
            client=self.client_address[:2],
            chunked=chunked,
            _gone=self._client_gone,
        )
        response = fake._serve(request)
        if response is None or response.disconnect:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # client went away (e.g. timed out during a hang)
            self.close_connection = True


class _FakeServer:
    """Common plumbing of the fakes: a real threaded HTTP server on 127.0.0.1.

    Subclasses set ``endpoints`` and implement ``_route``, ``_error`` and
    ``_unauthorized``; everything else (lifecycle, auth, delays, faults,
    concurrency counters, request log) is here.

    Attributes (all safe to change while running):

    * ``api_key`` -- expected bearer key; ``None`` accepts any/no key.
    * ``delay`` -- seconds every answer takes: a number for all endpoints or a
      dict ``{endpoint: seconds}``.
    * ``max_concurrent`` -- optional cap on requests in flight (a number for
      every endpoint or a dict per endpoint); requests above it are answered
      429 at once.  ``None`` = no cap.
    * ``faults`` -- list of pending :class:`Fault`s (consumed first-in,
      first-out per endpoint); fill it with ``fail_next`` / ``hang_next`` /
      ``disconnect_next``.
    * ``request_log`` -- every request: dicts with endpoint, method, path,
      status (None when dropped), fault (kind or None), auth, client, chunked.
    * ``in_flight`` / ``peak_in_flight`` -- dicts endpoint -> current / peak
      number of requests being served at once.
    * ``errors`` -- exceptions raised inside the fake's own handlers (each also
      answered 500); should stay empty.
    """

    endpoints: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        api_key: str | None = None,
        delay: float | dict[str, float] = 0.0,
        max_concurrent: int | dict[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.delay = delay
        self.max_concurrent = max_concurrent
        self.host = host
        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.faults: list[Fault] = []
        self.request_log: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.in_flight: dict[str, int] = {e: 0 for e in self.endpoints}
        self.peak_in_flight: dict[str, int] = {e: 0 for e in self.endpoints}

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "_FakeServer":
        """Bind and serve in a daemon thread.  After a ``stop()`` the same
        port is bound again, so URLs handed out earlier stay valid."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any hung/delayed handler and drop open connections."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every record, pending fault and peak counter (configuration
        such as api_key, delay or callables is kept)."""
        with self._lock:
            self.faults.clear()
            self.request_log.clear()
            self.errors.clear()
            for endpoint in self.peak_in_flight:
                self.peak_in_flight[endpoint] = self.in_flight.get(endpoint, 0)
            self._reset_state()

    def _reset_state(self) -> None:
        """Subclass hook: clear the subclass's own records."""

    # -- fault injection --------------------------------------------------

    def _check_endpoint(self, endpoint: str) -> None:
        if endpoint != "*" and endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {self.endpoints} or '*'")

    def _add_faults(self, fault: Fault, times: int) -> None:
        self._check_endpoint(fault.endpoint)
        with self._lock:
            for _ in range(times):
                self.faults.append(Fault(**{**fault.__dict__, "headers": dict(fault.headers)}))

    def fail_next(
        self,
        endpoint: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
        code: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests of ``endpoint`` ("*" = any) with
        ``status`` and the fake's usual error body (or ``body``: a dict/list is
        sent as JSON, a str/bytes as text/plain).  ``retry_after`` (seconds)
        adds ``Retry-After`` and ``retry-after-ms`` headers."""
        self._add_faults(
            Fault(
                endpoint=endpoint,
                kind="error",
                status=status,
                retry_after=retry_after,
                message=message,
                code=code,
                body=body,
                headers=dict(headers or {}),
            ),
            times,
        )

    def hang_next(self, endpoint: str, seconds: float = 5.0, *, times: int = 1) -> None:
        """Make the next ``times`` requests of ``endpoint`` wait ``seconds``
        before being served (so a client timeout fires).  If the client has
        gone when the wait ends, the request is dropped and not recorded as
        served.  ``stop()`` ends the wait at once."""
        self._add_faults(Fault(endpoint=endpoint, kind="hang", seconds=seconds), times)

    def disconnect_next(self, endpoint: str, *, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests of ``endpoint``
        without answering (the client sees a connection error)."""
        self._add_faults(Fault(endpoint=endpoint, kind="disconnect"), times)

    def pending_faults(self, endpoint: str | None = None) -> int:
        with self._lock:
            return sum(1 for f in self.faults if endpoint is None or f.endpoint in (endpoint, "*"))

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.endpoint in (endpoint, "*"):
                    return self.faults.pop(i)
        return None

    # -- helpers for subclasses -------------------------------------------

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop().  True when the full time elapsed."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _limit_for(self, setting: Any, endpoint: str) -> Any:
        if isinstance(setting, dict):
            return setting.get(endpoint)
        return setting

    def attempts(self, endpoint: str | None = None) -> int:
        """How many requests (any outcome) reached ``endpoint`` (or any)."""
        with self._lock:
            return sum(1 for r in self.request_log if endpoint is None or r["endpoint"] == endpoint)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.authorization == f"Bearer {self.api_key}"

    def _fault_response(self, fault: Fault) -> Response:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers.setdefault("Retry-After", _format_number(fault.retry_after))
            headers.setdefault("retry-after-ms", str(int(round(fault.retry_after * 1000))))
        if fault.body is not None:
            if isinstance(fault.body, (dict, list)):
                response = Response.json(fault.status, fault.body)
            elif isinstance(fault.body, bytes):
                response = Response(fault.status, fault.body, {"Content-Type": "text/plain"})
            else:
                response = Response.text(fault.status, str(fault.body))
        else:
            response = self._error(fault.status, fault.message, fault.code)
        response.headers.update(headers)
        return response

    # -- to implement -----------------------------------------------------

    def _route(self, request: Request) -> tuple[str | None, Callable[[Request], Response] | None]:
        """(endpoint name, handler) for a request; (None, None) if unknown."""
        raise NotImplementedError

    def _error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        raise NotImplementedError

    def _unauthorized(self) -> Response:
        return self._error(401, "Unauthorized")

    def _not_found(self, request: Request) -> Response:
        return self._error(404, f"Not found: {request.method} {request.path}")

    # -- the request pipeline ---------------------------------------------

    def _serve(self, request: Request) -> Response | None:
        endpoint, handler = self._route(request)
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "method": request.method,
            "path": request.path,
            "status": None,
            "fault": None,
            "auth": request.authorization,
            "client": request.client,
            "chunked": request.chunked,
            "time": time.time(),
        }
        if endpoint is None or handler is None:
            response: Response | None = self._not_found(request)
            entry["status"] = response.status
            with self._lock:
                self.request_log.append(entry)
            return response

        with self._lock:
            self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1
            current = self.in_flight[endpoint]
            self.peak_in_flight[endpoint] = max(self.peak_in_flight.get(endpoint, 0), current)
        try:
            response = self._pipeline(request, endpoint, handler, entry, current)
        except Exception as exc:  # a bug in the fake itself: make it visible
            with self._lock:
                self.errors.append(exc)
            response = self._error(500, f"fake internal error: {exc!r}")
        finally:
            with self._lock:
                self.in_flight[endpoint] -= 1
        entry["status"] = None if response is None or response.disconnect else response.status
        with self._lock:
            self.request_log.append(entry)
        return response

    def _pipeline(
        self,
        request: Request,
        endpoint: str,
        handler: Callable[[Request], Response],
        entry: dict[str, Any],
        concurrent: int,
    ) -> Response | None:
        cap = self._limit_for(self.max_concurrent, endpoint)
        if cap is not None and concurrent > cap:
            entry["fault"] = "max_concurrent"
            return self._error(429, f"Too many concurrent requests (limit {cap})", "rate_limit_exceeded")
        delay = self._limit_for(self.delay, endpoint) or 0.0
        if not self._sleep(float(delay)):
            return None  # stopping
        if not self._authorized(request):
            return self._unauthorized()
        fault = self._take_fault(endpoint)
        if fault is not None:
            entry["fault"] = fault.kind
            if fault.kind == "disconnect":
                return None
            if fault.kind == "hang":
                if not self._sleep(fault.seconds) or request.client_gone():
                    return None
            else:
                return self._fault_response(fault)
        return handler(request)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# The private Whisper service
# --------------------------------------------------------------------------


def default_whisper_transcript(audio: bytes, transcription_id: str, prompt: str | None) -> str:
    return f"Transcript of {len(audio)} bytes of audio (sha256 {_sha256(audio)[:12]})."


class FakeWhisperService(_FakeServer):
    """The private submit-then-poll transcription service.

    Protocol:

    * ``POST /process`` -- ``Authorization: Bearer <key>``, multipart with the
      file field ``audio`` and form fields ``transcription_id`` and optional
      ``prompt``.  200 ``{"message": "Transcription started"}``; 400
      ``{"error": ...}`` when a field is missing; 401 ``{"error":
      "Unauthorized"}`` on a wrong key.
    * ``POST /result`` -- same header, JSON ``{"transcription_id": ...}``.
      404 ``{"detail": "Transcription file not found"}`` when unknown or for
      the first ``polls_before_ready`` polls after submit; then 200 JSON
      ``{"message": "still processing"}`` for ``processing_polls`` polls (or
      for ever with ``never_finish``); then 200 ``text/plain`` = transcript
      (again on every later poll).

    Constructor keywords / attributes (changeable any time):

    * ``api_key`` (default ``"whisper-test-key"``; None = no check)
    * ``polls_before_ready`` (int, default 0), ``processing_polls`` (int,
      default 0), ``never_finish`` (bool)
    * ``transcript_for(audio_bytes, transcription_id, prompt) -> str``
      (default: mentions the byte count and a 12-hex sha256 prefix)
    * ``submit_status`` (None or int: every submit answers that status with
      ``{"error": ...}`` and creates no job, e.g. 400 or 500)
    * ``result_failure`` (None or int: every poll answers that status)
    * ``delay`` (seconds before each answer; number or per-endpoint dict)

    Records (thread-safe lists, cleared by ``reset()``):

    * ``submits`` -- one dict per ``/process`` call that passed auth:
      transcription_id, prompt, filename, content_type, size, sha256, auth,
      status.
    * ``polls`` -- transcription_ids of every ``/result`` call that passed
      auth, in order.
    * ``jobs`` -- transcription_id -> job state (audio sha256, prompt, text,
      polls).

    Endpoints for ``fail_next`` & co.: ``"process"`` and ``"result"``.
    """

    endpoints = ("process", "result")
    NOT_FOUND_DETAIL = "Transcription file not found"
    STILL_PROCESSING = "still processing"

    def __init__(
        self,
        *,
        api_key: str | None = "whisper-test-key",
        polls_before_ready: int = 0,
        processing_polls: int = 0,
        transcript_for: Callable[[bytes, str, str | None], str] | None = None,
        submit_status: int | None = None,
        never_finish: bool = False,
        result_failure: int | None = None,
        delay: float | dict[str, float] = 0.0,
        max_concurrent: int | dict[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(api_key=api_key, delay=delay, max_concurrent=max_concurrent, host=host, port=port)
        self.polls_before_ready = polls_before_ready
        self.processing_polls = processing_polls
        self.transcript_for = transcript_for or default_whisper_transcript
        self.submit_status = submit_status
        self.never_finish = never_finish
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

    def _reset_state(self) -> None:
        self.submits.clear()
        self.polls.clear()
        self.jobs.clear()

    def _route(self, request: Request):
        routes = {"/process": ("process", self._handle_process), "/result": ("result", self._handle_result)}
        if request.path in routes:
            return routes[request.path] if request.method == "POST" else (None, None)
        return None, None

    def _not_found(self, request: Request) -> Response:
        if request.path in ("/process", "/result"):
            return Response.json(405, {"detail": "Method Not Allowed"})
        return Response.json(404, {"detail": "Not Found"})

    def _error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        default = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 429: "Too many requests"}
        return Response.json(status, {"error": message or default.get(status, "Internal Server Error")})

    def _handle_process(self, request: Request) -> Response:
        record: dict[str, Any] = {
            "transcription_id": None,
            "prompt": None,
            "filename": None,
            "content_type": None,
            "size": None,
            "sha256": None,
            "auth": request.authorization,
            "status": None,
        }

        def done(response: Response) -> Response:
            record["status"] = response.status
            with self._lock:
                self.submits.append(record)
            return response

        try:
            form = request.form()
        except MultipartError as exc:
            return done(self._error(400, f"Invalid multipart body: {exc}"))
        audio = form.get("audio")
        tid = form.value("transcription_id")
        record["transcription_id"] = tid
        record["prompt"] = form.value("prompt")
        if audio is not None:
            record.update(
                filename=audio.filename,
                content_type=audio.content_type,
                size=len(audio.data),
                sha256=_sha256(audio.data),
            )
        if audio is None or not audio.is_file:
            return done(self._error(400, "No audio file provided"))
        if not tid:
            return done(self._error(400, "No transcription_id provided"))
        if self.submit_status is not None:
            return done(self._error(self.submit_status))
        text = self.transcript_for(audio.data, tid, record["prompt"])
        with self._lock:
            self.jobs[tid] = {
                "sha256": record["sha256"],
                "size": record["size"],
                "prompt": record["prompt"],
                "text": text,
                "polls": 0,
                "submitted_at": time.time(),
            }
        return done(Response.json(200, {"message": "Transcription started"}))

    def _handle_result(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return self._error(400, "Invalid JSON body")
        tid = payload.get("transcription_id") if isinstance(payload, dict) else None
        if not tid:
            return self._error(400, "No transcription_id provided")
        tid = str(tid)
        with self._lock:
            self.polls.append(tid)
            job = self.jobs.get(tid)
            if job is not None:
                job["polls"] += 1
                n = job["polls"]
        if self.result_failure is not None:
            return self._error(self.result_failure)
        if job is None or n <= self.polls_before_ready:
            return Response.json(404, {"detail": self.NOT_FOUND_DETAIL})
        if self.never_finish or n <= self.polls_before_ready + self.processing_polls:
            return Response.json(200, {"message": self.STILL_PROCESSING})
        return Response.text(200, job["text"])


# --------------------------------------------------------------------------
# The OpenAI-compatible API
# --------------------------------------------------------------------------


def default_openai_transcript(audio: bytes, model: str, prompt: str | None) -> str:
    return f"Transcript of {len(audio)} bytes of audio (sha256 {_sha256(audio)[:12]})."


def default_chat_answer(system: str, user: str, model: str) -> str:
    return f"PROOFREAD[{user}]"


def _message_text(content: Any) -> str:
    """Text of a chat message content: a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return str(content)


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class FakeOpenAI(_FakeServer):
    """An OpenAI-compatible API server (OpenAI, Groq, DeepSeek, speaches).

    Routes: ``POST /v1/audio/transcriptions`` (endpoint ``"transcriptions"``),
    ``POST /v1/chat/completions`` (``"chat"``), ``GET /v1/models`` and
    ``GET /v1/models/{id}`` (``"models"``).  Errors use the OpenAI shape
    ``{"error": {"message", "type", "param", "code"}}``.

    Constructor keywords / attributes (changeable any time):

    * ``api_key`` (default ``"sk-test"``; None = no check) -> 401
      ``invalid_api_key`` on mismatch.
    * ``transcript_for(audio_bytes, model, prompt) -> str`` (default mentions
      byte count and a 12-hex sha256 prefix).
    * ``chat_answer(system, user, model) -> str`` (default
      ``"PROOFREAD[" + user + "]"``; ``system`` = all system/developer
      messages joined by newlines, ``user`` = the last user message).
    * ``known_models`` -- None accepts any model id; a set of ids makes others
      answer 404 ``model_not_found``; also what ``/v1/models`` lists.
    * ``max_upload_bytes`` (default 25 MiB) -> 413 ``request_too_large``.
    * ``enforce_max_tokens`` (default False): cut answers longer than
      ``max_tokens`` (~4 chars/token) and report ``finish_reason="length"``.
    * ``delay`` (number or ``{"chat": 1.0, ...}``), ``max_concurrent``.

    Response formats for transcriptions: ``json`` (default) ->
    ``{"text": ...}``; ``text`` -> plain text plus a trailing newline (as
    OpenAI does); ``verbose_json`` -> task, language, duration, text, one
    segment; ``srt``/``vtt`` -> one cue.

    Records (thread-safe lists, cleared by ``reset()``), for requests that
    passed auth and were not consumed by a fault:

    * ``transcription_requests`` -- model, prompt, filename, content_type,
      size, sha256, language, response_format, temperature, status.
    * ``chat_requests`` -- model, system, user, messages, max_tokens,
      temperature, stream, status.
    """

    endpoints = ("transcriptions", "chat", "models")
    RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        transcript_for: Callable[[bytes, str, str | None], str] | None = None,
        chat_answer: Callable[[str, str, str], str] | None = None,
        known_models: Iterable[str] | None = None,
        max_upload_bytes: int = MAX_OPENAI_UPLOAD_BYTES,
        enforce_max_tokens: bool = False,
        delay: float | dict[str, float] = 0.0,
        max_concurrent: int | dict[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(api_key=api_key, delay=delay, max_concurrent=max_concurrent, host=host, port=port)
        self.transcript_for = transcript_for or default_openai_transcript
        self.chat_answer = chat_answer or default_chat_answer
        self.known_models: set[str] | None = set(known_models) if known_models is not None else None
        self.max_upload_bytes = max_upload_bytes
        self.enforce_max_tokens = enforce_max_tokens
        self.transcription_requests: list[dict[str, Any]] = []
        self.chat_requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` -- pass as ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    def _reset_state(self) -> None:
        self.transcription_requests.clear()
        self.chat_requests.clear()

    # -- errors -----------------------------------------------------------

    @staticmethod
    def error_payload(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def _error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        if status == 401:
            type_, msg, default_code = (
                "invalid_request_error",
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_api_key",
            )
        elif status == 429:
            type_, msg, default_code = (
                "requests",
                "Rate limit reached for requests. Please try again later.",
                "rate_limit_exceeded",
            )
        elif status >= 500:
            type_, msg, default_code = (
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
                None,
            )
        else:
            type_, msg, default_code = "invalid_request_error", "Invalid request.", None
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        return Response.json(status, self.error_payload(message or msg, type_, code or default_code), headers)

    def _not_found(self, request: Request) -> Response:
        return self._error(404, f"Invalid URL ({request.method} {request.path})")

    def _model_error(self, model: str) -> Response | None:
        if self.known_models is not None and model not in self.known_models:
            return Response.json(
                404,
                self.error_payload(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        return None

    def _ok(self, payload: Any) -> Response:
        return Response.json(
            200,
            payload,
            {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-processing-ms": "1"},
        )

    # -- routing ----------------------------------------------------------

    def _route(self, request: Request):
        path, method = request.path, request.method
        if path == "/v1/audio/transcriptions":
            return ("transcriptions", self._handle_transcription) if method == "POST" else (None, None)
        if path == "/v1/chat/completions":
            return ("chat", self._handle_chat) if method == "POST" else (None, None)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            return ("models", self._handle_models) if method == "GET" else (None, None)
        return None, None

    # -- /v1/models -------------------------------------------------------

    def listed_models(self) -> list[str]:
        if self.known_models is not None:
            return sorted(self.known_models)
        return ["whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-mini"]

    def _handle_models(self, request: Request) -> Response:
        def model(mid: str) -> dict:
            return {"id": mid, "object": "model", "created": 1700000000, "owned_by": "ezra-fake"}

        if request.path == "/v1/models":
            return self._ok({"object": "list", "data": [model(m) for m in self.listed_models()]})
        mid = request.path[len("/v1/models/") :]
        if mid not in self.listed_models() and self.known_models is not None:
            return self._model_error(mid) or self._error(404)
        return self._ok(model(mid))

    # -- /v1/audio/transcriptions -----------------------------------------

    def _handle_transcription(self, request: Request) -> Response:
        try:
            form = request.form()
        except MultipartError as exc:
            return self._error(400, f"Could not parse multipart form: {exc}")
        upload = form.get("file")
        model = form.value("model")
        prompt = form.value("prompt")
        language = form.value("language")
        response_format = form.value("response_format") or "json"
        temperature = form.value("temperature")
        record: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "filename": upload.filename if upload else None,
            "content_type": upload.content_type if upload else None,
            "size": len(upload.data) if upload else None,
            "sha256": _sha256(upload.data) if upload else None,
            "language": language,
            "response_format": response_format,
            "temperature": float(temperature) if temperature else None,
            "fields": form.fields,
            "status": None,
        }
        response = self._transcribe(upload, model, prompt, language, response_format)
        record["status"] = response.status
        with self._lock:
            self.transcription_requests.append(record)
        return response

    def _transcribe(
        self,
        upload: FormPart | None,
        model: str | None,
        prompt: str | None,
        language: str | None,
        response_format: str,
    ) -> Response:
        if upload is None or not upload.is_file:
            return Response.json(
                400, self.error_payload("Missing required parameter: 'file'.", "invalid_request_error", None, "file")
            )
        if not model:
            return Response.json(
                400, self.error_payload("Missing required parameter: 'model'.", "invalid_request_error", None, "model")
            )
        if response_format not in self.RESPONSE_FORMATS:
            return Response.json(
                400,
                self.error_payload(
                    f"Invalid value for 'response_format': '{response_format}'.",
                    "invalid_request_error",
                    None,
                    "response_format",
                ),
            )
        size = len(upload.data)
        if size > self.max_upload_bytes:
            return Response.json(
                413,
                self.error_payload(
                    f"Maximum content size limit ({self.max_upload_bytes}) exceeded ({size} bytes read)",
                    "invalid_request_error",
                    "request_too_large",
                ),
            )
        not_found = self._model_error(model)
        if not_found is not None:
            return not_found
        text = self.transcript_for(upload.data, model, prompt)
        duration = round(max(size / 16000.0, 0.1), 2)
        if response_format == "json":
            return self._ok({"text": text, "usage": {"type": "duration", "seconds": math.ceil(duration)}})
        if response_format == "text":
            return Response.text(200, text + "\n")
        if response_format == "verbose_json":
            return self._ok(
                {
                    "task": "transcribe",
                    "language": language or "english",
                    "duration": duration,
                    "text": text,
                    "segments": [
                        {
                            "id": 0,
                            "seek": 0,
                            "start": 0.0,
                            "end": duration,
                            "text": " " + text,
                            "tokens": [],
                            "temperature": 0.0,
                            "avg_logprob": -0.2,
                            "compression_ratio": 1.2,
                            "no_speech_prob": 0.01,
                        }
                    ],
                    "usage": {"type": "duration", "seconds": math.ceil(duration)},
                }
            )
        end = _timestamp(duration, "," if response_format == "srt" else ".")
        if response_format == "srt":
            return Response.text(200, f"1\n00:00:00,000 --> {end}\n{text}\n\n")
        return Response.text(200, f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n", "text/vtt; charset=utf-8")

    # -- /v1/chat/completions ---------------------------------------------

    def _handle_chat(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        if not isinstance(payload, dict):
            return self._error(400, "The request body must be a JSON object.")
        model = payload.get("model")
        messages = payload.get("messages")
        max_tokens = payload.get("max_tokens", payload.get("max_completion_tokens"))
        system = "\n".join(
            _message_text(m.get("content"))
            for m in messages or []
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        )
        users = [_message_text(m.get("content")) for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
        user = users[-1] if users else ""
        record: dict[str, Any] = {
            "model": model,
            "system": system,
            "user": user,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": payload.get("temperature"),
            "stream": payload.get("stream", False),
            "status": None,
        }
        response = self._complete(payload, model, messages, system, user, max_tokens)
        record["status"] = response.status
        with self._lock:
            self.chat_requests.append(record)
        return response

    def _complete(
        self, payload: dict, model: Any, messages: Any, system: str, user: str, max_tokens: Any
    ) -> Response:
        if not model or not isinstance(model, str):
            return Response.json(
                400, self.error_payload("you must provide a model parameter", "invalid_request_error", None, "model")
            )
        if not isinstance(messages, list) or not messages:
            return Response.json(
                400,
                self.error_payload(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                    "invalid_request_error",
                    "empty_array",
                    "messages",
                ),
            )
        if payload.get("stream"):
            return Response.json(
                400,
                self.error_payload(
                    "stream=true is not supported by this fake server", "invalid_request_error", None, "stream"
                ),
            )
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return Response.json(
                400,
                self.error_payload(
                    f"Invalid 'max_tokens': {max_tokens!r}.", "invalid_request_error", "invalid_value", "max_tokens"
                ),
            )
        not_found = self._model_error(model)
        if not_found is not None:
            return not_found
        answer = self.chat_answer(system, user, model)
        finish_reason = "stop"
        if self.enforce_max_tokens and max_tokens is not None and _approx_tokens(answer) > max_tokens:
            answer = answer[: max_tokens * 4]
            finish_reason = "length"
        prompt_tokens = sum(_approx_tokens(_message_text(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = _approx_tokens(answer)
        return self._ok(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_ezra_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class FakeDrive:
    """Google Drive's download endpoint on 127.0.0.1: `/uc?id=<file_id>` answers `body` with the
    headers Drive sends for a shared file (gdown then treats it as a plain download); any other
    id is a 404. Point DRIVE_BASE_URL at `url`."""

    def __init__(self, body: bytes, file_id: str, filename: str):
        from threading import Thread
        from urllib.parse import parse_qs, urlsplit

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if parse_qs(urlsplit(self.path).query).get("id", [""])[0] != file_id:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
               daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
