"""JSON shapes of the contract, and the list queries that feed them in one statement each."""
from __future__ import annotations

import functools
import re
import uuid
from datetime import datetime
from typing import Any

import orjson
from flask import Response, current_app
from flask.json.provider import DefaultJSONProvider
from sqlalchemy import Select, String, and_, bindparam, cast, exists, select

from i18n import translate_message
from pandoc_service import safe_download_name
from models import (DOCUMENT_KINDS, Document, ErrorLog, JobStatus, SystemSetting, Transcription, User,
                    as_utc)

# Contract file_type -> stored document kind, and the legacy path column for each kind.
FILE_TYPES = {"txt": "txt", "md": "md", "word": "docx", "docx": "docx"}
LEGACY_PATH_COLUMN = {"txt": "txt_document_path", "md": "md_document_path",
                      "docx": "word_document_path"}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else as_utc(value)).isoformat()


# The columns each answer reads: lists load plain rows of these, never whole ORM objects
# (no identity map, no prompt texts for the user's list).
USER_COLUMNS = ("id", "created_at", "updated_at", "status", "txt_document_path",
                "md_document_path", "word_document_path", "audio_file_name", "google_drive_url",
                "start_seconds", "end_seconds", "error_message", "proofread_note",
                "progress_step", "progress_done", "progress_total", "engine")
ADMIN_COLUMNS = USER_COLUMNS + ("user_id", "audio_file_path", "transcribe_prompt",
                                "proofread_prompt", "inference_duration")
# A row of transcription_page, in order: read by unpacking (reading a Row's column by name
# costs about a microsecond, and a list row has two dozen).
_USER_ROW = USER_COLUMNS + tuple(f"has_{kind}" for kind in DOCUMENT_KINDS)
_ADMIN_ROW = ADMIN_COLUMNS + tuple(f"has_{kind}" for kind in DOCUMENT_KINDS) + ("username",)


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
    # The id as text: psycopg2 would build a uuid.UUID per row only for it to be turned
    # back into a string (a third of a list's CPU). The columns come in the order the
    # serializers unpack them (_USER_ROW, _ADMIN_ROW).
    query = select(cast(page.c.id, String).label("id"), *[page.c[name] for name in columns[1:]],
                   *flags)
    if scope == "all":
        users = User.__table__
        query = query.add_columns(users.c.username).outerjoin(users, users.c.id == page.c.user_id)
    assert tuple(c.name for c in query.selected_columns) == (
        _ADMIN_ROW if scope == "all" else _USER_ROW)
    return query.order_by(page.c.created_at.desc(), page.c.id)


def document_file_name(audio_file_name: str | None, job_id: Any, kind: str) -> str:
    """The document's file name: the audio's title with the kind's extension."""
    return safe_download_name(audio_file_name, "." + kind, fallback=f"transcription-{job_id}")


def job_id_text(value: Any) -> str:
    """A job id read as text (`transcription_page`): PostgreSQL gives the canonical form,
    SQLite its stored 32 hex digits."""
    return value if isinstance(value, str) and len(value) == 36 else str(uuid.UUID(str(value)))


def _document_links(job_id: str, title: str | None, docx: Any, txt: Any,
                    md: Any) -> tuple[str | None, str | None, str | None]:
    """The docx, txt and md links of a list row, given whether each document exists (a
    stored flag or a legacy path): the route that downloads it, ending in the document's
    name (clients show a document's name as the last segment of this path). The hot part of
    every list: the title is cleaned once."""
    if not (docx or txt or md):
        return None, None, None
    name = document_file_name(title, job_id, "")  # "<title>."
    return (f"/download/word/{job_id}/{name}docx" if docx else None,
            f"/download/txt/{job_id}/{name}txt" if txt else None,
            f"/download/md/{job_id}/{name}md" if md else None)


_PATH_SEPARATORS = re.compile(r"[\\/]")


def audio_file_label(audio_file_path: str | None) -> str | None:
    """`audio_file_path` as clients may see it: a file name (the upload's, or the video's
    title), never a server path. Legacy rows recorded a path; only its last segment goes out."""
    if not audio_file_path:
        return None
    return _PATH_SEPARATORS.split(audio_file_path)[-1] or None


# The answers of user_transcription, admin_transcription, user_summary and error_logs keep
# their timestamps as datetimes: send them with `json_with_times`, which writes each as
# iso() does (isoformat was a tenth of a list's CPU; orjson writes them at a tenth of that).


def user_transcription(row: Any) -> dict[str, Any]:
    """`row`: a row of `transcription_page` ("user" or "own"), unpacked in _USER_ROW's order."""
    (job_id, created_at, updated_at, status, txt_path, md_path, word_path, title, drive_url,
     start_seconds, end_seconds, error_message, proofread_note, step, done, total, engine,
     has_txt, has_md, has_docx) = row
    job_id = job_id_text(job_id)
    docx, txt, md = _document_links(job_id, title, has_docx or word_path, has_txt or txt_path,
                                    has_md or md_path)
    return {
        "id": job_id,
        "created_at": created_at,
        "updated_at": updated_at,
        "status": status,
        "word_document_path": docx,
        "txt_document_path": txt,
        "md_document_path": md,
        "audio_file_name": title or drive_url,
        "google_drive_url": drive_url,
        "start_seconds": start_seconds,
        "end_seconds": end_seconds,
        "error_message": translate_message(error_message),
        "proofread_note": translate_message(proofread_note),
        "progress": progress(step, done, total, engine),
    }


_PROGRESS_UNITS = {JobStatus.UPLOADING: "bytes", JobStatus.PROOFREADING: "slices"}


