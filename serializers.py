"""JSON shapes of the contract, and the list queries that feed them in one statement each."""
from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, select

from i18n import translate_message
from pandoc_service import safe_download_name
from models import (DOCUMENT_KINDS, Document, ErrorLog, JobStatus, SystemSetting, Transcription, User,
                    as_utc)

# Contract file_type -> stored document kind, and the legacy path column for each kind.
FILE_TYPES = {"txt": "txt", "md": "md", "word": "docx", "docx": "docx"}
LEGACY_PATH_COLUMN = {"txt": "txt_document_path", "md": "md_document_path",
                      "docx": "word_document_path"}


def iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


# The columns each answer reads: lists load plain rows of these, never whole ORM objects
# (no identity map, no prompt texts for the user's list).
USER_COLUMNS = ("id", "created_at", "updated_at", "status", "txt_document_path",
                "md_document_path", "word_document_path", "audio_file_name", "google_drive_url",
                "start_seconds", "end_seconds", "error_message", "proofread_note",
                "progress_step", "progress_done", "progress_total", "engine")
ADMIN_COLUMNS = USER_COLUMNS + ("user_id", "audio_file_path", "transcribe_prompt",
                                "proofread_prompt", "inference_duration")


@functools.cache
def transcription_page(scope: str) -> Select:
    """One page of transcriptions, newest first, as plain rows with a flag per stored document.
    Built once per scope (building costs more CPU than running it); parameters:

    - "user": a user's jobs: `user_id`, `limit`, `offset`;
    - "own": one job of a user: `job_id`, `user_id`, `limit` (1), `offset` (0);
    - "all": everyone's jobs with the username (admin): `limit`, `offset`.

    The page is cut first (a LIMITed subquery) and the document flags are computed for its
    rows only; otherwise PostgreSQL would probe the documents of every matching row.
    """
    jobs = Transcription.__table__
    criteria = {"user": [jobs.c.user_id == bindparam("user_id")],
                "own": [jobs.c.id == bindparam("job_id"), jobs.c.user_id == bindparam("user_id")],
                "all": []}[scope]
    columns = ADMIN_COLUMNS if scope == "all" else USER_COLUMNS
    page = (select(*[jobs.c[name] for name in columns]).where(*criteria)
            .order_by(jobs.c.created_at.desc(), jobs.c.id)
            .limit(bindparam("limit")).offset(bindparam("offset")).subquery())
    documents = Document.__table__
    flags = [exists().where(and_(documents.c.transcription_id == page.c.id,
                                 documents.c.kind == kind)).label(f"has_{kind}")
             for kind in DOCUMENT_KINDS]
    query = select(page, *flags)
    if scope == "all":
        users = User.__table__
        query = query.add_columns(users.c.username).outerjoin(users, users.c.id == page.c.user_id)
    return query.order_by(page.c.created_at.desc(), page.c.id)


def document_file_name(audio_file_name: str | None, job_id: Any, kind: str) -> str:
    """The document's file name: the audio's title with the kind's extension."""
    return safe_download_name(audio_file_name, "." + kind, fallback=f"transcription-{job_id}")


def document_link(row: Any, kind: str) -> str | None:
    """Truthy once the document exists: the route that downloads it, ending in the
    document's name (clients show a document's name as the last segment of this path)."""
    if not (getattr(row, f"has_{kind}") or getattr(row, LEGACY_PATH_COLUMN[kind])):
        return None
    file_type = "word" if kind == "docx" else kind
    name = document_file_name(row.audio_file_name, row.id, kind)
    return f"/download/{file_type}/{row.id}/{name}"


def audio_file_label(row: Any) -> str | None:
    """`audio_file_path` as clients may see it: a file name (the upload's, or the video's
    title), never a server path. Legacy rows recorded a path; only its last segment goes out."""
    if not row.audio_file_path:
        return None
    return re.split(r"[\\/]", row.audio_file_path)[-1] or None


def user_transcription(row: Any) -> dict[str, Any]:
    """`row`: a row of `transcription_page`."""
    return {
        "id": str(row.id),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "status": row.status,
        "word_document_path": document_link(row, "docx"),
        "txt_document_path": document_link(row, "txt"),
        "md_document_path": document_link(row, "md"),
        "audio_file_name": row.audio_file_name or row.google_drive_url,
        "google_drive_url": row.google_drive_url,
        "start_seconds": row.start_seconds,
        "end_seconds": row.end_seconds,
        "error_message": translate_message(row.error_message),
        "proofread_note": translate_message(row.proofread_note),
        "progress": progress(row),
    }


def progress(t: Any) -> dict[str, Any] | None:
    """The step and its units: bytes fetched, chunks (local engine: audio seconds)
    transcribed, slices proofread."""
    if t.progress_step is None:
        return None
    unit = {JobStatus.UPLOADING: "bytes", JobStatus.PROOFREADING: "slices",
            JobStatus.TRANSCRIBING: "seconds" if t.engine == "local" else "chunks"}
    return {"step": t.progress_step, "done": t.progress_done, "total": t.progress_total,
            "unit": unit.get(t.progress_step)}


def admin_transcription(row: Any) -> dict[str, Any]:
    """`row`: a row of `transcription_page(..., with_username=True)`."""
    return {
        "id": str(row.id),
        "user_id": row.user_id,
        "username": row.username,
        "audio_file_path": audio_file_label(row),
        "audio_file_name": row.audio_file_name or row.google_drive_url,
        "google_drive_url": row.google_drive_url,
        "txt_document_path": document_link(row, "txt"),
        "md_document_path": document_link(row, "md"),
        "word_document_path": document_link(row, "docx"),
        "status": row.status,
        "error_message": translate_message(row.error_message),
        "progress": progress(row),
        "engine": row.engine,
        "transcribe_prompt": row.transcribe_prompt,
        "proofread_prompt": row.proofread_prompt,
        "inference_duration": row.inference_duration,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def user_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "is_admin": bool(row.is_admin),
            "created_at": iso(row.created_at), "transcription_count": row.transcription_count}


# Built once, like transcription_page; parameters `limit`, `offset`.
ERROR_LOG_PAGE = (select(*[ErrorLog.__table__.c[name] for name in (
    "id", "user_id", "transcription_id", "error_message", "stack_trace", "inference", "step",
    "created_at")]).order_by(ErrorLog.__table__.c.created_at.desc(), ErrorLog.__table__.c.id.desc())
    .limit(bindparam("limit")).offset(bindparam("offset")))


def error_log(log: Any) -> dict[str, Any]:
    """`log`: an ErrorLog, or a row of ERROR_LOG_PAGE."""
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
