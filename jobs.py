"""The job queue: runner slots, claims, leases, recovery. It knows no step: pipeline.py
registers what running a job means (`set_job_handler`).

Pull, not push: each process keeps EXECUTOR_MAX_WORKERS runner slots (threads of its
Flask-Executor pool). A free slot claims the oldest claimable job in one statement
(`FOR UPDATE SKIP LOCKED` on PostgreSQL), fair between users: jobs are ranked by their place in
their user's own queue first, so one user's backlog never holds back another user's first job.
Slots are woken at once by PostgreSQL `LISTEN/NOTIFY` when a job is submitted or handed back,
and look every JOB_POLL_SECONDS anyway (missed notifications, expired leases, SQLite).

A job runs where it holds the lease (`lease_owner` = host:pid:process-start.run,
`lease_expires_at`), renewed several times a lease. A lease whose owner ran on this host in a
process that no longer exists is taken at once (at start-up and every recovery pass); any
other dead owner's lease expires after JOB_LEASE_SECONDS. An exiting process hands its
unfinished jobs back with an already expired lease, so they are claimable at once.
"""
from __future__ import annotations

import atexit
import logging
import os
import random
import select as select_module
import socket
import threading
import signal
import time
import uuid
from datetime import datetime, timedelta
from typing import Callable

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_executor import Executor
from sqlalchemy import func, or_, select, text, update

import models as m
import scratch
import webhooks
from database import db
from logging_setup import request_id_var
from metrics import BUSY_SLOTS, QUEUE_WAIT_SECONDS, SLOTS
from models import Transcription, as_utc, utcnow

log = logging.getLogger("ezra.jobs")

NOTIFY_CHANNEL = "ezra_jobs"
# JOB_QUEUE=celery: the lease a job holds while its id waits in Celery's queue; the task's
# claim takes it over, and when it expires (a lost message) the job is sent again.
QUEUED_OWNER = "queued:celery"

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
    """Runner slots start in the processes that serve or work: at a gunicorn worker's start
    (gunicorn.conf.py), in `flask worker`, or at the first request; never in other CLI
    commands (`flask db upgrade` must not take jobs). None with EXECUTOR_MAX_WORKERS=0.

    With JOB_RECOVERY_INTERVAL_SECONDS=0 (tests) they start only when this process accepts a
    job, so a test app never takes another test's jobs."""
    if runners_start_on_their_own(app):
        app.before_request(lambda: start_runner(app))
    app.cli.add_command(worker_command)


def runners_start_on_their_own(app: Flask) -> bool:
    return bool(app.config["PIPELINE_ENABLED"] and _has_slots(app)
                and app.config["JOB_RECOVERY_INTERVAL_SECONDS"] > 0)


def _has_slots(app: Flask) -> bool:
    # With Celery, every web process keeps one "slot" that sends claimable jobs to Celery.
    return app.config["JOB_QUEUE"] == "celery" or app.config["EXECUTOR_MAX_WORKERS"] > 0


def start_runner(app: Flask) -> None:
    if runners_start_on_their_own(app):
        runner_for(app).start()


def enqueue(job_id: uuid.UUID) -> None:
    """A job was submitted or handed back: wake a free slot here or anywhere."""
    if not current_app.config["PIPELINE_ENABLED"]:
        return
    notify()
    app = current_app._get_current_object()
    if _has_slots(app):
        runner_for(app).start()
        runner_for(app).wake.set()


def notify() -> None:
    """Wake the runner slots of every process (PostgreSQL; delivered when committed)."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
        db.session.commit()


# Claiming, leases, recovery -------------------------------------------------------------------

def _process_start() -> str:
    """When this process started (clock ticks since boot, from /proc): with the pid it names
    the process even after the pid is reused."""
    return _start_ticks(os.getpid()) or "0"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks; None when it is gone or a zombie (killed,
    not yet reaped: a container's init may take its time), "?" when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    # Field 3 is the state, field 22 the start time; the command name in parentheses may hold
    # spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else "?"


def new_owner() -> str:
    """`host:pid:start.run`: the host and pid first (what operators and tools read), the
    process start and a per-run token last."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start()}.{uuid.uuid4().hex[:8]}"


