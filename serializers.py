"""JSON shapes of the contract, and the list queries that feed them in one statement each."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.orm import aliased

from pandoc_service import safe_download_name
from models import DOCUMENT_KINDS, Document, ErrorLog, SystemSetting, Transcription, User, as_utc

# Contract file_type -> stored document kind, and the legacy path column for each kind.
FILE_TYPES = {"txt": "txt", "md": "md", "word": "docx", "docx": "docx"}
LEGACY_PATH_COLUMN = {"txt": "txt_document_path", "md": "md_document_path",
                      "docx": "word_document_path"}


def iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


NEWEST_FIRST = (Transcription.created_at.desc(), Transcription.id)


def transcription_page(*criteria, limit: int, offset: int, with_username: bool = False) -> Select:
    """One page of transcriptions, newest first, with a flag per stored document.

    The page is cut first (a LIMITed subquery) and the document flags are computed for its
    rows only; otherwise PostgreSQL would probe the documents of every matching row.
    """
    page = (select(Transcription).where(*criteria).order_by(*NEWEST_FIRST)
            .limit(limit).offset(offset).subquery())
    job = aliased(Transcription, page)
    flags = [exists().where(and_(Document.transcription_id == job.id, Document.kind == kind))
             .label(f"has_{kind}") for kind in DOCUMENT_KINDS]
    query = select(job, *flags)
    if with_username:
        query = query.add_columns(User.username).outerjoin(User, User.id == job.user_id)
    return query.order_by(job.created_at.desc(), job.id)


def document_file_name(job: Transcription, kind: str) -> str:
    """The document's file name: the audio's title with the kind's extension."""
    return safe_download_name(job.audio_file_name, "." + kind,
                              fallback=f"transcription-{job.id}")


def document_link(row: Any, kind: str) -> str | None:
    """Truthy once the document exists: the route that downloads it, ending in the
    document's name (clients show a document's name as the last segment of this path)."""
    transcription = row[0]
    stored = getattr(row, f"has_{kind}")
    legacy = getattr(transcription, LEGACY_PATH_COLUMN[kind])
    if not (stored or legacy):
        return None
    file_type = "word" if kind == "docx" else kind
    return f"/download/{file_type}/{transcription.id}/{document_file_name(transcription, kind)}"


def audio_file_label(t: Transcription) -> str | None:
    """`audio_file_path` as clients may see it: a file name (the upload's, or the video's
    title), never a server path. Legacy rows recorded a path; only its last segment goes out."""
    if not t.audio_file_path:
        return None
    return re.split(r"[\\/]", t.audio_file_path)[-1] or None


def user_transcription(row: Any) -> dict[str, Any]:
    t: Transcription = row[0]
    return {
        "id": str(t.id),
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "status": t.status,
        "word_document_path": document_link(row, "docx"),
        "txt_document_path": document_link(row, "txt"),
        "md_document_path": document_link(row, "md"),
        "audio_file_name": t.audio_file_name or t.google_drive_url,
        "google_drive_url": t.google_drive_url,
        "start_seconds": t.start_seconds,
        "end_seconds": t.end_seconds,
        "error_message": t.error_message,
        "proofread_note": t.proofread_note,
        "progress": progress(t),
    }


def progress(t: Transcription) -> dict[str, Any] | None:
    """The step and its units: bytes fetched, chunks (local engine: audio seconds)
    transcribed, slices proofread."""
    if t.progress_step is None:
        return None
    unit = {"uploading": "bytes", "proofreading": "slices",
            "transcribing": "seconds" if t.engine == "local" else "chunks"}
    return {"step": t.progress_step, "done": t.progress_done, "total": t.progress_total,
            "unit": unit.get(t.progress_step)}


def admin_transcription(row: Any) -> dict[str, Any]:
    t: Transcription = row[0]
    return {
        "id": str(t.id),
        "user_id": t.user_id,
        "username": row.username,
        "audio_file_path": audio_file_label(t),
        "audio_file_name": t.audio_file_name or t.google_drive_url,
        "google_drive_url": t.google_drive_url,
        "txt_document_path": document_link(row, "txt"),
        "md_document_path": document_link(row, "md"),
        "word_document_path": document_link(row, "docx"),
        "status": t.status,
        "error_message": t.error_message,
        "progress": progress(t),
        "engine": t.engine,
        "transcribe_prompt": t.transcribe_prompt,
        "proofread_prompt": t.proofread_prompt,
        "inference_duration": t.inference_duration,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
    }


def user_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "is_admin": bool(row.is_admin),
            "created_at": iso(row.created_at), "transcription_count": row.transcription_count}


def error_log(log: ErrorLog) -> dict[str, Any]:
    return {"id": log.id, "user_id": log.user_id,
            "transcription_id": str(log.transcription_id) if log.transcription_id else None,
            "error_message": log.error_message, "stack_trace": log.stack_trace,
            "inference": bool(log.inference), "step": log.step, "created_at": iso(log.created_at)}


def prompt(p: Any) -> dict[str, Any]:
    return {"id": p.id, "version": p.version, "prompt": p.prompt, "created_at": iso(p.created_at)}


def setting(s: SystemSetting) -> dict[str, Any]:
    return {"id": s.id, "setting_key": s.setting_key, "setting_value": s.setting_value,
            "description": s.description, "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at)}
