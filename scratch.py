"""Scratch files on disk: what each user holds, and the sweep that frees them.

A job keeps its source audio in `jobs/<id>/` until its transcript is stored. Failed and
cancelled jobs keep it so that a retry can resume, but only for an admin-set retention
(setting `scratch_retention_hours`, default 24); uploads cut off by a killed worker leave
temporary files in `incoming/`; and each user's scratch is capped (MAX_SCRATCH_MB_PER_USER),
since final jobs do not count against the unfinished-jobs limit.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from database import db
from errors import APIError
from models import FINAL_STATUSES, JobStatus, Transcription, as_utc, utcnow
from storage import job_dir, storage_root, upload_tmp_dir

log = logging.getLogger("ezra.scratch")

SETTING_SCRATCH_RETENTION_HOURS = "scratch_retention_hours"
DEFAULT_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 24 * 365
# An upload still streaming rewrites its temporary file all the time; one untouched for an
# hour belongs to a request that died. A job folder without a row is that young only while
# its upload is being accepted.
ORPHAN_AGE = timedelta(hours=1)
SWEEP_EVERY_SECONDS = 300

_last_sweep = 0.0
_sweep_lock = threading.Lock()


def parse_retention_hours(value: str | None) -> int | None:
    """Whole hours 0..8760 as the setting stores them, or None when not such a number."""
    if value is None or not re.fullmatch(r"[0-9]{1,4}", value.strip()):
        return None
    hours = int(value.strip())
    return hours if hours <= MAX_RETENTION_HOURS else None


def retention() -> timedelta:
    from system_settings import get_setting
    hours = parse_retention_hours(get_setting(SETTING_SCRATCH_RETENTION_HOURS))
    return timedelta(hours=DEFAULT_RETENTION_HOURS if hours is None else hours)


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # removed meanwhile
    return total


def user_scratch_bytes(user_id: int) -> int:
    """Bytes in the scratch folders of the user's jobs (completed jobs hold none)."""
    ids = db.session.execute(select(Transcription.id).where(
        Transcription.user_id == user_id,
        Transcription.status != JobStatus.COMPLETED)).scalars().all()
    return sum(folder_bytes(job_dir(job_id)) for job_id in ids)


def check_user_scratch(user_id: int, incoming_bytes: int) -> None:
    """Refuse an upload that would take the user's scratch past the cap (before reading it)."""
    cap = current_app.config["MAX_SCRATCH_MB_PER_USER"] * 1024 * 1024
    used = user_scratch_bytes(user_id)
    if used + incoming_bytes > cap:
        hours = int(retention().total_seconds() // 3600)
        raise APIError(413, f"Your unfinished, failed and cancelled transcriptions already hold "
                            f"{used // (1024 * 1024)} MB of audio on the server (limit "
                            f"{cap // (1024 * 1024)} MB); wait for them to finish, or for failed "
                            f"ones to be cleared ({hours} hours after they stopped)")


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    except OSError:
        return None


def sweep() -> dict[str, int]:
    """Remove scratch of final jobs past the retention, job folders without a job, and
    temporary files of uploads that died. Returns counts per kind."""
    now = utcnow()
    keep_final_until = now - retention()
    removed = {"final": 0, "orphaned": 0, "incoming": 0}
    jobs_root = storage_root() / "jobs"
    folders = {}
    if jobs_root.is_dir():
        for entry in jobs_root.iterdir():
            try:
                folders[uuid.UUID(entry.name)] = entry
            except ValueError:
                continue
    ids = list(folders)
    rows = {}
    for start in range(0, len(ids), 1000):
        rows.update((job_id, (status, updated)) for job_id, status, updated in db.session.execute(
            select(Transcription.id, Transcription.status, Transcription.updated_at)
            .where(Transcription.id.in_(ids[start:start + 1000]))).all())
    db.session.commit()
    for job_id, folder in folders.items():
        row = rows.get(job_id)
        if row is None:
            modified = _mtime(folder)
            if modified is None or modified > now - ORPHAN_AGE:
                continue
            kind = "orphaned"
        elif row[0] in FINAL_STATUSES and row[1] is not None and as_utc(row[1]) < keep_final_until:
            kind = "final"
        else:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed[kind] += 1
    for path in upload_tmp_dir().iterdir():
        modified = _mtime(path)
        if path.is_file() and modified is not None and modified < now - ORPHAN_AGE:
            path.unlink(missing_ok=True)
            removed["incoming"] += 1
    if any(removed.values()):
        log.info("event=scratch_swept final=%d orphaned=%d incoming=%d", removed["final"],
                 removed["orphaned"], removed["incoming"])
    return removed


def sweep_if_due() -> None:
    """Called by the job recovery loop; one sweep per process every few minutes."""
    global _last_sweep
    with _sweep_lock:
        if time.monotonic() - _last_sweep < SWEEP_EVERY_SECONDS and _last_sweep:
            return
        _last_sweep = time.monotonic()
    sweep()


@click.command("sweep-scratch")
@with_appcontext
def sweep_scratch_command() -> None:
    """Remove scratch files of old final jobs and of killed uploads now (e.g. from cron)."""
    removed = sweep()
    click.echo(" ".join(f"{kind}={count}" for kind, count in removed.items()))


def init_app(app: Flask) -> None:
    app.cli.add_command(sweep_scratch_command)
