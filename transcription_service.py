"""Transcription engines behind one interface, chosen by TRANSCRIBE_ENGINE.

- `remote`: the deployments' private Whisper service (submit, then poll);
- `openai`: any OpenAI-compatible `/v1/audio/transcriptions` (OpenAI, Groq, speaches,
  whisper.cpp server), the audio split at silences into chunks sent concurrently;
- `local`: faster-whisper in this process with the bundled Whisper base model (the embedded
  default when neither of the others is configured; see local_whisper.py).

Engines take a `ChunkStore` so that finished pieces survive a crash: a resumed job asks
the store what is done and sends only the rest. Engines that give timestamps (local, and
openai where the provider answers `verbose_json`) return timed segments with the text.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import requests

import local_whisper
from audio_service import compact_extension, cut_segment, detect_silences, plan_chunks, require_audio
# Cancelled and ChunkStore belong to the engines' interface: importable from here too.
from chunk_runner import Cancelled, ChunkStore, run_pending  # noqa: F401
from chunk_runner import check_stop as _check_stop
from errors import ServiceError
from metrics import outside_call

log = logging.getLogger("ezra.transcription")

REMOTE_SUBMITTED = -1  # ChunkStore index marking "the remote service has the audio"
REMOTE_RESUBMITTED = -2  # ... and "it lost the job once and was sent the audio again"
MAX_PROMPT_CHARS = 2000
MIN_CHUNK_SECONDS = 0.3  # Whisper reads only the last ~224 tokens of a prompt anyway
# Pauses this long count as places to cut: a speaker's pause between sentences can be well
# under half a second (0.37-0.39 s in bench/data/en-5min.opus, where a 0.5 s minimum found none
# and every chunk was cut mid-word at its limit). plan_chunks takes the longest one it can.
CUT_MIN_SILENCE = 0.2
# How quiet a pause is, tried in turn until every chunk ends in one: a recording with hum or
# a hall's noise has no pause at -35 dB (the 5-minute fixture under pink noise: none at -35,
# 107 at -30, 129 at -25 dB; WER 26% cut at the limits, 19% cut in the pauses).
CUT_NOISE_LEVELS_DB = (-35.0, -30.0, -25.0)


class TranscriptionError(ServiceError):
    """The engine failed; str() is for the user, `detail` (upstream text) for the log."""


@dataclass
class EngineJob:
    job_id: str
    audio: Path  # compact 16 kHz mono audio
    work_dir: Path  # scratch space for chunk files
    prompt: str | None
    store: ChunkStore
    language: str | None = None  # ISO code; None = the engine detects it


Segment = tuple[float, float, str]  # start and end (seconds into the audio), text


@dataclass
class Transcript:
    text: str
    segments: list[Segment] | None  # None: the engine gives no timestamps


class Engine(Protocol):
    name: str

    def transcribe(self, job: EngineJob) -> Transcript: ...


NO_SPEECH = "No speech was found in the audio"


def chunk_result(text: str, segments: list[Segment] | None,
                 detected_language: str | None = None) -> str:
    """What one finished chunk stores in job_chunks: its text and timed segments, and the
    language the engine detected when the job named none (so a resumed job keeps it)."""
    value: dict[str, Any] = {"text": text, "segments": None if segments is None else
                             [[round(s, 3), round(e, 3), t] for s, e, t in segments]}
    if detected_language:
        value["detected_language"] = detected_language
    return json.dumps(value, ensure_ascii=False)


def detected_language(stored: str) -> str | None:
    """The language a stored chunk was transcribed in after detection, if it says."""
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    return value.get("detected_language") if isinstance(value, dict) else None


def parse_chunk(stored: str) -> tuple[str, list[Segment] | None]:
    """A stored chunk; chunks saved before segments were kept are plain text."""
    try:
        value = json.loads(stored)
    except ValueError:
        return stored, None
    if not isinstance(value, dict) or "text" not in value:
        return stored, None
    segments = value.get("segments")
    return value["text"], None if segments is None else [tuple(s) for s in segments]


def join_chunks(stored: list[str]) -> Transcript:
    """The transcript of chunks in order; segments only when every chunk has them.
    No words at all is an error, never an empty document."""
    parsed = [parse_chunk(chunk) for chunk in stored]
    text = "\n\n".join(t for t, _ in parsed if t)
    if not text.strip():
        raise TranscriptionError(NO_SPEECH, "the engine returned no words")
    if any(segments is None for _, segments in parsed):
        return Transcript(text, None)
    return Transcript(text, [segment for _, segments in parsed for segment in segments])


class _Forgotten(Exception):
    """The service answers 404 far longer than this audio could take: it lost the job."""


class RemoteWhisperEngine:
    """Submit the audio once, then poll with backoff until the text arrives.

    The service keeps no durable queue: after a restart it answers 404 for a job it had
    accepted, exactly as it does while a job is not ready. A job that gets only 404s for
    longer than its audio could take (`forgotten_factor` × its length + `forgotten_margin`)
    is resubmitted once, recorded, with a fresh deadline; lost again, it fails at once.
    """

    name = "remote"

    def __init__(self, submit_url: str, result_url: str, api_key: str | None,
                 timeout_seconds: float, poll_max_seconds: float, poll_first_seconds: float = 1.0,
                 forgotten_factor: float = 1.0, forgotten_margin_seconds: float = 600.0):
        self.submit_url = submit_url
        self.result_url = result_url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_seconds = timeout_seconds
        self.poll_max_seconds = poll_max_seconds
        self.poll_first_seconds = min(poll_first_seconds, poll_max_seconds)
        self.forgotten_factor = forgotten_factor
        self.forgotten_margin_seconds = forgotten_margin_seconds

    def transcribe(self, job: EngineJob) -> Transcript:
        return Transcript(self._text(job), None)  # the service gives no timestamps

    def _text(self, job: EngineJob) -> str:
        done = job.store.done()
        if 0 in done:
            return done[0]
        if REMOTE_SUBMITTED in done:
            submitted_at = datetime.fromisoformat(done[REMOTE_SUBMITTED])
        else:
            submitted_at = self._submit_recorded(job)
        job.store.progress(0, 1)
        while True:
            try:
                text = self._poll(job, submitted_at)
                break
            except _Forgotten as exc:
                if REMOTE_RESUBMITTED in job.store.done():
                    raise TranscriptionError(
                        "The transcription service lost this job twice (it may have "
                        "restarted); please retry later", str(exc)) from None
                log.warning("job=%s event=remote_forgotten resubmitting (%s)", job.job_id, exc)
                job.store.save(REMOTE_RESUBMITTED, datetime.now(timezone.utc).isoformat())
                submitted_at = self._submit_recorded(job)
        job.store.save(0, text)
        job.store.progress(1, 1)
        return text

    def _submit_recorded(self, job: EngineJob) -> datetime:
        """Submit and record when: the deadline and the 404 allowance count from here. A
        process killed between the two may submit once more when the job resumes."""
        self._submit(job)
        submitted_at = datetime.now(timezone.utc)
        job.store.save(REMOTE_SUBMITTED, submitted_at.isoformat())
        return submitted_at

    def _submit(self, job: EngineJob) -> None:
        data = {"transcription_id": job.job_id}
        if job.prompt:
            data["prompt"] = job.prompt[:MAX_PROMPT_CHARS]
        try:
            with open(job.audio, "rb") as fh, outside_call("transcribe_remote"):
                response = requests.post(  # requests streams the file object
                    self.submit_url, headers=self.headers, data=data,
                    files={"audio": (f"{job.job_id}{job.audio.suffix}", fh, "audio/ogg")},
                    timeout=(10, 600))
        except requests.RequestException as exc:
            raise TranscriptionError("The transcription service could not be reached",
                                     f"submit failed: {exc}") from exc
        if response.status_code != 200:
            raise TranscriptionError("The transcription service refused the audio",
                                     f"submit answered {response.status_code}: "
                                     f"{response.text[:500]}")

    def _forget_after(self, job: EngineJob) -> float:
        """Seconds of nothing but 404s after which the service has lost the job."""
        return require_audio(job.audio) * self.forgotten_factor + self.forgotten_margin_seconds

    def _poll(self, job: EngineJob, submitted_at: datetime) -> str:
        deadline = submitted_at.timestamp() + self.timeout_seconds
        last_sign_of_work = submitted_at.timestamp()  # the last "still working" answer
        forget_after = None  # measured (FFmpeg) only once 404s outlast the margin
        delay = self.poll_first_seconds
        transient_failures = 0
        while True:
            _check_stop(job.store)
            if time.time() > deadline:
                raise TranscriptionError(
                    f"The transcription service did not finish within "
                    f"{int(self.timeout_seconds // 60)} minutes",
                    f"no result {self.timeout_seconds:.0f}s after submit")
            try:
                with outside_call("transcribe_remote"):
                    response = requests.post(self.result_url, headers=self.headers,
                                             json={"transcription_id": job.job_id},
                                             timeout=(10, 120))
            except requests.RequestException as exc:
                response, error = None, str(exc)
            if response is not None:
                text = _remote_result(response)
                if text is not None:
                    return text
                if response.status_code in (200, 404):
                    transient_failures = 0
                    silent = time.time() - last_sign_of_work
                    if response.status_code == 200:
                        last_sign_of_work = time.time()
                    elif silent > self.forgotten_margin_seconds:
                        forget_after = forget_after or self._forget_after(job)
                        if silent > forget_after:
                            raise _Forgotten(f"only 404 for {silent:.0f}s")
                else:
                    error = f"result answered {response.status_code}: {response.text[:500]}"
                    if response.status_code < 500:
                        raise TranscriptionError("The transcription service failed", error)
            if response is None or response.status_code >= 500:
                transient_failures += 1
                if transient_failures >= 5:
                    raise TranscriptionError("The transcription service failed", error)
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max_seconds)


def _remote_result(response: requests.Response) -> str | None:
    """The transcript when the answer carries it; None while the service is working."""
    if response.status_code != 200:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return response.content.decode("utf-8", errors="replace").strip()
    if isinstance(body, dict) and "message" in body:
        return None
    raise TranscriptionError("The transcription service answered something unexpected",
                             f"result body: {response.text[:500]}")


class OpenAIEngine:
    """Chunks at silences (each under 20 minutes and 25 MB), sent concurrently with a bound."""

    name = "openai"

    def __init__(self, base_url: str | None, api_key: str | None, model: str,
                 chunk_seconds: int, concurrency: int, timeout_seconds: float = 600,
                 max_retries: int = 3):
        from openai import OpenAI
        self.client = OpenAI(base_url=base_url, api_key=api_key or "not-needed",
                             timeout=timeout_seconds, max_retries=max_retries)
        self.model = model
        # 20 minutes of 16 kHz mono compact audio is ~5 MB, well under the 25 MB limit.
        self.chunk_seconds = min(chunk_seconds, 1200)
        self.concurrency = concurrency
        self.verbose = True  # ask for timestamps until the provider refuses them

    def transcribe(self, job: EngineJob) -> Transcript:
        duration = require_audio(job.audio)
        plan = plan_cuts(job.audio, duration, self.chunk_seconds)

        def send(index: int) -> str:
            start, end = plan[index]
            if end - start < MIN_CHUNK_SECONDS:
                return chunk_result("", [])  # a sliver left at the end: APIs reject it
            piece = job.work_dir / f"chunk-{index:04d}{compact_extension()}"
            cut_segment(job.audio, piece, start, end)
            extra: dict[str, Any] = {}
            if job.prompt:
                extra["prompt"] = job.prompt[:MAX_PROMPT_CHARS]
            if job.language:
                extra["language"] = job.language
            try:
                answer = self._request(piece, extra)
            finally:
                piece.unlink(missing_ok=True)
            return chunk_result(getattr(answer, "text", str(answer)).strip(),
                                _openai_segments(answer, start))

        return join_chunks(run_pending(len(plan), send, job.store, self.concurrency,
                                       "transcribe"))

    def _request(self, piece: Path, extra: dict[str, Any]):
        """Ask for `verbose_json` (timestamps); a provider that refuses that format is asked
        again for plain JSON, and remembered for the rest of this engine's life."""
        from openai import BadRequestError
        try:
            with outside_call("transcribe_openai"):
                return self._create(piece, extra, BadRequestError)
        except Exception as exc:  # openai.APIError and network errors alike
            raise TranscriptionError("The transcription service failed",
                                     f"{piece.name}: {exc}") from exc

    def _create(self, piece: Path, extra: dict[str, Any], bad_request: type[Exception]):
        if self.verbose:
            try:
                with open(piece, "rb") as fh:
                    return self.client.audio.transcriptions.create(
                        model=self.model, file=(piece.name, fh),
                        response_format="verbose_json", **extra)
            except bad_request as exc:
                if "response_format" not in str(exc) and "verbose_json" not in str(exc):
                    raise
                log.info("the transcription provider refuses verbose_json: %s", exc)
                self.verbose = False
        with open(piece, "rb") as fh:
            return self.client.audio.transcriptions.create(
                model=self.model, file=(piece.name, fh), **extra)


