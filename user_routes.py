"""The signed-in user's routes: submit a job, list and read jobs, download documents."""
from __future__ import annotations

import io

from flask import Blueprint, Response, jsonify, request, send_file
from flask_jwt_extended import current_user, jwt_required
from sqlalchemy import select

import pipeline
import submission_service
from database import db
from errors import APIError
from models import Document, Transcription
from pandoc_service import safe_download_name
from serializers import FILE_TYPES, LEGACY_PATH_COLUMN, transcription_page, user_transcription
from storage import legacy_document_path
from validation import format_seconds, pagination, parse_timestamp, uuid_id

bp = Blueprint("user", __name__)

MIME_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@bp.post("/process")
@jwt_required()
def process():
    submission_service.ensure_accepting()
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
    job_id = submission_service.submit(current_user.id, link=link or None,
                                       upload=upload if has_upload else None,
                                       start=start, end=end)
    return jsonify(message="Transcription request is submitted", transcription_id=str(job_id))


@bp.get("/transcriptions")
@jwt_required()
def list_transcriptions():
    limit, offset = pagination()
    rows = db.session.execute(transcription_page(
        Transcription.user_id == current_user.id, limit=limit, offset=offset)).all()
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
    row = db.session.execute(transcription_page(
        Transcription.id == job_id, Transcription.user_id == current_user.id,
        limit=1, offset=0)).first()
    if row is None:
        raise APIError(404, "Transcription not found")
    return row


@bp.get("/download/<file_type>/<transcription_id>")
@jwt_required()
def download(file_type: str, transcription_id: str):
    kind = _document_kind(file_type)
    return document_response(_own_transcription(transcription_id), kind)


def _document_kind(file_type: str) -> str:
    if file_type not in FILE_TYPES:
        raise APIError(400, "Unknown file type; use txt, md, word or docx")
    return FILE_TYPES[file_type]


def document_response(job: Transcription, kind: str) -> Response:
    """The stored document as an attachment; legacy rows serve their recorded disk file."""
    name = safe_download_name(job.audio_file_name, "." + kind, fallback=f"transcription-{job.id}")
    content = db.session.execute(select(Document.content).where(
        Document.transcription_id == job.id, Document.kind == kind)).scalar_one_or_none()
    if content is not None:
        # send_file writes the RFC 6266 header: an ASCII fallback plus filename* for UTF-8.
        return send_file(io.BytesIO(content), mimetype=MIME_TYPES[kind], as_attachment=True,
                         download_name=name)
    legacy = legacy_document_path(getattr(job, LEGACY_PATH_COLUMN[kind]))
    if legacy is not None:
        return send_file(legacy, mimetype=MIME_TYPES[kind], as_attachment=True,
                         download_name=name)
    raise APIError(404, f"The {kind} document of this transcription is not ready")
