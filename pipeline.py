"""The background job's steps: fetch → trim → transcribe → proofread → convert.
The queue, claims, leases and recovery are jobs.py's.

Durable and resumable:
- every step knows from durable state whether it already ran (documents in the database,
  finished chunks in `job_chunks`, complete scratch files renamed into place), so a resumed
  job continues from its last finished step and chunk without paying twice;
- each status change is its own short transaction; no transaction spans slow I/O.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable

from flask import Flask
from sqlalchemy import delete, or_, select, update
from werkzeug.datastructures import FileStorage

import models as m
import reuse
import webhooks
from audio_service import AudioError, check_window, compact_extension, encode_compact, require_audio
from chunk_runner import Cancelled
from database import db
from errors import Conflict, InvalidInput, StorageUnavailable
# The queue lives in jobs.py; these names stay importable from here for callers and tests.
from jobs import (LeaseKeeper, _drain, _draining, _lease_held, enqueue, init_app,  # noqa: F401
                  recover_jobs, run_job, set_job_handler)
from links import parse_link
from metrics import observe_step
from models import (REFERENCE_DOCX_ASSET, AppAsset, Document, ErrorLog, JobChunk, JobStatus,
                    Transcription, utcnow)
from pandoc_service import DEFAULT_REFERENCE_DOCX, PandocError, markdown_to_docx
from proofreading_service import ProofreadError, Proofreader, split_into_slices
from storage import job_dir, remove_job_files
from system_settings import (SETTING_PROOFREAD_MODEL, SETTING_PROOFREADING_ENABLED, active_prompt,
                             default_language, get_flag, get_setting)
from transcription_service import EngineJob, TranscriptionError, engine_from_config
from validation import source_names, storable_text

log = logging.getLogger("ezra.pipeline")

UPLOAD_NAME = "source.upload"


# Hand-off from the request ------------------------------------------------------------------

def accept_upload(job: Transcription, upload: FileStorage) -> None:
    """Keep the streamed upload as the job's source, after checking it holds audio."""
    target = job_dir(job.id, create=True) / UPLOAD_NAME
    stream_name = getattr(upload.stream, "name", None)
    try:
        if isinstance(stream_name, str) and os.path.exists(stream_name):
            os.link(stream_name, target)
        else:  # small uploads may arrive in memory; copy them in chunks
            upload.save(target)
        require_audio(target)
    except AudioError as exc:
        remove_job_files(job.id)
        raise InvalidInput(f"The uploaded file cannot be used: {exc}") from None
    except OSError:
        log.exception("job=%s could not store the upload", job.id)
        remove_job_files(job.id)
        raise StorageUnavailable("The server cannot store the upload right now (storage full "
                                 "or unavailable); please try again later") from None


# Running a job ------------------------------------------------------------------------------

class StepFailure(Exception):
    def __init__(self, step: str, message: str, detail: str | None = None,
                 inference: bool = False):
        super().__init__(message)
        self.step, self.message, self.detail, self.inference = step, message, detail, inference


class JobStopped(Exception):
    """Cancelled by the user, or the lease went to another runner."""


class DbChunkStore:
    """Finished chunks of one stage of one job, in `job_chunks`."""

    def __init__(self, run: "JobRun", stage: str, step: str):
        self.run, self.stage, self.step = run, stage, step

    def done(self) -> dict[int, str]:
        rows = db.session.execute(select(JobChunk.index, JobChunk.text).where(
            JobChunk.transcription_id == self.run.job_id, JobChunk.stage == self.stage)).all()
        db.session.commit()
        return dict(rows)

    def save(self, index: int, text: str) -> None:
        # An answer is stored the moment it arrives, so it must be storable (no NUL).
        db.session.merge(JobChunk(transcription_id=self.run.job_id, stage=self.stage,
                                  index=index, text=storable_text(text)))
        db.session.commit()

    def progress(self, done: int, total: int) -> None:
        self.run.progress(self.step, done, total)

    def should_stop(self) -> bool:
        return self.run.keeper.should_stop()