def owner_is_dead_here(owner: str) -> bool:
    """The owner ran on this host in a process that no longer exists (False when unsure)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, another user's
    started = _start_ticks(pid)
    if started is None:
        return True  # a zombie: killed, waiting to be reaped
    recorded = parts[2].split(".", 1)[0] if "." in parts[2] else None
    if recorded and recorded not in ("0", "?"):
        return started != "?" and started != recorded  # pid reused
    return False


def take_over_dead_owners() -> int:
    """Expire the leases of this host's dead processes, so any slot claims their jobs now."""
    now = utcnow()
    rows = db.session.execute(select(Transcription.id, Transcription.lease_owner).where(
        Transcription.status.not_in(m.FINAL_STATUSES),
        Transcription.lease_owner.like(socket.gethostname() + ":%"),
        Transcription.lease_expires_at >= now)).all()
    db.session.commit()
    taken = 0
    for job_id, owner in rows:
        if owner_is_dead_here(owner):
            result = db.session.execute(
                update(Transcription)
                .where(Transcription.id == job_id, Transcription.lease_owner == owner)
                .values(lease_expires_at=now).execution_options(synchronize_session=False))
            db.session.commit()
            if result.rowcount:
                taken += 1
                log.info("job=%s event=dead_owner owner=%s: its lease is expired now",
                         job_id, owner)
    return taken


def _lease_seconds() -> int:
    return current_app.config["JOB_LEASE_SECONDS"]


def _claim(job_id: uuid.UUID, owner: str) -> bool:
    now = utcnow()
    result = db.session.execute(
        update(Transcription)
        .where(Transcription.id == job_id,
               Transcription.status.not_in(m.FINAL_STATUSES),
               or_(Transcription.lease_expires_at.is_(None),
                   Transcription.lease_expires_at < now,
                   Transcription.lease_owner == QUEUED_OWNER))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=_lease_seconds()),
                attempts=Transcription.attempts + 1)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def _release(job_id: uuid.UUID, owner: str) -> bool:
    """Give the lease up; True when an unfinished job was handed back."""
    # An unfinished job handed back (this process is exiting) gets an already expired lease,
    # so the recovery loop of any other worker claims it at once.
    # A hand-back is no interruption: the attempt it claimed is given back too.
    values: dict = {"lease_owner": None, "lease_expires_at": None}
    if _draining.is_set():
        values.update(lease_expires_at=utcnow(), attempts=Transcription.attempts - 1)
    result = db.session.execute(
        update(Transcription)
        .where(Transcription.id == job_id, Transcription.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return _draining.is_set() and result.rowcount == 1



def _claimable(now: datetime):
    return (Transcription.status.not_in(m.FINAL_STATUSES),
            or_(Transcription.lease_expires_at.is_(None), Transcription.lease_expires_at < now))


def claim_next(owner: str, count_attempt: bool = True) -> uuid.UUID | None:
    """Claim the next job in one statement: the earliest place in its user's own queue
    first (fairness), then the oldest; rows another runner is claiming are skipped.
    `count_attempt=False` when the claim only hands the job to Celery (QUEUED_OWNER)."""
    now = utcnow()
    unfinished = select(
        Transcription.id.label("id"),
        func.row_number().over(partition_by=Transcription.user_id,
                               order_by=(Transcription.created_at, Transcription.id))
        .label("place")).where(Transcription.status.not_in(m.FINAL_STATUSES)).subquery()
    picked = (
        select(Transcription.id)
        .join(unfinished, unfinished.c.id == Transcription.id)
        .where(*_claimable(now))
        .order_by(unfinished.c.place, Transcription.created_at, Transcription.id)
        .limit(1)
        .with_for_update(of=Transcription, skip_locked=True)
        .scalar_subquery())
    row = db.session.execute(
        update(Transcription)
        .where(Transcription.id == picked, *_claimable(now))
        # updated_at stays: it says since when the job waits (submitted, handed back, or
        # the last renewal of a lease that then expired).
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=_lease_seconds()),
                attempts=Transcription.attempts + (1 if count_attempt else 0),
                updated_at=Transcription.updated_at)
        .returning(Transcription.id, Transcription.updated_at)
        .execution_options(synchronize_session=False)).first()
    db.session.commit()
    if row is None:
        return None
    if row[1] is not None and count_attempt:  # a runner starts it (not: sent to Celery)
        QUEUE_WAIT_SECONDS.observe(max((now - as_utc(row[1])).total_seconds(), 0.0))
    return row[0]


