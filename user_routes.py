"""The signed-in user's routes: submit a job, list and read jobs, download documents."""
from __future__ import annotations

import functools
import io
import json
import uuid

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from flask_jwt_extended import current_user, jwt_required
from sqlalchemy import Select, and_, bindparam, select

import pipeline
import submission_service
from auth import extended_token_check, piggyback_on_token_check, piggybacked_row
from body_limits import refuse_if_cut
from database import PreparedRead, db, reader, reads_on_request_connection
from errors import APIError
from i18n import SETTING_DEFAULT_LANGUAGE, remember_default_language
from languages import WHISPER_LANGUAGES, normalize_language, unknown_language_hint
from limits import MAX_FILENAME_LENGTH
from models import SEGMENTS_KIND, Document, JobStatus, SystemSetting, Transcription, User
from openapi import (DOCX, array, attachment, documented, error_response, json_response, ref,
                     string)
from scratch import check_user_scratch
from serializers import (FILE_TYPES, LEGACY_PATH_COLUMN, document_file_name, json_with_times,
                         transcription_page, user_transcription)
from storage import legacy_document_path
from subtitles import SUBTITLE_FORMATS
from validation import document_kind, format_hms, pagination, parse_timestamp, uuid_id

bp = Blueprint("user", __name__)

MIME_TYPES = {  # Werkzeug adds "; charset=utf-8" to text types itself
    "txt": "text/plain",
    "md": "text/markdown",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "srt": "application/x-subrip; charset=utf-8",  # not text/*: Werkzeug adds no charset
    "vtt": "text/vtt",
}

# What every download route answers (the admin ones too).
DOWNLOAD_DOCUMENT = dict(
    description="TXT, Markdown and Word (`/download/txt|md|word|docx/{id}`), or "
                "subtitles from the transcript's timestamps (`/download/srt/{id}`, "
                "`/download/vtt/{id}`): 404 when the engine gave none (the remote service).",
    response=attachment("text/plain", "text/markdown", DOCX, "application/x-subrip",
                        "text/vtt", description="the document as an attachment"))


def _time_field(example: str) -> dict:
    return string(pattern=r"^\s*((\d{1,4}:){0,2}\d{1,6}(\.\d{1,3})?)?\s*$",
                  description="hh:mm:ss, mm:ss or ss (seconds may have up to 3 decimals; "
                              "inner parts below 60); empty = not set",
                  example=example)