class JobRun:
    def __init__(self, app: Flask, job_id: uuid.UUID, owner: str, keeper: LeaseKeeper):
        self.app, self.job_id, self.owner, self.keeper = app, job_id, owner, keeper
        self.config = app.config
        self.step = "start"
        self.step_started = time.monotonic()
        self._last_progress = 0.0

    # -- bookkeeping --------------------------------------------------------------------------

    def load(self) -> Transcription:
        job = db.session.get(Transcription, self.job_id, populate_existing=True)
        db.session.commit()
        return job

    def check(self) -> None:
        if self.keeper.lost.is_set():
            raise JobStopped("lease lost")
        if _draining.is_set():
            raise JobStopped("process exiting")
        if self.keeper.cancelled.is_set():
            raise JobStopped(JobStatus.CANCELLED)

    def set_status(self, status: str, *, also: Callable[[], None] | None = None,
                   **values) -> None:
        """Commit the status word before the step's slow work starts. `also()` runs in the
        same transaction when the status changed (the webhook outbox row of a finished job)."""
        self.check()
        now = time.monotonic()
        result = db.session.execute(
            update(Transcription)
            .where(Transcription.id == self.job_id, Transcription.lease_owner == self.owner,
                   Transcription.cancel_requested.is_(False))
            .values(status=status, progress_step=status, progress_done=None,
                    progress_total=None, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False))
        if also is not None and result.rowcount == 1:
            also()
        db.session.commit()
        log.info("job=%s step=%s status=%s previous_step_seconds=%.2f", self.job_id, self.step,
                 status, now - self.step_started)
        observe_step(self.step, now - self.step_started)
        self.step, self.step_started = status, now
        if result.rowcount != 1:
            self.keeper.renew()  # finds out whether it was a cancel or a lost lease
            raise JobStopped(JobStatus.CANCELLED if self.keeper.cancelled.is_set()
                             else "lease lost")

    def update(self, **values) -> None:
        db.session.execute(update(Transcription).where(Transcription.id == self.job_id)
                           .values(**values).execution_options(synchronize_session=False))
        db.session.commit()

    def progress(self, step: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last_progress < 1.0 and done != total:
            return  # bytes arrive often; one row update a second is plenty
        self._last_progress = now
        self.update(progress_step=step, progress_done=done, progress_total=total)

    def document(self, kind: str) -> str | None:
        """A stored text document (txt or md), or None while it does not exist."""
        content = db.session.execute(select(Document.content).where(
            Document.transcription_id == self.job_id, Document.kind == kind)).scalar_one_or_none()
        db.session.commit()
        return None if content is None else content.decode()

    def has_document(self, kind: str) -> bool:
        found = db.session.execute(select(Document.kind).where(
            Document.transcription_id == self.job_id, Document.kind == kind)).first()
        db.session.commit()
        return found is not None

    def save_document(self, kind: str, content: bytes) -> None:
        db.session.merge(Document(transcription_id=self.job_id, kind=kind, content=content))
        db.session.commit()

    # -- the job ------------------------------------------------------------------------------

    def run(self) -> None:
        job = self.load()
        if job.attempts > self.config["JOB_MAX_ATTEMPTS"]:
            self.fail(StepFailure(job.progress_step or "start",
                                  f"The job was interrupted {job.attempts - 1} times; "
                                  "retry it to continue"))
            return
        try:
            self.check()
            # Each step runs only if its document is not stored yet (a resumed job skips it).
            transcript = self.document("txt")
            if transcript is None:  # an earlier job of the same talk may have paid for it
                transcript = reuse.take_transcript(self, job, job_dir(self.job_id) / UPLOAD_NAME,
                                                   job.language or default_language())
                if transcript is not None:
                    remove_job_files(self.job_id)
            if transcript is None:
                source, windowed = self.fetch(job)
                audio = self.prepare(job, source, windowed)
                transcript = self.transcribe(job, audio)
            markdown = self.document("md")
            if markdown is None:
                markdown = self.proofread(job, transcript)
            if not self.has_document("docx"):
                self.convert(markdown)
            self.set_status(JobStatus.COMPLETED, error_message=None,
                            also=lambda: webhooks.add_event(self.job_id))
            webhooks.wake()
        except JobStopped as stop:
            if str(stop) == JobStatus.CANCELLED:
                self.update(status=JobStatus.CANCELLED, error_message="Cancelled by the user",
                            updated_at=utcnow())
                log.info("job=%s step=%s status=%s", self.job_id, self.step, JobStatus.CANCELLED)
            else:
                log.warning("job=%s step=%s stopped (%s); another runner continues",
                            self.job_id, self.step, stop)
        except StepFailure as failure:
            self.fail(failure)
        except Exception as exc:
            self.fail(StepFailure(self.step, "An internal error stopped the job; "
                                             "an admin can see the details", detail=repr(exc)))

    def fail(self, failure: StepFailure) -> None:
        secrets = [self.config.get(k) for k in ("TRANSCRIBE_API_KEY", "DEEPSEEK_API_KEY",
                                                "OPENAI_TRANSCRIBE_API_KEY", "JWT_SECRET_KEY")]
        job = self.load()
        # The status and its log row in one transaction: whoever sees `error` finds the log.
        db.session.execute(update(Transcription).where(Transcription.id == self.job_id)
                           .values(status=JobStatus.ERROR, updated_at=utcnow(),
                                   error_message=storable_text(failure.message)[:500])
                           .execution_options(synchronize_session=False))
        db.session.add(ErrorLog(
            user_id=job.user_id, transcription_id=self.job_id, step=failure.step,
            inference=failure.inference,
            error_message=storable_text(redact(f"{failure.message}: {failure.detail or ''}",
                                               secrets))[:5000],
            stack_trace=storable_text(redact(traceback.format_exc(), secrets))[:20000]))
        webhooks.add_event(self.job_id)  # the outbox row commits with the failure
        db.session.commit()
        webhooks.wake()
        log.info("job=%s step=%s status=error seconds=%.2f", self.job_id, failure.step,
                 time.monotonic() - self.step_started)

    # -- steps --------------------------------------------------------------------------------

    def fetch(self, job: Transcription) -> tuple[Path, bool]:
        folder = job_dir(self.job_id, create=True)
        if job.source_type == "upload":
            source = folder / UPLOAD_NAME
            if not source.exists():
                raise StepFailure("fetch", "The uploaded file is not visible to the worker "
                                           "running this job (deleted, or STORAGE_DIR is not "
                                           "shared with it); please upload it again")
            return source, False
        done = [p for p in folder.glob("source.*") if p.suffix not in (".part", ".ytdl")]
        if done:  # fetched before the interruption
            return done[0], (folder / "windowed").exists()
        # Imported on first use: yt-dlp is heavy and most jobs in a worker never need it.
        from fetch_service import FetchError, fetch_drive, fetch_youtube

        self.set_status(JobStatus.UPLOADING)
        source = parse_link(job.google_drive_url)
        limits = dict(max_bytes=self.config["MAX_DOWNLOAD_MB"] * 1024 * 1024,
                      progress=lambda done, total: self.progress(JobStatus.UPLOADING, done, total),
                      cancel=_EventView(self.keeper),
                      allow_private=self.config["ALLOW_PRIVATE_ADDRESSES"])
        try:
            if source.kind == "youtube":
                result = fetch_youtube(source.url, folder, start=job.start_seconds,
                                       end=job.end_seconds,
                                       max_seconds=self.config["MAX_AUDIO_SECONDS"], **limits)
            else:
                result = fetch_drive(source.ident, folder,
                                     base_url=self.config["DRIVE_BASE_URL"],
                                     **limits)
        except FetchError as exc:
            self.check()  # a cancel aborts the download too; say so rather than fail
            raise StepFailure("fetch", str(exc), exc.detail) from exc
        if result.windowed:
            (folder / "windowed").touch()
        names = None if job.audio_file_name or not result.title else source_names(
            result.title, "" if result.path.suffix == ".drive" else result.path.suffix)
        if names:
            self.update(audio_file_name=names[0], audio_file_path=names[1])
        return result.path, result.windowed

    def prepare(self, job: Transcription, source: Path, windowed: bool) -> Path:
        """Check the audio, cut the window, re-encode compactly (16 kHz mono; lossless for
        the in-process engine, which uploads nothing)."""
        lossless = self.config["TRANSCRIBE_ENGINE"] == "local"
        audio = job_dir(self.job_id) / f"audio{compact_extension(lossless)}"
        if audio.exists():
            return audio
        try:
            duration = require_audio(source)
        except AudioError as exc:
            raise StepFailure("fetch", str(exc)) from exc
        start, end = (None, None) if windowed else (job.start_seconds, job.end_seconds)
        if start is not None or end is not None:
            self.set_status(JobStatus.TRIMMING)
            try:
                start, end = check_window(duration, start, end)
            except AudioError as exc:
                raise StepFailure("trim", str(exc)) from exc
        else:
            self.set_status(JobStatus.WAITING)
        length = (end if end is not None else duration) - (start or 0)
        if length > self.config["MAX_AUDIO_SECONDS"]:
            raise StepFailure("fetch", f"The audio is {int(length // 60)} minutes long; the "
                                       f"limit is {self.config['MAX_AUDIO_SECONDS'] // 60} minutes")
        partial = audio.with_name("audio.partial" + audio.suffix)
        # A container's header may understate its length: decode at most a second past the
        # limit and measure what was decoded.
        limit = self.config["MAX_AUDIO_SECONDS"]
        bounded_end = (start or 0) + limit + 1 if end is None else min(end, (start or 0) + limit + 1)
        try:
            encode_compact(source, partial, start, bounded_end, lossless=lossless)
            decoded = require_audio(partial)
        except AudioError as exc:
            raise StepFailure(self.step, str(exc)) from exc
        except OSError as exc:
            raise StepFailure(self.step, "The server could not write the audio (storage full "
                                         "or unavailable)", repr(exc)) from exc
        if decoded > limit + 0.5:
            partial.unlink(missing_ok=True)
            raise StepFailure("fetch", f"The audio is longer than the limit of {limit // 60} "
                                       f"minutes (its header claimed {int(duration)} seconds)")
        partial.replace(audio)  # a half-written file never looks finished
        self.update(audio_seconds=decoded)
        return audio

    def transcribe(self, job: Transcription, audio: Path) -> str:
        if self.step != JobStatus.WAITING:
            self.set_status(JobStatus.WAITING)
        prompt = job.transcribe_prompt
        if prompt is None:
            active = active_prompt(m.TranscribePrompt)
            prompt = active.prompt if active else ""
        # The request's language, else the admin's default, else Whisper detects it.
        language = job.language or default_language()
        self.set_status(JobStatus.TRANSCRIBING, transcribe_prompt=prompt, language=language,
                        engine=self.config["TRANSCRIBE_ENGINE"],
                        transcribe_model=reuse.transcribe_model_id(self.config))
        started = time.monotonic()
        try:
            engine = engine_from_config(self.config)
            transcript = engine.transcribe(EngineJob(
                job_id=str(self.job_id), audio=audio, work_dir=audio.parent, prompt=prompt,
                language=language,
                store=DbChunkStore(self, "transcribe", JobStatus.TRANSCRIBING)))
        except Cancelled:
            self.check()
            raise
        except TranscriptionError as exc:
            raise StepFailure("transcribe", str(exc), exc.detail, inference=True) from exc
        elapsed = int(round(time.monotonic() - started))
        text = storable_text(transcript.text)
        if not text.strip():
            # Forget the empty answer, so that a retry asks the engine again.
            db.session.execute(delete(JobChunk).where(JobChunk.transcription_id == self.job_id,
                                                      JobChunk.stage == "transcribe"))
            db.session.commit()
            raise StepFailure("transcribe", "The transcription came back empty: no speech was "
                              "found in the audio",
                              inference=True)
        if transcript.segments is not None:  # before the txt, whose presence ends the step
            segments = [(start, end, storable_text(words))
                        for start, end, words in transcript.segments]
            self.save_document(m.SEGMENTS_KIND, json.dumps(segments, ensure_ascii=False).encode())
        self.save_document("txt", text.encode())
        self.update(inference_duration=(job.inference_duration or 0) + elapsed)
        remove_job_files(self.job_id)  # the transcript is safe: scratch audio goes
        return text

    def proofread(self, job: Transcription, transcript: str) -> str:
        self.set_status(JobStatus.WAITING_FOR_PROOFREADING)
        skip_reason = None
        if not get_flag(SETTING_PROOFREADING_ENABLED, default=True):
            skip_reason = "Proofreading is switched off by an admin; this is the raw transcript"
        elif not (self.config["DEEPSEEK_BASE_URL"] and self.config["DEEPSEEK_API_KEY"]):
            skip_reason = "No proofreader is configured; this is the raw transcript"
        if skip_reason:
            self.update(proofread_note=skip_reason)
            self.save_document("md", transcript.encode())
            return transcript
        prompt = job.proofread_prompt
        if prompt is None:
            active = active_prompt(m.ProofreadPrompt)
            prompt = active.prompt if active else ""
        model = get_setting(SETTING_PROOFREAD_MODEL) or self.config["PROOFREAD_MODEL"]
        db.session.commit()
        reused = reuse.take_proofread(self, job, transcript, prompt, model)
        if reused is not None:
            return reused
        self.set_status(JobStatus.PROOFREADING, proofread_prompt=prompt, proofread_note=None,
                        proofread_model=model)
        slices = split_into_slices(transcript, self.config["PROOFREAD_SLICE_CHARS"])
        proofreader = Proofreader(self.config["DEEPSEEK_BASE_URL"], self.config["DEEPSEEK_API_KEY"],
                                  model, self.config["PROOFREAD_CONCURRENCY"],
                                  self.config["PROOFREAD_TIMEOUT_SECONDS"],
                                  self.config["PROOFREAD_MAX_RETRIES"])
        try:
            markdown = proofreader.proofread(
                slices, prompt, DbChunkStore(self, "proofread", JobStatus.PROOFREADING))
        except Cancelled:
            self.check()
            raise
        except ProofreadError as exc:
            raise StepFailure("proofread", str(exc), exc.detail, inference=True) from exc
        self.update(proofread_tokens=(job.proofread_tokens or 0) + proofreader.tokens_used)
        self.save_document("md", markdown.encode())
        return markdown

    def convert(self, markdown: str) -> None:
        self.set_status(JobStatus.CONVERTING)
        custom = db.session.get(AppAsset, REFERENCE_DOCX_ASSET)
        reference_bytes = custom.content if custom else None
        db.session.commit()
        try:
            with tempfile.TemporaryDirectory(prefix="ezra-docx-") as tmp:
                reference = DEFAULT_REFERENCE_DOCX
                if reference_bytes:
                    reference = Path(tmp) / "reference.docx"
                    reference.write_bytes(reference_bytes)
                docx = markdown_to_docx(markdown, reference)
        except PandocError as exc:
            raise StepFailure("convert", "The Word document could not be made", str(exc)) from exc
        self.save_document("docx", docx)


class _EventView:
    """A threading.Event-like view of "stop now" for downloaders that poll `is_set()`."""

    def __init__(self, keeper: LeaseKeeper):
        self.keeper = keeper

    def is_set(self) -> bool:
        return self.keeper.should_stop()


_SECRET_PATTERNS = [re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"),
                    re.compile(r"\b(sk|gsk)-[A-Za-z0-9_\-]{8,}")]


def redact(text: str, secrets: list[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda match: (match.group(1) if match.lastindex and
                                          match.group(1).lower().startswith("bearer")
                                          else "") + "[redacted]", text)
    return text


# Cancel and retry (called by the user routes) -----------------------------------------------

def cancel(job: Transcription) -> str:
    if job.status in m.FINAL_STATUSES:
        raise Conflict(f"The transcription is already {job.status}")
    job.cancel_requested = True
    if not _lease_held(job):
        job.status = JobStatus.CANCELLED
        job.error_message = "Cancelled by the user"
    db.session.commit()
    return job.status


def retry(job: Transcription) -> None:
    if job.status not in (JobStatus.ERROR, JobStatus.CANCELLED):
        raise Conflict(f"Only failed or cancelled transcriptions can be retried; "
                       f"this one is {job.status}")
    if _lease_held(job):
        raise Conflict("The transcription is still stopping; try again in a few seconds")
    now = utcnow()
    # One statement decides: of concurrent retries of one job exactly one matches.
    claimed = db.session.execute(
        update(Transcription)
        .where(Transcription.id == job.id,
               Transcription.status.in_((JobStatus.ERROR, JobStatus.CANCELLED)),
               or_(Transcription.lease_expires_at.is_(None),
                   Transcription.lease_expires_at <= now))
        .values(status=JobStatus.SUBMITTED, error_message=None, cancel_requested=False,
                attempts=0, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        db.session.rollback()
        raise Conflict("The transcription is already being retried")
    if job.status == JobStatus.ERROR:
        # A failed remote step starts over: a fresh submission with a fresh deadline.
        db.session.execute(delete(JobChunk).where(
            JobChunk.transcription_id == job.id, JobChunk.stage == "transcribe",
            JobChunk.index < 0))
    db.session.commit()
    db.session.refresh(job)
    enqueue(job.id)


def _run_job_steps(app: Flask, job_id: uuid.UUID, owner: str, keeper: LeaseKeeper) -> None:
    JobRun(app, job_id, owner, keeper).run()


set_job_handler(_run_job_steps)