def _hand_back(job_id: uuid.UUID, owner: str) -> None:
    """A claimed job that never started: claimable again at once, the attempt given back."""
    db.session.execute(update(Transcription)
                       .where(Transcription.id == job_id, Transcription.lease_owner == owner)
                       .values(lease_owner=None, lease_expires_at=utcnow(),
                               attempts=Transcription.attempts - 1)
                       .execution_options(synchronize_session=False))
    db.session.commit()


_draining = threading.Event()


def _drain() -> None:
    """The process is exiting (gunicorn max_requests recycling, SIGTERM on deploy): queued
    jobs are not started and running ones stop at their next checkpoint and hand back."""
    _draining.set()


# Best effort only. The supported exits drain before the pool's threads are joined:
# gunicorn's worker_exit hook (recycling, stop), `flask worker`'s SIGTERM/SIGINT handler and
# Celery's worker_shutting_down. A plain interpreter exit joins concurrent.futures' threads
# before atexit hooks run, so there running jobs finish rather than hand back; this hook
# only stops run_job callers in other threads and the dispatcher from starting more.
atexit.register(_drain)


class LeaseKeeper(threading.Thread):
    """Renews the lease while the job runs and notices cancellation or a lost lease."""

    def __init__(self, app: Flask, job_id: uuid.UUID, owner: str):
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.app, self.job_id, self.owner = app, job_id, owner
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        lease = app.config["JOB_LEASE_SECONDS"]
        # Renewed six times a lease: a slow database round-trip or two never loses it.
        self.interval = max(0.2, min(lease / 6, 3.0))

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


# Runner slots -------------------------------------------------------------------------------