def _openai_segments(answer: Any, offset: float) -> list[Segment] | None:
    """Timed segments of a verbose_json answer, shifted to the whole audio; None without."""
    segments = getattr(answer, "segments", None)
    if not segments:  # a text without segments has no timestamps; silence has neither
        return None if segments is None or getattr(answer, "text", "").strip() else []
    timed = []
    for segment in segments:
        get = segment.get if isinstance(segment, dict) else (
            lambda key, s=segment: getattr(s, key, None))
        text = (get("text") or "").strip()
        start, end = get("start"), get("end")
        if text and isinstance(start, (int, float)) and isinstance(end, (int, float)):
            timed.append((offset + float(start), offset + float(end), text))
    return timed


def plan_cuts(audio: Path, duration: float, chunk_seconds: float) -> list[tuple[float, float]]:
    """`chunk_plan` over the audio's pauses at the first of CUT_NOISE_LEVELS_DB where every
    chunk but the last ends in a pause (else the loudest level's plan)."""
    for noise_db in CUT_NOISE_LEVELS_DB:
        silences = detect_silences(audio, CUT_MIN_SILENCE, noise_db)
        plan = chunk_plan(duration, silences, chunk_seconds)
        if all(any(start <= end <= stop for start, stop in silences) for _, end in plan[:-1]):
            break
    return plan


