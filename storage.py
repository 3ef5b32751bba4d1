"""Where files live on disk. Paths are built from ids only, never from a username or a
title, so no input can point outside the storage folder."""
from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path

from flask import current_app


def storage_root() -> Path:
    return Path(current_app.config["STORAGE_DIR"]).resolve()


def job_dir(job_id: uuid.UUID, create: bool = False) -> Path:
    path = storage_root() / "jobs" / str(uuid.UUID(str(job_id)))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def upload_tmp_dir() -> Path:
    path = storage_root() / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_job_files(job_id: uuid.UUID) -> None:
    shutil.rmtree(job_dir(job_id), ignore_errors=True)


def legacy_document_path(recorded: str | None) -> Path | None:
    """A document path recorded by the earlier implementation, if it still lies inside the
    legacy files folder (relative paths were relative to the old app folder)."""
    if not recorded:
        return None
    legacy_root = _resolved(current_app.config["LEGACY_FILES_DIR"])
    candidate = Path(recorded)
    if not candidate.is_absolute():
        candidate = legacy_root.parent / candidate
    resolved = candidate.resolve()
    if not resolved.is_relative_to(legacy_root) or not resolved.is_file():
        return None
    return resolved


@functools.lru_cache(maxsize=8)
def _resolved(folder: str) -> Path:
    """The configured folder, resolved once per process (a download read it every time)."""
    return Path(folder).resolve()


def remove_legacy_documents(*recorded: str | None) -> None:
    for raw in recorded:
        path = legacy_document_path(raw)
        if path is not None:
            try:
                os.remove(path)
            except OSError:
                pass
