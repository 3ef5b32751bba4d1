"""The signed-in user's routes: submit a job, list and read jobs, download documents."""
from __future__ import annotations

import functools
import io
import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from flask_jwt_extended import current_user, jwt_required
from sqlalchemy import Select, and_, bindparam, func, select

import pipeline
from auth import piggyback_on_token_check, piggybacked_row
from database import db
from errors import APIError
from links import LinkError, parse_link
from models import FINAL_STATUSES, SUBMITTED, Document, Transcription, User
from pandoc_service import safe_download_name
from serializers import FILE_TYPES, LEGACY_PATH_COLUMN, transcription_page, user_transcription
from storage import legacy_document_path
from system_settings import transcribing_allowed
from validation import display_text, format_seconds, pagination, parse_timestamp, uuid_id

bp = Blueprint("user", __name__)

MIME_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
MAX_FILENAME_LENGTH = 255


@bp.post("/process")
@jwt_required()
def process():
    if not transcribing_allowed():
        raise APIError(503, "New transcriptions are paused by the administrators; "
                            "please try again later")
    form = request.form
    link = (form.get("drive_link") or "").strip()
    upload = request.files.get("file")
    has_upload = upload is not None and bool(upload.filename)
    if bool(link) == has_upload:
        raise APIError(400, "Send exactly one of 'drive_link' (a YouTube or Google Drive link) "
                            "or 'file' (an audio or video file)")
    start = parse_timestamp(form.get("start_time"), "start_time")
    end = parse_timestamp(form.get("end_time"), "end_time")
    if start is not None and end is not None and start >= end:
        raise APIError(400, f"'start_time' ({format_seconds(start)}) must be before "
                            f"'end_time' ({format_seconds(end)})")
    _check_unfinished_limit(current_user.id)

    job = Transcription(id=uuid.uuid4(), user_id=current_user.id, status=SUBMITTED,
                        start_seconds=start, end_seconds=end)
    if link:
        allowed = current_app.config["ALLOWED_LINK_HOSTS"]
        try:
            source = parse_link(link, frozenset(allowed) if allowed else None)
        except LinkError as exc:
            raise APIError(400, str(exc)) from None
        job.google_drive_url = link
        job.source_type = source.kind
    else:
        if len(upload.filename) > MAX_FILENAME_LENGTH:
            raise APIError(400, f"The file name is longer than {MAX_FILENAME_LENGTH} characters")
        job.source_type = "upload"
        stem = Path(upload.filename.replace("\\", "/")).stem
        job.audio_file_name = display_text(stem, 200) or "upload"
        pipeline.accept_upload(job, upload)

    db.session.add(job)
    db.session.commit()
    pipeline.enqueue(job.id)
    return jsonify(message="Transcription request is submitted", transcription_id=str(job.id))


def _check_unfinished_limit(user_id: int) -> None:
    """Count the user's unfinished jobs under a lock on their row, so concurrent submissions
    of one user queue here and the limit holds (the lock lasts until the job is committed)."""
    limit = current_app.config["MAX_UNFINISHED_JOBS_PER_USER"]
    db.session.execute(select(User.id).where(User.id == user_id).with_for_update())
    unfinished = db.session.execute(
        select(func.count()).select_from(Transcription).where(
            Transcription.user_id == user_id,
            Transcription.status.not_in(FINAL_STATUSES))).scalar_one()
    if unfinished >= limit:
        raise APIError(429, f"You already have {unfinished} transcriptions in progress; "
                            f"wait for one to finish (limit {limit})", {"Retry-After": "60"})


@bp.get("/transcriptions")
@jwt_required()
def list_transcriptions():
    limit, offset = pagination()
    rows = db.session.execute(transcription_page("user"), {
        "user_id": current_user.id, "limit": limit, "offset": offset})
    return jsonify([user_transcription(row) for row in rows])


@bp.get("/transcriptions/<transcription_id>")
@jwt_required()
def get_transcription(transcription_id: str):
    row = _own_transcription_row(transcription_id)
    return jsonify(user_transcription(row))


@bp.post("/transcriptions/<transcription_id>/cancel")
@jwt_required()
def cancel_transcription(transcription_id: str):
    job = _own_transcription(transcription_id)
    status = pipeline.cancel(job)
    return jsonify(message="Cancelled" if status == "cancelled" else "Cancelling",
                   status=status), 200 if status == "cancelled" else 202


@bp.post("/transcriptions/<transcription_id>/retry")
@jwt_required()
def retry_transcription(transcription_id: str):
    job = _own_transcription(transcription_id)
    _check_unfinished_limit(current_user.id)
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
@jwt_required()
def download(file_type: str, transcription_id: str):
    kind = _document_kind(file_type)
    job_id = uuid_id(transcription_id)
    row = piggybacked_row()  # read with the token check (see below)
    if row is None:
        row = download_row(kind, job_id, current_user.id)
    elif row.job_id is None:
        raise APIError(404, "Transcription not found")
    return document_response(row, kind)


def _document_kind(file_type: str) -> str:
    if file_type not in FILE_TYPES:
        raise APIError(400, "Unknown file type; use txt, md, word or docx")
    return FILE_TYPES[file_type]


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
    row = db.session.execute(_download_statement(kind, user_id is not None), params).first()
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
    jobs, users = Transcription.__table__, User.__table__
    return _job_and_document(kind, token_check.outerjoin(
        jobs, and_(jobs.c.id == bindparam("job_id"), jobs.c.user_id == users.c.id)))


# The frontend prefetches a download per listed job: each is one statement, token check
# included (the user's row, the revocation, the job and its document).
piggyback_on_token_check("user.download", _plan_download, _download_with_token_check)


def document_response(job, kind: str) -> Response:
    """The stored document as an attachment; legacy rows serve their recorded disk file.
    `job`: a row of `download_row`."""
    name = safe_download_name(job.audio_file_name, "." + kind,
                              fallback=f"transcription-{job.job_id}")
    content = job.content
    if content is not None:
        # send_file writes the RFC 6266 header: an ASCII fallback plus filename* for UTF-8.
        return send_file(io.BytesIO(content), mimetype=MIME_TYPES[kind], as_attachment=True,
                         download_name=name)
    legacy = legacy_document_path(job.legacy_path)
    if legacy is not None:
        return send_file(legacy, mimetype=MIME_TYPES[kind], as_attachment=True,
                         download_name=name)
    raise APIError(404, f"The {kind} document of this transcription is not ready")