def chunk_plan(duration: float, silences: list[tuple[float, float]],
               chunk_seconds: float) -> list[tuple[float, float]]:
    """Chunks cut at silences, none longer than `chunk_seconds`, and no sliver at the end:
    planning leaves room to fold a last piece of a few seconds into the chunk before it
    (a separate request for it costs a round trip, and Whisper invents text on silence)."""
    tail = min(5.0, chunk_seconds / 10)
    plan = plan_chunks(duration, silences, chunk_seconds - tail)
    if len(plan) > 1 and plan[-1][1] - plan[-1][0] <= tail:
        plan[-2:] = [(plan[-2][0], plan[-1][1])]
    return plan


class LocalWhisperEngine:
    """faster-whisper in this process: the model is loaded on the first job and shared.

    The audio is cut at silences into chunks of at most LOCAL_CHUNK_SECONDS (a minute),
    `parallel` of them transcribed at once (the model's CTranslate2 workers, one core
    each); each finished chunk's segments are stored at once, so a killed job resumes at its
    finished chunks. Progress counts audio seconds."""

    name = "local"

    def __init__(self, choice: local_whisper.ModelChoice, chunk_seconds: int, vad: bool,
                 batch_size: int = 0, beam_size: int = local_whisper.BEAM_SIZE,
                 best_of: int = local_whisper.BEST_OF, parallel: int = 1):
        self.choice = choice
        self.beam_size = beam_size
        self.best_of = best_of
        self.chunk_seconds = chunk_seconds
        self.vad = vad
        self.batch_size = batch_size
        self.parallel = max(1, parallel)

    def transcribe(self, job: EngineJob) -> Transcript:
        try:
            model = local_whisper.load_model(self.choice)
        except local_whisper.ModelError as exc:
            raise TranscriptionError(str(exc)) from exc
        duration = require_audio(job.audio)
        plan = plan_cuts(job.audio, duration, self.chunk_seconds)
        sizes = [end - start for start, end in plan]
        done = dict(job.store.done())
        # Detecting the language costs Whisper an extra pass over 30 s of audio; without a
        # language it would do so on every chunk (and could pick a different one for each).
        # The first chunk with words decides for the rest, and a resumed job keeps its choice.
        language = job.language or next(
            (found for found in map(detected_language, done.values()) if found), None)

        def transcribe_chunk(index: int) -> tuple[str, str | None]:
            """One chunk's stored form, and the language Whisper used for it."""
            start, end = plan[index]
            whole = len(plan) == 1
            piece = job.audio if whole else job.work_dir / f"chunk-{index:04d}{job.audio.suffix}"
            try:
                if not whole:
                    cut_segment(job.audio, piece, start, end)
                segments, used_language = local_whisper.transcribe_file(
                    model, piece, language=language, prompt=job.prompt, vad=self.vad,
                    offset=start, batch_size=self.batch_size, duration=end - start,
                    beam_size=self.beam_size, best_of=self.best_of,
                    on_segment=lambda _end: _check_stop(job.store))
            except (Cancelled, TranscriptionError):
                raise
            except Exception as exc:  # a decoding failure inside faster-whisper or PyAV
                raise TranscriptionError("The local transcription engine failed",
                                         f"chunk {index}: {exc!r}") from exc
            finally:
                if not whole:
                    piece.unlink(missing_ok=True)
            detected = used_language if job.language is None and segments else None
            return chunk_result(" ".join(t for _, _, t in segments), segments,
                                detected or (language if job.language is None else None)), \
                detected

        # One chunk at a time until a chunk with words has told the language; the rest
        # `parallel` at a time.
        pending = [i for i in range(len(plan)) if i not in done]
        while pending and language is None:
            index = pending.pop(0)
            job.store.progress(int(sum(sizes[i] for i in done)), max(1, int(round(duration))))
            stored, found = transcribe_chunk(index)
            language = language or found
            job.store.save(index, stored)
            done[index] = stored
            _check_stop(job.store)
        results = run_pending(len(plan), lambda index: transcribe_chunk(index)[0], job.store,
                              self.parallel, "whisper", sizes=sizes)
        return join_chunks(results)