def progress(step: str | None, done: Any, total: Any, engine: str | None
             ) -> dict[str, Any] | None:
    """The step and its units: bytes fetched, chunks (local engine: audio seconds)
    transcribed, slices proofread."""
    if step is None:
        return None
    unit = (("seconds" if engine == "local" else "chunks") if step == JobStatus.TRANSCRIBING
            else _PROGRESS_UNITS.get(step))
    return {"step": step, "done": done, "total": total, "unit": unit}


def admin_transcription(row: Any) -> dict[str, Any]:
    """`row`: a row of `transcription_page("all")`, unpacked in _ADMIN_ROW's order."""
    (job_id, created_at, updated_at, status, txt_path, md_path, word_path, title, drive_url,
     _start_seconds, _end_seconds, error_message, _proofread_note, step, done, total, engine,
     user_id, audio_file_path, transcribe_prompt, proofread_prompt, inference_duration,
     has_txt, has_md, has_docx, username) = row
    job_id = job_id_text(job_id)
    docx, txt, md = _document_links(job_id, title, has_docx or word_path, has_txt or txt_path,
                                    has_md or md_path)
    return {
        "id": job_id,
        "user_id": user_id,
        "username": username,
        "audio_file_path": audio_file_label(audio_file_path),
        "audio_file_name": title or drive_url,
        "google_drive_url": drive_url,
        "txt_document_path": txt,
        "md_document_path": md,
        "word_document_path": docx,
        "status": status,
        "error_message": translate_message(error_message),
        "progress": progress(step, done, total, engine),
        "engine": engine,
        "transcribe_prompt": transcribe_prompt,
        "proofread_prompt": proofread_prompt,
        "inference_duration": inference_duration,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def user_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "is_admin": bool(row.is_admin),
            "created_at": row.created_at, "transcription_count": row.transcription_count}


# Built once, like transcription_page; parameters `limit`, `offset`. The job id as text,
# as in transcription_page.
_LOGS = ErrorLog.__table__
ERROR_LOG_PAGE = (select(*[_LOGS.c[name] for name in (
    "id", "user_id", "error_message", "stack_trace", "inference", "step", "created_at")],
    cast(_LOGS.c.transcription_id, String).label("transcription_id"))
    .order_by(_LOGS.c.created_at.desc(), _LOGS.c.id.desc())
    .limit(bindparam("limit")).offset(bindparam("offset")))


def error_logs(rows: Any) -> list[dict[str, Any]]:
    """Rows of ERROR_LOG_PAGE as answers (columns unpacked in the statement's order: a page
    is a hundred rows, and reading each column by name cost a sixth of the route)."""
    return [{"id": log_id, "user_id": user_id,
             "transcription_id": job_id_text(job_id) if job_id else None,
             "error_message": message, "stack_trace": stack_trace, "inference": bool(inference),
             "step": step, "created_at": created_at}
            for log_id, user_id, message, stack_trace, inference, step, created_at, job_id
            in rows]


def prompt(p: Any) -> dict[str, Any]:
    return {"id": p.id, "version": p.version, "prompt": p.prompt, "created_at": iso(p.created_at)}


def setting(s: SystemSetting) -> dict[str, Any]:
    return {"id": s.id, "setting_key": s.setting_key, "setting_value": s.setting_value,
            "description": s.description, "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at)}


class FastJSONProvider(DefaultJSONProvider):
    """`jsonify` through orjson: encoding was a tenth of `GET /transcriptions` and a fifth of
    `GET /admin/logs`, and orjson takes a fraction of that. The answer is the one Flask's
    encoder gives (compact, key order kept, the same `default` for dates, UUIDs and
    decimals); an answer with non-ASCII text, one orjson cannot encode (an integer past 64
    bits) and the indented debug form go through Flask's own encoder, so non-ASCII text stays
    escaped as `\\uXXXX` as before."""

    _OPTIONS = (orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
                | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                | orjson.OPT_PASSTHROUGH_SUBCLASS)

    # Datetimes as iso() writes them (naive ones are UTC), not as Flask's HTTP dates.
    _TIMES_OPTIONS = (_OPTIONS & ~orjson.OPT_PASSTHROUGH_DATETIME) | orjson.OPT_NAIVE_UTC

    def response(self, *args: Any, **kwargs: Any) -> Response:
        fast = self._fast_answer(self._prepare_response_obj(args, kwargs), self._OPTIONS)
        return fast if fast is not None else super().response(*args, **kwargs)

    def response_with_times(self, obj: Any) -> Response:
        """`obj`'s datetimes written as iso() writes them, everything else as `response`."""
        fast = self._fast_answer(obj, self._TIMES_OPTIONS)
        return fast if fast is not None else super().response(_iso_times(obj))

    def _fast_answer(self, obj: Any, options: int) -> Response | None:
        if ((self.compact is None and self._app.debug) or self.compact is False
                or self.sort_keys or not self.ensure_ascii):
            return None
        try:
            body = orjson.dumps(obj, default=self.default, option=options)
        except (TypeError, orjson.JSONEncodeError):
            return None
        if not body.isascii():
            return None
        return self._app.response_class(body, mimetype=self.mimetype)


def _iso_times(obj: Any) -> Any:
    """`obj` with every datetime turned into iso()'s text (the rare answers that go through
    Flask's own encoder: non-ASCII text)."""
    if isinstance(obj, datetime):
        return iso(obj)
    if isinstance(obj, dict):
        return {key: _iso_times(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_iso_times(value) for value in obj]
    return obj


def json_with_times(obj: Any) -> Response:
    """A JSON answer (like `jsonify(obj)`) whose datetimes are written as iso() writes them:
    for the answers of user_transcription, admin_transcription, user_summary, error_logs."""
    return current_app.json.response_with_times(obj)