class Runner:
    """This process's runner slots for one app: a dispatcher thread that claims jobs while a
    slot is free, a LISTEN thread that wakes it, and Flask-Executor's pool that runs them."""

    def __init__(self, app: Flask):
        self.app = app
        self.celery = app.config["JOB_QUEUE"] == "celery"
        self.slots = 0 if self.celery else app.config["EXECUTOR_MAX_WORKERS"]
        self.poll_seconds = app.config["JOB_POLL_SECONDS"]
        self.recovery_seconds = app.config["JOB_RECOVERY_INTERVAL_SECONDS"]
        # Flask-Executor's thread pool, one per app, EXECUTOR_MAX_WORKERS threads: the slots.
        # Each job gets a fresh app context from it (EXECUTOR_PUSH_APP_CONTEXT), so no
        # database session is shared between threads.
        self.executor = Executor()
        if self.slots > 0:
            app.config["EXECUTOR_TYPE"] = "thread"
            app.config["EXECUTOR_PUSH_APP_CONTEXT"] = True
            self.executor.init_app(app)
        self.busy = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self._listen_stop: tuple[int, int] | None = None  # a pipe (read, write)
        self.pid = os.getpid()

    def start(self) -> None:
        with self.lock:
            if self.threads or (self.slots == 0 and not self.celery):
                return
            SLOTS.inc(self.slots)
            self.threads.append(threading.Thread(target=self._dispatch, name="job-slots",
                                                 daemon=True))
            if self.app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
                # stop() writes to this pipe: the LISTEN loop's select ends at once, not
                # at its next timeout.
                self._listen_stop = os.pipe()
                self.threads.append(threading.Thread(target=self._listen, name="job-listen",
                                                     daemon=True))
            # Webhook events of finished jobs go out from the processes that run (or send) jobs.
            self.threads.append(threading.Thread(target=webhooks.send_loop,
                                                 args=(self.app, self.stopped),
                                                 name="webhook-sender", daemon=True))
            for thread in self.threads:
                thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self._listen_stop is not None:
            os.write(self._listen_stop[1], b"x")
        for thread in self.threads:
            thread.join(timeout=10)
        if self.threads:
            SLOTS.dec(self.slots)
        self.threads = []
        if self._listen_stop is not None:
            for fd in self._listen_stop:
                os.close(fd)
            self._listen_stop = None

    def free_slots(self) -> int:
        with self.lock:
            return self.slots - self.busy

    def pump(self) -> int:
        """Claim and start jobs while a slot is free; the number started."""
        if self.celery:
            return send_to_celery(self.app)
        started = 0
        while not (_draining.is_set() or self.stopped.is_set()):
            with self.lock:
                if self.busy >= self.slots:
                    break
                self.busy += 1  # reserved before the claim: never more claims than slots
            owner = new_owner()
            try:
                job_id = claim_next(owner)
            except Exception:
                self._slot_done()
                raise
            if job_id is None:
                self._slot_done(wake=False)
                break
            if _draining.is_set():  # the process began exiting during the claim
                self._slot_done(wake=False)
                _hand_back(job_id, owner)
                break
            BUSY_SLOTS.inc()
            try:
                with _job_request_context(self.app):
                    self.executor.submit(self._run, job_id, owner)
            except RuntimeError:  # the pool is shutting down (interpreter exit): give it back
                BUSY_SLOTS.dec()
                self._slot_done(wake=False)
                _hand_back(job_id, owner)
                raise
            started += 1
        return started

    def _slot_done(self, wake: bool = True) -> None:
        with self.lock:
            self.busy -= 1
        if wake:
            self.wake.set()

    def _run(self, job_id: uuid.UUID, owner: str) -> None:
        try:
            _run_claimed(self.app, job_id, owner)  # in the app context Flask-Executor pushed
        finally:
            BUSY_SLOTS.dec()
            self._slot_done()

    def _dispatch(self) -> None:
        last_recovery = 0.0
        while not self.stopped.is_set() and not _draining.is_set():
            try:
                with self.app.app_context():
                    if time.monotonic() - last_recovery >= self.recovery_seconds:
                        last_recovery = time.monotonic()
                        take_over_dead_owners()
                        scratch.sweep_if_due()  # housekeeping rides on the same timer
                    self.pump()
            except Exception:
                log.warning("claiming jobs failed; trying again", exc_info=True)
            # Jitter keeps many processes from polling in step.
            self.wake.wait(self.poll_seconds * random.uniform(0.8, 1.2))
            self.wake.clear()

    def _listen(self) -> None:
        """LISTEN on a connection of its own; every notification wakes the dispatcher."""
        while not self.stopped.is_set():
            connection = None
            try:
                with self.app.app_context():
                    engine = db.engine
                cargs, cparams = engine.dialect.create_connect_args(engine.url)
                connection = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
                connection.autocommit = True
                connection.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.wake.set()  # anything submitted while not listening
                while not self.stopped.is_set():
                    ready, _, _ = select_module.select(
                        [connection, self._listen_stop[0]], [], [], 1.0)
                    if connection in ready:
                        connection.poll()
                        if connection.notifies:
                            connection.notifies.clear()
                            self.wake.set()
            except Exception:
                log.warning("LISTEN %s failed; polling every %ss until it is back",
                            NOTIFY_CHANNEL, self.poll_seconds, exc_info=True)
                self.stopped.wait(self.poll_seconds)
            finally:
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        pass


def _job_request_context(app: Flask):
    """What Flask-Executor's submit copies into the job: it copies the current request
    context (flask.copy_current_request_context, which raises outside a request), so the
    job gets an empty one of its own, never a real request's (popping that copy at the
    job's end would close the request's streams). POST, not GET: database.py runs GET/HEAD
    statements in autocommit, and a job needs its transactions."""
    return app.test_request_context("/jobs/runner", method="POST")


