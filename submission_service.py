"""Submitting a job: what `POST /process` does between reading the form and answering.

The upload is stored and probed (once) before the user's row is locked, so a slow FFmpeg probe
never holds that lock; the lock then covers only counting the user's unfinished jobs and
inserting the new one. A refused submission leaves no file behind.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

import pipeline
from database import db
from errors import APIError
from limits import MAX_FILENAME_LENGTH
from links import LinkError, Source, parse_link
from reuse import link_source_key
from models import FINAL_STATUSES, JobStatus, Transcription, User
from source_metadata import LinkRefused, probe_link, stored_names
from storage import remove_job_files
from system_settings import transcribing_allowed
from validation import display_text



def ensure_accepting() -> None:
    """Admins can pause new jobs; checked before anything else of the request."""
    if not transcribing_allowed():
        raise APIError(503, "New transcriptions are paused by the administrators; "
                            "please try again later")


def submit(user_id: int, *, link: str | None, upload: FileStorage | None,
           start: float | None, end: float | None, language: str | None = None) -> uuid.UUID:
    """Store the job (`submitted`) and announce it to the runners; its id."""
    job = Transcription(id=uuid.uuid4(), user_id=user_id, status=JobStatus.SUBMITTED,
                        start_seconds=start, end_seconds=end, language=language)
    if link:
        allowed = current_app.config["ALLOWED_LINK_HOSTS"]
        try:
            source = parse_link(link, frozenset(allowed) if allowed else None)
        except LinkError as exc:
            raise APIError(400, str(exc)) from None
        job.google_drive_url = link
        job.source_type = source.kind
        _read_link_metadata(job, source, start, end)  # before any lock: it may take seconds
        job.source_key = link_source_key(source)  # one key for every form of the link
    else:
        if len(upload.filename) > MAX_FILENAME_LENGTH:
            raise APIError(400, f"The file name is longer than {MAX_FILENAME_LENGTH} characters")
        job.source_type = "upload"
        # Labels only, never paths: the client shows the last segment of audio_file_path.
        file_name = display_text(Path(upload.filename.replace("\\", "/")).name, 255)
        job.audio_file_name = display_text(Path(file_name).stem, 200) or "upload"
        job.audio_file_path = file_name or "upload"
        pipeline.accept_upload(job, upload)  # stored and probed, before any lock is taken
    try:
        check_unfinished_limit(user_id)  # locks the user's row until the commit below
        db.session.add(job)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        if upload is not None:
            remove_job_files(job.id)
        raise
    pipeline.enqueue(job.id)
    return job.id


def _read_link_metadata(job: Transcription, source: Source, start: float | None,
                        end: float | None) -> None:
    """A link that cannot work is refused now (400, no job); its title names the job."""
    try:
        metadata = probe_link(source, start=start, end=end, config=current_app.config)
    except LinkRefused as exc:
        raise APIError(400, str(exc)) from None
    names = stored_names(metadata, source.kind) if metadata is not None else None
    if names is not None:
        job.audio_file_name, job.audio_file_path = names


def check_unfinished_limit(user_id: int) -> None:
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
