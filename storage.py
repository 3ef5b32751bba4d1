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


def legacy_document_path(recorded: str | None, config=None) -> str | None:
    """A document path recorded by the earlier implementation, if it still lies inside the
    legacy files folder (relative paths were relative to the old app folder), resolved
    (symlinks followed, so none leads out). `config`: the app's, when there is no app context
    (the download lane). With os.path on strings: pathlib's objects were a third of the cost
    of a legacy download's check."""
    if not recorded:
        return None
    legacy_root = _resolved((config or current_app.config)["LEGACY_FILES_DIR"])
    resolved = os.path.realpath(os.path.join(os.path.dirname(legacy_root), recorded))
    inside = resolved.startswith(legacy_root.rstrip(os.sep) + os.sep)
    if not inside or not os.path.isfile(resolved):
        return None
    return resolved


@functools.lru_cache(maxsize=8)
def _resolved(folder: str) -> str:
    """The configured folder, resolved once per process (a download read it every time)."""
    return os.path.realpath(folder)


def remove_legacy_documents(*recorded: str | None) -> None:
    for raw in recorded:
        path = legacy_document_path(raw)
        if path is not None:
            try:
                os.remove(path)
            except OSError:
                pass