def engine_from_config(config: dict[str, Any]) -> Engine:
    name = config["TRANSCRIBE_ENGINE"]  # config.py resolved an unset one
    if name == "remote":
        if not (config["TRANSCRIBE_API_URL"] and config["GET_RESULT_TRANSCRIBE_API_URL"]):
            raise TranscriptionError("Transcription is not configured on this server",
                                     "TRANSCRIBE_API_URL and GET_RESULT_TRANSCRIBE_API_URL "
                                     "are required for TRANSCRIBE_ENGINE=remote")
        return RemoteWhisperEngine(config["TRANSCRIBE_API_URL"],
                                   config["GET_RESULT_TRANSCRIBE_API_URL"],
                                   config["TRANSCRIBE_API_KEY"],
                                   config["TRANSCRIBE_TIMEOUT_SECONDS"],
                                   config["TRANSCRIBE_POLL_MAX_SECONDS"],
                                   config.get("TRANSCRIBE_POLL_FIRST_SECONDS", 1.0),
                                   config["TRANSCRIBE_FORGOTTEN_FACTOR"],
                                   config["TRANSCRIBE_FORGOTTEN_MARGIN_SECONDS"])
    if name == "openai":
        return OpenAIEngine(config["OPENAI_TRANSCRIBE_BASE_URL"],
                            config["OPENAI_TRANSCRIBE_API_KEY"],
                            config["OPENAI_TRANSCRIBE_MODEL"],
                            config["TRANSCRIBE_CHUNK_SECONDS"],
                            config["TRANSCRIBE_CONCURRENCY"])
    return LocalWhisperEngine(local_whisper.model_choice(config),
                              min(config["TRANSCRIBE_CHUNK_SECONDS"],
                                  local_whisper.LOCAL_CHUNK_SECONDS),
                              config["LOCAL_WHISPER_VAD"],
                              config["LOCAL_WHISPER_BATCH_SIZE"],
                              parallel=local_whisper.parallel_chunks(config))
