"""The background job: hand-off from POST /process to the in-process executor."""
from __future__ import annotations

import logging
import os
import uuid

from flask import Flask, current_app
from flask_executor import Executor
from werkzeug.datastructures import FileStorage

from errors import APIError
from models import Transcription
from storage import job_dir, remove_job_files

log = logging.getLogger("ezra.pipeline")
executor = Executor()

UPLOAD_NAME = "source.upload"


def init_app(app: Flask) -> None:
    app.config.setdefault("EXECUTOR_TYPE", "thread")
    app.config["EXECUTOR_MAX_WORKERS"] = app.config["EXECUTOR_MAX_WORKERS"]
    app.config.setdefault("EXECUTOR_PROPAGATE_EXCEPTIONS", False)
    executor.init_app(app)


def accept_upload(job: Transcription, upload: FileStorage) -> None:
    """Keep the streamed upload as the job's source, after checking it holds audio."""
    from audio_service import AudioError, require_audio

    target = job_dir(job.id, create=True) / UPLOAD_NAME
    stream_name = getattr(upload.stream, "name", None)
    try:
        if isinstance(stream_name, str) and os.path.exists(stream_name):
            os.link(stream_name, target)
        else:  # small uploads may arrive in memory in tests; copy them in chunks
            upload.save(target)
        require_audio(target)
    except AudioError as exc:
        remove_job_files(job.id)
        raise APIError(400, f"The uploaded file cannot be used: {exc}") from None
    except OSError:
        log.exception("job=%s could not store the upload", job.id)
        remove_job_files(job.id)
        raise APIError(507, "The server cannot store the upload right now (storage full or "
                            "unavailable); please try again later") from None
    job.audio_file_path = str(target)


def enqueue(job_id: uuid.UUID) -> None:
    if current_app.config["PIPELINE_ENABLED"]:
        executor.submit(run_job, job_id)


def run_job(job_id: uuid.UUID) -> None:
    raise NotImplementedError  # replaced by the pipeline issue