def _process_form(config) -> dict:
    return {"type": "object", "properties": {
        "drive_link": string(maxLength=2048, description="a YouTube or Google Drive link",
                             example="https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
        "file": string(format="binary", description=(
            f"an audio or video file (file name up to {MAX_FILENAME_LENGTH} "
            f"characters, at most MAX_UPLOAD_MB = {config['MAX_UPLOAD_MB']} MB)")),
        "start_time": _time_field("00:01:00"),
        "end_time": _time_field("01:05:30"),
        "language": string(maxLength=16, example="id", description=(
            "the spoken language as a Whisper (ISO 639-1) code; absent: the admin "
            "setting transcribe_language, or detection when unset; an unknown code "
            "is a 400 that lists the valid ones")),
    }}


@bp.post("/process")
@documented(
    "Submit a talk for transcription",
    description="Exactly one of `drive_link` and `file`. Returns at once; the job runs "
                "in the background. A link's title and length are read first (at "
                "most LINK_METADATA_TIMEOUT_SECONDS): a private, removed, live or too "
                "long video, or a window past its end, is a 400 without a job.",
    form=_process_form,
    errors=(429, 507),
    extra_responses={503: {**error_response(503), "description": (
        "New transcriptions are paused by the admins (setting transcribing_allowed), "
        "or the database is unavailable")}},
    response=json_response(ref("Submitted")))
@jwt_required()
def process():
    submission_service.ensure_accepting()
    check_user_scratch(current_user.id, request.content_length or 0)
    form = request.form
    refuse_if_cut()
    link = (form.get("drive_link") or "").strip()
    upload = request.files.get("file")
    has_upload = upload is not None and bool(upload.filename)
    if bool(link) == has_upload:
        raise APIError(400, "Send exactly one of 'drive_link' (a YouTube or Google Drive link) "
                            "or 'file' (an audio or video file)")
    start = parse_timestamp(form.get("start_time"), "start_time")
    end = parse_timestamp(form.get("end_time"), "end_time")
    if start is not None and end is not None and start >= end:
        raise APIError(400, f"'start_time' ({format_hms(start)}) must be before "
                            f"'end_time' ({format_hms(end)})")
    language = normalize_language(form.get("language"))
    if language is not None and language not in WHISPER_LANGUAGES:
        raise APIError(400, f"'language' {unknown_language_hint(language)}")
    job_id = submission_service.submit(current_user.id, link=link or None,
                                       upload=upload if has_upload else None,
                                       start=start, end=end, language=language)
    return jsonify(message="Transcription request is submitted", transcription_id=str(job_id))


@bp.get("/transcriptions")
@documented("The caller's transcriptions, newest first", paginated=True,
            response=json_response(array(ref("UserTranscription"))))
@jwt_required()
def list_transcriptions():
    limit, offset = pagination()
    # .all(): one fetch of the page, not a fetch per row.
    rows = reader().execute(transcription_page("user"), {
        "user_id": current_user.id, "limit": limit, "offset": offset}).all()
    return json_with_times([user_transcription(row) for row in rows])


@bp.get("/transcriptions/<transcription_id>")
@documented("One of the caller's transcriptions", errors=(400, 404),
            response=json_response(ref("UserTranscription")))
@jwt_required()
def get_transcription(transcription_id: str):
    row = _own_transcription_row(transcription_id)
    return json_with_times(user_transcription(row))


@bp.post("/transcriptions/<transcription_id>/cancel")
@documented("Cancel a transcription", errors=(400, 404, 409),
            extra_responses={202: json_response(ref("CancelResult"),
                                                "Cancelling: the running step stops soon")},
            response=json_response(ref("CancelResult"), "Cancelled"))
@jwt_required()
def cancel_transcription(transcription_id: str):
    job = _own_transcription(transcription_id)
    status = pipeline.cancel(job)
    return jsonify(message="Cancelled" if status == JobStatus.CANCELLED else "Cancelling",
                   status=status), 200 if status == JobStatus.CANCELLED else 202


@bp.post("/transcriptions/<transcription_id>/retry")
@documented("Resume a failed or cancelled transcription", errors=(400, 404, 409, 429, 503),
            response=json_response(ref("RetryResult")))
@jwt_required()
def retry_transcription(transcription_id: str):
    submission_service.ensure_accepting()
    job = _own_transcription(transcription_id)
    submission_service.check_unfinished_limit(current_user.id)
    pipeline.retry(job)
    return jsonify(message="Transcription resumed", transcription_id=str(job.id), status=job.status)


def _own_transcription(transcription_id: str) -> Transcription:
    job = db.session.execute(select(Transcription).where(
        Transcription.id == uuid_id(transcription_id),
        Transcription.user_id == current_user.id)).scalar_one_or_none()
    if job is None:
        raise APIError(404, "Transcription not found")
    return job


def _own_transcription_row(transcription_id: str):
    job_id = uuid_id(transcription_id)
    row = db.session.execute(transcription_page("own"), {
        "job_id": job_id, "user_id": current_user.id, "limit": 1, "offset": 0}).first()
    if row is None:
        raise APIError(404, "Transcription not found")
    return row


@bp.get("/download/<file_type>/<transcription_id>")
@documented("Download a document of the caller's transcription", errors=(400, 404),
            **DOWNLOAD_DOCUMENT)
@jwt_required()
def download(file_type: str, transcription_id: str):
    kind = document_kind(file_type)
    job_id = uuid_id(transcription_id)
    row = piggybacked_row()  # read with the token check (see below)
    if row is not None:
        remember_default_language(current_app, row.default_language)
        if row.job_id is None:
            raise APIError(404, "Transcription not found")
    return document_answer(kind, job_id, current_user.id, row)


@bp.get("/download/<file_type>/<transcription_id>/<file_name>")
@documented("Download a document of the caller's transcription (the link the lists give)",
            errors=(400, 404), **DOWNLOAD_DOCUMENT)
@jwt_required()
def download_named(file_type: str, transcription_id: str, file_name: str):
    """The links in the lists end in the document's name, which clients show."""
    return download(file_type, transcription_id)


def _job_and_document(kind: str, jobs_from: Select) -> Select:
    """`jobs_from` extended with a job (matched by the `job_id` parameter) and its stored
    document of `kind` (NULL content when not stored)."""
    jobs, documents = Transcription.__table__, Document.__table__
    return (jobs_from.add_columns(jobs.c.id.label("job_id"), jobs.c.audio_file_name,
                                  jobs.c[LEGACY_PATH_COLUMN[kind]].label("legacy_path"),
                                  documents.c.content)
            .outerjoin(documents, and_(documents.c.transcription_id == jobs.c.id,
                                       documents.c.kind == kind)))


@functools.cache
def _download_statement(kind: str, own: bool) -> Select:
    """Built once per kind and scope; parameters `job_id` (and `user_id` for a user's own)."""
    jobs = Transcription.__table__
    criteria = [jobs.c.id == bindparam("job_id")]
    if own:
        criteria.append(jobs.c.user_id == bindparam("user_id"))
    return _job_and_document(kind, select().select_from(jobs)).where(*criteria)


def download_row(kind: str, job_id: uuid.UUID, user_id: int | None = None):
    """The job (a user's own when `user_id` is given) and its document, in one statement."""
    params = {"job_id": job_id} if user_id is None else {"job_id": job_id, "user_id": user_id}
    row = reader().execute(_download_statement(kind, user_id is not None), params).first()
    if row is None:
        raise APIError(404, "Transcription not found")
    return row


def _plan_download(view_args: dict):
    try:
        return (FILE_TYPES[view_args["file_type"]],
                {"job_id": uuid_id(view_args["transcription_id"])})
    except (KeyError, APIError):
        return None  # the view answers the error, after the token check


def _download_with_token_check(kind: str, token_check: Select) -> Select:
    jobs, users, settings = Transcription.__table__, User.__table__, SystemSetting.__table__
    # The admins' default language comes along: a 404 is written in it when the reader's
    # Accept-Language names none of ours, and no second statement reads it.
    default_language = select(settings.c.setting_value).where(
        settings.c.setting_key == SETTING_DEFAULT_LANGUAGE).scalar_subquery()
    return _job_and_document(kind, token_check.outerjoin(
        jobs, and_(jobs.c.id == bindparam("job_id"), jobs.c.user_id == users.c.id))
    ).add_columns(default_language.label("default_language"))


# The frontend prefetches a download per listed job (through the named links the lists
# give): each is one statement, token check included (the user's row, the revocation, the
# job and its document).
for _endpoint in ("user.download", "user.download_named"):
    piggyback_on_token_check(_endpoint, _plan_download, _download_with_token_check)


def download_with_token_check(kind: str) -> PreparedRead:
    """That one statement for a document kind (also what the download lane runs)."""
    return extended_token_check(_download_with_token_check, kind)


# The list and the downloads (subtitles included) read plain rows only: no ORM session.
reads_on_request_connection("user.list_transcriptions", "user.download", "user.download_named")


def document_answer(kind: str, job_id: uuid.UUID, user_id: int | None = None,
                    row=None) -> Response:
    """A document or subtitles of a job (a user's own when `user_id` is given); `row`: the
    job and document already read with the token check, if any."""
    if kind in SUBTITLE_FORMATS:
        return subtitle_response(_subtitle_job_or_404(job_id, user_id), kind)
    return document_response(row if row is not None else download_row(kind, job_id, user_id),
                             kind)


# What subtitles need of a job: plain columns, read on the request's connection like the other
# downloads (an ORM load would open the session's own second connection).
_SUBTITLE_JOB_COLUMNS = (Transcription.id, Transcription.engine, Transcription.txt_document_path,
                         Transcription.start_seconds, Transcription.audio_file_name)


def _subtitle_job_or_404(job_id: uuid.UUID, user_id: int | None):
    query = select(*(column.label(column.key) for column in _SUBTITLE_JOB_COLUMNS)).where(
        Transcription.id == job_id)
    if user_id is not None:
        query = query.where(Transcription.user_id == user_id)
    job = reader().execute(query).first()
    if job is None:
        raise APIError(404, "Transcription not found")
    return job


def document_response(job, kind: str) -> Response:
    """The stored document as an attachment; legacy rows serve their recorded disk file.
    `job`: a row of `download_row`."""
    # send_file writes the RFC 6266 header: an ASCII fallback plus filename* for UTF-8.
    source, name = document_source(job, kind)
    return send_file(source, mimetype=MIME_TYPES[kind], as_attachment=True, download_name=name)


def document_source(job, kind: str, config=None) -> tuple[io.BytesIO | str, str]:
    """What a download sends (the stored bytes, or a legacy row's disk file) and its file
    name; APIError 404 when there is neither. `job`: a row of `download_row` or of the
    download lane's read; `config`: the app's, outside an app context (the lane)."""
    name = document_file_name(job.audio_file_name, job.job_id, kind)
    if job.content is not None:
        return io.BytesIO(job.content), name
    legacy = legacy_document_path(job.legacy_path, config)
    if legacy is not None:
        return legacy, name
    raise APIError(404, f"The {kind} document of this transcription is not ready")


def subtitle_response(job, kind: str) -> Response:
    """SRT or VTT made from the stored segments, timed against the source (a cut window's
    start is added back). `job`: a row of `_subtitle_job_or_404`."""
    segments = reader().execute(select(Document.content).where(
        Document.transcription_id == job.id,
        Document.kind == SEGMENTS_KIND)).scalar_one_or_none()
    if segments is None:
        has_transcript = reader().execute(select(Document.kind).where(
            Document.transcription_id == job.id, Document.kind == "txt")).first() is not None
        if has_transcript or job.txt_document_path:
            raise APIError(404, f"This transcription has no timestamps: the engine that made it "
                                f"({job.engine or 'an earlier version'}) gives none, so there are "
                                f"no subtitles; TXT, Markdown and Word are available")
        raise APIError(404, f"The {kind} subtitles of this transcription are not ready")
    text = SUBTITLE_FORMATS[kind](json.loads(segments), offset=job.start_seconds or 0.0)
    return send_file(io.BytesIO(text.encode()), mimetype=MIME_TYPES[kind], as_attachment=True,
                     download_name=document_file_name(job.audio_file_name, job.id, kind))
