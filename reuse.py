"""Same talk, same work: a job reuses the finished work of an earlier job of the same source.

A job's `source_key` names what it transcribes: `youtube:<video id>` or `drive:<file id>` from
the link (so youtu.be/x, watch?v=x and shorts/x are one key), `upload:sha256:<hex>` for an
upload (hashed by the runner, never in the request). A completed job with the same key, the
same window (start, end), the same engine, transcription model and language gives its
transcript and timed segments: the new job skips fetching and transcribing. Its proofread
Markdown is reused too when the proofreading prompt text and model are the same and it was
made from the same transcript; otherwise proofreading runs on the reused transcript.

Each reusing job records what it saved (`reused_audio_seconds`, `reused_tokens`), which
`GET /admin/stats` adds up. Jobs of one talk running at the same time do not wait for each
other: both pay.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import and_, select

import models as m
from database import db
from links import Source
from models import Document, Transcription

log = logging.getLogger("ezra.reuse")

HASH_BLOCK = 1024 * 1024


class _Run(Protocol):  # pipeline.JobRun, as far as this module uses it
    job_id: Any
    config: Any

    def set_status(self, status: str, **values: Any) -> None: ...
    def update(self, **values: Any) -> None: ...
    def save_document(self, kind: str, content: bytes) -> None: ...


def link_source_key(source: Source) -> str:
    """The key of a parsed link: the video or file id, whatever form the link had."""
    return f"{source.kind}:{source.ident}"


def upload_source_key(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return f"upload:sha256:{digest.hexdigest()}"


def transcribe_model_id(config: Any) -> str:
    """What made a transcript, beside the engine: the model (the remote service names none)."""
    engine = config["TRANSCRIBE_ENGINE"]
    if engine == "local":
        return config["LOCAL_WHISPER_MODEL"] or "whisper-base"
    if engine == "openai":
        return config["OPENAI_TRANSCRIBE_MODEL"]
    return "remote"


def _same(column, value):
    return column.is_(None) if value is None else column == value


def _donor_query(job: Transcription, config: Any, language: str | None):
    """Completed jobs whose transcript this job may take, newest first."""
    return (select(Transcription)
            .where(Transcription.source_key == job.source_key,
                   Transcription.id != job.id,
                   Transcription.status == m.JobStatus.COMPLETED,
                   _same(Transcription.start_seconds, job.start_seconds),
                   _same(Transcription.end_seconds, job.end_seconds),
                   Transcription.engine == config["TRANSCRIBE_ENGINE"],
                   Transcription.transcribe_model == transcribe_model_id(config),
                   _same(Transcription.language, language))
            .order_by(Transcription.updated_at.desc()))


def take_transcript(run: _Run, job: Transcription, upload_path: Path,
                    language: str | None) -> str | None:
    """The transcript of an earlier job of the same talk, copied into this job (with its
    segments), or None when there is none and the job must fetch and transcribe."""
    if not run.config["REUSE_FINISHED_WORK"]:
        return None
    if job.source_key is None and job.source_type == "upload" and upload_path.exists():
        # Committed by update(): the job's attributes are reloaded with the key.
        run.update(source_key=upload_source_key(upload_path))
    if job.source_key is None:
        return None
    donor_text = db.session.execute(
        _donor_query(job, run.config, language)
        .join(Document, and_(Document.transcription_id == Transcription.id,
                             Document.kind == "txt"))
        .with_only_columns(Transcription.id, Transcription.transcribe_prompt,
                           Transcription.audio_seconds, Transcription.audio_file_name,
                           Transcription.audio_file_path, Document.content)
        .limit(1)).first()
    if donor_text is None:
        db.session.commit()
        return None
    donor_id, prompt, seconds, title, path, content = donor_text
    segments = db.session.execute(select(Document.content).where(
        Document.transcription_id == donor_id,
        Document.kind == m.SEGMENTS_KIND)).scalar_one_or_none()
    db.session.commit()
    names = {} if job.audio_file_name else {"audio_file_name": title, "audio_file_path": path}
    run.set_status(m.JobStatus.TRANSCRIBING, transcribe_prompt=prompt, language=language,
                   engine=run.config["TRANSCRIBE_ENGINE"],
                   transcribe_model=transcribe_model_id(run.config), audio_seconds=seconds,
                   reused_from=donor_id, reused_audio_seconds=seconds, **names)
    if segments is not None:  # before the txt, whose presence ends the step
        run.save_document(m.SEGMENTS_KIND, segments)
    run.save_document("txt", content)
    log.info("job=%s event=transcript_reused from=%s audio_seconds=%s", run.job_id, donor_id,
             seconds)
    return content.decode()


def take_proofread(run: _Run, job: Transcription, transcript: str, prompt: str,
                   model: str) -> str | None:
    """The Markdown an earlier job made from the same transcript with the same prompt text
    and model, copied into this job; None when proofreading must run."""
    if job.source_key is None or not run.config["REUSE_FINISHED_WORK"]:
        return None
    markdown = Document.__table__.alias("markdown")
    transcript_doc = Document.__table__.alias("transcript")
    row = db.session.execute(
        select(Transcription.id, Transcription.proofread_tokens, markdown.c.content)
        .join(transcript_doc, and_(transcript_doc.c.transcription_id == Transcription.id,
                                   transcript_doc.c.kind == "txt"))
        .join(markdown, and_(markdown.c.transcription_id == Transcription.id,
                             markdown.c.kind == "md"))
        .where(Transcription.source_key == job.source_key,
               Transcription.id != job.id,
               Transcription.status == m.JobStatus.COMPLETED,
               Transcription.proofread_note.is_(None),
               Transcription.proofread_prompt == prompt,
               Transcription.proofread_model == model,
               transcript_doc.c.content == transcript.encode())
        .order_by(Transcription.updated_at.desc()).limit(1)).first()
    db.session.commit()
    if row is None:
        return None
    donor_id, tokens, content = row
    run.set_status(m.JobStatus.PROOFREADING, proofread_prompt=prompt, proofread_model=model,
                   proofread_note=None, reused_tokens=tokens,
                   **({} if job.reused_from else {"reused_from": donor_id}))
    run.save_document("md", content)
    log.info("job=%s event=proofread_reused from=%s tokens=%s", run.job_id, donor_id, tokens)
    return content.decode()
