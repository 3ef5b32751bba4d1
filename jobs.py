"""The job queue: runner slots, claims, leases, recovery. It knows no step: pipeline.py
registers what running a job means (`set_job_handler`).

- a job runs where it holds the lease (`lease_owner`, `lease_expires_at` on its row), which
  a live runner renews every few seconds; a crashed runner's lease expires and the
  recovery loop of any worker on any machine claims the job again;
- an unfinished job handed back by an exiting process is claimable at once.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Callable

from flask import Flask, current_app
from flask_executor import Executor
from sqlalchemy import or_, select, update

import models as m
from database import db
from logging_setup import request_id_var
from models import Transcription, as_utc, utcnow

log = logging.getLogger("ezra.jobs")
executor = Executor()

# (app, job_id, lease owner, LeaseKeeper) -> None; set by pipeline.py.
JobHandler = Callable[[Flask, uuid.UUID, str, "LeaseKeeper"], None]


def _no_handler(app: Flask, job_id: uuid.UUID, owner: str, keeper: "LeaseKeeper") -> None:
    raise RuntimeError("no job handler: import pipeline before running jobs")


_job_handler: JobHandler = _no_handler


def set_job_handler(handler: JobHandler) -> None:
    global _job_handler
    _job_handler = handler


# Hand-off from the request ------------------------------------------------------------------

def init_app(app: Flask) -> None:
    app.config.setdefault("EXECUTOR_TYPE", "thread")
    app.config.setdefault("EXECUTOR_PROPAGATE_EXCEPTIONS", False)
    executor.init_app(app)
    if app.config["PIPELINE_ENABLED"] and app.config["JOB_RECOVERY_INTERVAL_SECONDS"] > 0:
        app.before_request(lambda: _ensure_recovery_thread(app))
        _ensure_recovery_thread(app)


def enqueue(job_id: uuid.UUID) -> None:
    if current_app.config["PIPELINE_ENABLED"]:
        _submit(job_id)


def _submit(job_id: uuid.UUID) -> None:
    """Queue the job on Flask-Executor's pool with a fresh app context only.

    `executor.submit` would copy the *request* context into the task: that fails outside a
    request (the recovery loop) and would pin the request, with its upload, for the whole
    job. So the pool Flask-Executor built (sized by EXECUTOR_MAX_WORKERS) is used directly.
    """
    app = current_app._get_current_object()
    _queued.add(job_id)

    def task() -> None:
        with app.app_context():
            run_job(job_id)
    executor._self.submit(task)


# Claiming, leases, recovery -------------------------------------------------------------------

_queued: set[uuid.UUID] = set()  # ids waiting in this process's executor queue
_recovery_threads: dict[int, threading.Thread] = {}


def _lease_seconds() -> int:
    return current_app.config["JOB_LEASE_SECONDS"]


def _claim(job_id: uuid.UUID, owner: str) -> bool:
    now = utcnow()
    result = db.session.execute(
        update(Transcription)
        .where(Transcription.id == job_id,
               Transcription.status.not_in(m.FINAL_STATUSES),
               or_(Transcription.lease_expires_at.is_(None),
                   Transcription.lease_expires_at < now))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=_lease_seconds()),
                attempts=Transcription.attempts + 1)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def _release(job_id: uuid.UUID, owner: str) -> None:
    # An unfinished job handed back (this process is exiting) gets an already expired lease,
    # so the recovery loop of any other worker claims it at once.
    # A hand-back is no interruption: the attempt it claimed is given back too.
    values: dict = {"lease_owner": None, "lease_expires_at": None}
    if _draining.is_set():
        values.update(lease_expires_at=utcnow(), attempts=Transcription.attempts - 1)
    db.session.execute(update(Transcription)
                       .where(Transcription.id == job_id, Transcription.lease_owner == owner)
                       .values(**values)
                       .execution_options(synchronize_session=False))
    db.session.commit()


_draining = threading.Event()


def _drain() -> None:
    """The process is exiting (gunicorn max_requests recycling, SIGTERM on deploy): queued
    jobs are not started and running ones stop at their next checkpoint and hand back."""
    _draining.set()


# Runs before concurrent.futures joins its worker threads at interpreter exit (these hooks
# run in reverse order of registration); a plain atexit hook would run only after that.
threading._register_atexit(_drain)


class LeaseKeeper(threading.Thread):
    """Renews the lease while the job runs and notices cancellation or a lost lease."""

    def __init__(self, app: Flask, job_id: uuid.UUID, owner: str):
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.app, self.job_id, self.owner = app, job_id, owner
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        lease = app.config["JOB_LEASE_SECONDS"]
        self.interval = max(0.2, min(lease / 3, 5.0))

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                with self.app.app_context():
                    self.renew()
            except Exception:  # the database may be restarting; the lease covers a while
                log.warning("job=%s lease renewal failed", self.job_id, exc_info=True)

    def renew(self) -> None:
        lease = self.app.config["JOB_LEASE_SECONDS"]
        result = db.session.execute(
            update(Transcription)
            .where(Transcription.id == self.job_id, Transcription.lease_owner == self.owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease))
            .returning(Transcription.cancel_requested))
        row = result.first()
        db.session.commit()
        if row is None:
            self.lost.set()
        elif row[0]:
            self.cancelled.set()

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set() or _draining.is_set()


def _ensure_recovery_thread(app: Flask) -> None:
    # Keyed by pid: a thread started before gunicorn forks does not exist in the worker.
    pid = os.getpid()
    thread = _recovery_threads.get(pid)
    if thread is None or not thread.is_alive():
        thread = threading.Thread(target=_recovery_loop, args=(app,), name="job-recovery",
                                  daemon=True)
        _recovery_threads[pid] = thread
        thread.start()


def _recovery_loop(app: Flask) -> None:
    interval = app.config["JOB_RECOVERY_INTERVAL_SECONDS"]
    while True:
        try:
            with app.app_context():
                recover_jobs()
        except Exception:
            log.warning("job recovery pass failed", exc_info=True)
        time.sleep(interval * random.uniform(0.8, 1.2))  # jitter spreads the workers


def recover_jobs() -> int:
    """Queue every unfinished job that nobody holds; the claim decides who runs it."""
    now = utcnow()
    grace = now - timedelta(seconds=_lease_seconds())
    ids = db.session.execute(
        select(Transcription.id).where(
            Transcription.status.not_in(m.FINAL_STATUSES),
            or_(Transcription.lease_expires_at < now,
                # never claimed: give the process that accepted it time to start it
                (Transcription.lease_expires_at.is_(None)) & (Transcription.updated_at < grace)))
        .order_by(Transcription.created_at).limit(100)).scalars().all()
    db.session.commit()
    queued = 0
    for job_id in ids:
        if job_id not in _queued:
            _submit(job_id)
            queued += 1
    if queued:
        log.info("event=recovered jobs=%d", queued)
    return queued


# Running a job ------------------------------------------------------------------------------

def run_job(job_id: uuid.UUID) -> None:
    _queued.discard(job_id)
    if _draining.is_set():
        return  # this process is exiting: another worker will claim the job
    app = current_app._get_current_object()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
        if not _claim(job_id, owner):
            return
    except Exception:
        log.warning("job=%s claim failed", job_id, exc_info=True)
        return
    keeper = LeaseKeeper(app, job_id, owner)
    keeper.start()
    # The runner logs (and writes error rows) under the id of the request that submitted it.
    request_id_var.set(db.session.execute(select(Transcription.request_id).where(
        Transcription.id == job_id)).scalar_one_or_none())
    try:
        _job_handler(app, job_id, owner, keeper)
    except Exception:  # even recording the failure failed (database down): retried later
        log.exception("job=%s runner crashed; the lease will expire and it resumes", job_id)
    finally:
        keeper.stopped.set()
        try:
            _release(job_id, owner)
        except Exception:
            log.warning("job=%s lease release failed", job_id, exc_info=True)
        finally:
            db.session.remove()
            request_id_var.set(None)


def _lease_held(job: Transcription) -> bool:
    """A runner holds the job right now (its lease has not expired)."""
    return job.lease_expires_at is not None and as_utc(job.lease_expires_at) > utcnow()