def runner_for(app: Flask) -> Runner:
    # Keyed by pid too: a runner made before a fork has no threads in the child.
    runner = app.extensions.get("ezra_runner")
    if runner is None or runner.pid != os.getpid():
        runner = app.extensions["ezra_runner"] = Runner(app)
    return runner


def stop_runner(app: Flask) -> None:
    runner = app.extensions.pop("ezra_runner", None)
    if runner is not None:
        runner.stop()


def send_to_celery(app: Flask) -> int:
    """Hand every claimable job to Celery (JOB_QUEUE=celery); the number sent. The queued
    lease makes each job go out once, until it expires unclaimed (a lost message)."""
    from celery_app import send_job
    sent = 0
    while sent < 100 and (job_id := claim_next(QUEUED_OWNER, count_attempt=False)):
        send_job(app, job_id)
        sent += 1
    return sent


def recover_jobs() -> int:
    """One recovery pass now: take over dead owners' leases on this host, then fill this
    process's free slots (or send to Celery); the number of jobs started or sent."""
    app = current_app._get_current_object()
    take_over_dead_owners()
    if not _has_slots(app):
        return 0
    started = runner_for(app).pump()
    if started:
        log.info("event=recovered jobs=%d", started)
    return started


# Running a job ------------------------------------------------------------------------------

def run_job(job_id: uuid.UUID) -> None:
    """Claim this one job and run it in the calling thread (tests, scripts, Celery tasks)."""
    if _draining.is_set():
        return  # this process is exiting: another worker will claim the job
    app = current_app._get_current_object()
    owner = new_owner()
    try:
        if not _claim(job_id, owner):
            return
    except Exception:
        log.warning("job=%s claim failed", job_id, exc_info=True)
        return
    _run_claimed(app, job_id, owner)


def _run_claimed(app: Flask, job_id: uuid.UUID, owner: str) -> None:
    keeper = LeaseKeeper(app, job_id, owner)
    keeper.start()
    try:
        # The runner logs (and writes error rows) under the id of the request that submitted it.
        request_id_var.set(db.session.execute(select(Transcription.request_id).where(
            Transcription.id == job_id)).scalar_one_or_none())
        _job_handler(app, job_id, owner, keeper)
    except Exception:  # even recording the failure failed (database down): retried later
        log.exception("job=%s runner crashed; the lease will expire and it resumes", job_id)
    finally:
        keeper.stopped.set()
        try:
            handed_back = _release(job_id, owner)
            if handed_back:
                notify()  # another process's free slot takes it at once
        except Exception:
            log.warning("job=%s lease release failed", job_id, exc_info=True)
        finally:
            db.session.remove()
            request_id_var.set(None)


def _lease_held(job: Transcription) -> bool:
    """A runner holds the job right now (its lease has not expired)."""
    return job.lease_expires_at is not None and as_utc(job.lease_expires_at) > utcnow()


# `flask --app app worker`: runner slots and no HTTP ----------------------------------------

@click.command("worker")
@click.option("--drain-seconds", default=60.0, show_default=True,
              help="On SIGTERM, how long running jobs get to reach a checkpoint and hand back.")
@with_appcontext
def worker_command(drain_seconds: float) -> None:
    """Run EXECUTOR_MAX_WORKERS runner slots (no HTTP) until SIGTERM or Ctrl-C."""
    app = current_app._get_current_object()
    slots = app.config["EXECUTOR_MAX_WORKERS"]
    if slots == 0:
        raise click.UsageError("EXECUTOR_MAX_WORKERS=0 leaves a worker no slot; set it to 1 "
                               "or more for worker processes")
    runner = runner_for(app)
    runner.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("event=worker_started pid=%s slots=%d", os.getpid(), slots)
    while not stop.wait(1.0):
        pass
    _drain()  # running jobs stop at their next checkpoint and hand back
    deadline = time.monotonic() + drain_seconds
    while runner.free_slots() < slots and time.monotonic() < deadline:
        time.sleep(0.1)
    runner.stop()
    log.info("event=worker_stopped pid=%s", os.getpid())
