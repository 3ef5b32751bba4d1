"""The job queue (jobs.py): fair claims, SKIP LOCKED, pull across processes, dead owners,
`flask worker` and web-only processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
import requests

import jobs
from conftest import ROOT, TEST_DATABASE_URL, TEST_SECRET
from database import db
from models import Transcription, User, utcnow
from password import hash_password
from runner_processes import start_runner, stop_gracefully
from test_pipeline import pipeline_config, setup, talk, upload, wait_for  # noqa: F401


def add_users(app, *names) -> dict[str, int]:
    with app.app_context():
        users = [User(username=n, password_hash=hash_password("x" * 12)) for n in names]
        db.session.add_all(users)
        db.session.commit()
        return {u.username: u.id for u in users}


def add_jobs(app, owners: list[int]) -> list[uuid.UUID]:
    """One submitted job per entry, oldest first, a second apart."""
    start = utcnow() - timedelta(minutes=10)
    ids = []
    with app.app_context():
        for index, user_id in enumerate(owners):
            created = start + timedelta(seconds=index)
            job = Transcription(id=uuid.uuid4(), user_id=user_id, status="submitted",
                                source_type="upload", created_at=created, updated_at=created)
            db.session.add(job)
            ids.append(job.id)
        db.session.commit()
    return ids


def claim_all(app, owner="test:1:0:x") -> list[uuid.UUID]:
    claimed = []
    with app.app_context():
        while (job_id := jobs.claim_next(owner)) is not None:
            claimed.append(job_id)
    return claimed


def test_claims_are_fair_between_users(app):
    users = add_users(app, "busy", "newcomer")
    busy, newcomer = users["busy"], users["newcomer"]
    a1, a2, a3, b1 = add_jobs(app, [busy, busy, busy, newcomer])
    # The busy user's first job is oldest; then the newcomer's first comes before the busy
    # user's backlog, although it was submitted last.
    assert claim_all(app) == [a1, b1, a2, a3]
    with app.app_context():
        rows = db.session.query(Transcription).all()
        assert all(r.lease_owner == "test:1:0:x" and r.attempts == 1 for r in rows)


def test_a_running_job_keeps_its_place_in_its_users_queue(app):
    users = add_users(app, "busy", "newcomer")
    a1, a2, b1 = add_jobs(app, [users["busy"], users["busy"], users["newcomer"]])
    with app.app_context():
        assert jobs.claim_next("test:1:0:first") == a1  # now running
    assert claim_all(app) == [b1, a2]


def test_finished_and_leased_jobs_are_not_claimed(app):
    users = add_users(app, "u")
    done, leased, expired = add_jobs(app, [users["u"]] * 3)
    with app.app_context():
        db.session.get(Transcription, done).status = "completed"
        db.session.get(Transcription, leased).lease_expires_at = utcnow() + timedelta(minutes=1)
        db.session.get(Transcription, expired).lease_expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert claim_all(app) == [expired]


def test_a_claim_that_meets_the_exit_is_handed_straight_back(app, monkeypatch):
    """The process began exiting while a slot was claiming: the job is not started, its lease
    and attempt are given back, and the slot stops claiming."""
    [job_id] = add_jobs(app, [add_users(app, "exiting")["exiting"]])
    real_claim = jobs.claim_next

    def claim_then_exit(owner, count_attempt=True):
        claimed = real_claim(owner, count_attempt)
        jobs._draining.set()  # gunicorn's post_request hook, between claim and start
        return claimed

    monkeypatch.setattr(jobs, "claim_next", claim_then_exit)
    try:
        with app.app_context():
            assert jobs.runner_for(app).pump() == 0
    finally:
        jobs._draining.clear()
    with app.app_context():
        job = db.session.get(Transcription, job_id)
        assert (job.lease_owner, job.attempts, job.status) == (None, 0, "submitted")
        assert job.lease_expires_at is not None  # claimable at once by another process
    assert jobs.runner_for(app).free_slots() == jobs.runner_for(app).slots


def test_concurrent_claimers_never_share_a_job(make_app):
    app = make_app()
    users = add_users(app, *[f"user{i}" for i in range(5)])
    ids = add_jobs(app, [users[f"user{i % 5}"] for i in range(40)])
    claimed: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def claimer(index: int) -> None:
        claimed[index] = claim_all(app, owner=f"test:{index}:0:x")
    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [job_id for part in claimed for job_id in part]
    assert sorted(everything) == sorted(ids)  # each exactly once
    with app.app_context():
        assert {r.attempts for r in db.session.query(Transcription).all()} == {1}


def test_claims_work_on_sqlite(tmp_path):
    from app import create_app
    from conftest import base_config, upgrade_database
    app = create_app(base_config(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/ezra.sqlite3"))
    upgrade_database(app)
    users = add_users(app, "busy", "newcomer")
    a1, a2, b1 = add_jobs(app, [users["busy"], users["busy"], users["newcomer"]])
    assert claim_all(app) == [a1, b1, a2]


# Dead owners --------------------------------------------------------------------------------

def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait(timeout=30)
    return process.pid


def test_owner_liveness_on_this_host():
    host = socket.gethostname()
    me = jobs.new_owner()
    assert me.startswith(f"{host}:{os.getpid()}:")
    assert not jobs.owner_is_dead_here(me)
    assert jobs.owner_is_dead_here(f"{host}:{dead_pid()}:12345.abcd")
    # The pid exists but was started at another time: it is a reused pid.
    assert jobs.owner_is_dead_here(f"{host}:{os.getpid()}:1.abcd")
    # Another host's owner, or a malformed one, is never judged from here.
    assert not jobs.owner_is_dead_here(f"other-host:{dead_pid()}:1.abcd")
    assert not jobs.owner_is_dead_here("garbage")


def test_a_killed_process_not_yet_reaped_is_dead():
    """A SIGKILLed worker stays a zombie until its parent (or a container's init) reaps it;
    its pid still answers signal 0, but it runs nothing."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        owner = f"{socket.gethostname()}:{process.pid}:{jobs._start_ticks(process.pid)}.abcd"
        assert not jobs.owner_is_dead_here(owner)
        process.kill()
        for _ in range(200):  # until the kernel has made it a zombie (bounded: 2 s)
            if jobs._start_ticks(process.pid) is None:
                break
            threading.Event().wait(0.01)
        os.kill(process.pid, 0)  # still there: not reaped
        assert jobs.owner_is_dead_here(owner)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_stale_leases_of_dead_processes_are_taken_over(app):
    users = add_users(app, "u")
    dead, alive, elsewhere = add_jobs(app, [users["u"]] * 3)
    host = socket.gethostname()
    until = utcnow() + timedelta(minutes=10)
    with app.app_context():
        for job_id, owner in ((dead, f"{host}:{dead_pid()}:99.a"),
                              (alive, jobs.new_owner()), (elsewhere, "far-away:1:1.a")):
            row = db.session.get(Transcription, job_id)
            row.lease_owner, row.lease_expires_at = owner, until
        db.session.commit()
        assert jobs.take_over_dead_owners() == 1
    assert claim_all(app) == [dead]


# Across processes ---------------------------------------------------------------------------

def worker_env(app, fake_whisper, fake_openai, **extra) -> dict:
    env = {**os.environ, "DATABASE_URL": TEST_DATABASE_URL, "JWT_SECRET_KEY": TEST_SECRET,
           "STORAGE_DIR": app.config["STORAGE_DIR"], "EXECUTOR_MAX_WORKERS": "1",
           "JOB_POLL_SECONDS": "0.5", "TRANSCRIBE_ENGINE": "remote",
           "TRANSCRIBE_API_URL": fake_whisper.submit_url,
           "GET_RESULT_TRANSCRIBE_API_URL": fake_whisper.result_url,
           "TRANSCRIBE_API_KEY": fake_whisper.api_key, "TRANSCRIBE_POLL_MAX_SECONDS": "0.2",
           "DEEPSEEK_BASE_URL": fake_openai.base_url, "DEEPSEEK_API_KEY": fake_openai.api_key,
           "JOB_LEASE_SECONDS": "10",
           # Every job must reach the service: the same audio is submitted many times.
           "REUSE_FINISHED_WORK": "false"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def start_worker(tmp_path):
    processes = []

    def start(env: dict) -> subprocess.Popen:
        process = start_runner("local", env, tmp_path / f"worker-{len(processes)}.log")
        processes.append(process)
        return process
    yield start
    for process in processes:
        stop_gracefully(process)


def lease_owner(app, job_id: str) -> str | None:
    with app.app_context():
        owner = db.session.get(Transcription, uuid.UUID(job_id)).lease_owner
        db.session.commit()
        return owner


def test_a_job_waiting_on_a_busy_instance_is_started_by_another_instances_free_slot(
        setup, fake_whisper, fake_openai, talk, start_worker):
    # This instance has one slot; the second job must not wait for it.
    app, client, headers = setup(EXECUTOR_MAX_WORKERS=1, JOB_POLL_SECONDS=0.5)
    fake_whisper.never_finish = True
    worker = start_worker(worker_env(app, fake_whisper, fake_openai))
    first = upload(client, headers, talk)
    second = upload(client, headers, talk)
    for job_id in (first, second):
        assert wait_for(client, headers, job_id, statuses=("transcribing",),
                        timeout=30)["status"] == "transcribing"
    owners = {lease_owner(app, first), lease_owner(app, second)}
    pids = {owner.split(":")[1] for owner in owners}
    assert pids == {str(os.getpid()), str(worker.pid)}  # one on each instance
    for job_id in (first, second):
        client.post(f"/transcriptions/{job_id}/cancel", headers=headers)
    for job_id in (first, second):
        assert wait_for(client, headers, job_id, timeout=30)["status"] == "cancelled"


def test_a_web_only_instance_leaves_its_jobs_to_a_worker(setup, fake_whisper, fake_openai,
                                                          talk, start_worker):
    app, client, headers = setup(EXECUTOR_MAX_WORKERS=0)
    start_worker(worker_env(app, fake_whisper, fake_openai))
    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id, timeout=60)["status"] == "completed"
    assert "ezra_runner" not in app.extensions or not app.extensions["ezra_runner"].threads
    assert len(fake_whisper.submits) == 1


def test_a_dead_processes_job_is_taken_at_start_up_not_after_its_lease(
        setup, fake_whisper, fake_openai, talk, start_worker):
    app, client, headers = setup(PIPELINE_ENABLED=False)
    job_id = upload(client, headers, talk)
    with app.app_context():  # as if its runner was SIGKILLed with ten minutes of lease left
        row = db.session.get(Transcription, uuid.UUID(job_id))
        row.status, row.attempts = "transcribing", 1
        row.lease_owner = f"{socket.gethostname()}:{dead_pid()}:99.dead"
        row.lease_expires_at = utcnow() + timedelta(minutes=10)
        db.session.commit()
    start_worker(worker_env(app, fake_whisper, fake_openai))
    job = wait_for(client, headers, job_id, timeout=60)
    assert job["status"] == "completed"


def test_worker_refuses_zero_slots(app):
    runner = app.test_cli_runner()
    app.config["EXECUTOR_MAX_WORKERS"] = 0
    result = runner.invoke(args=["worker"])
    assert result.exit_code != 0
    assert "EXECUTOR_MAX_WORKERS=0" in result.output


@pytest.mark.slow
def test_kill_9_of_the_whole_service_then_restart_continues_the_job_at_once(
        setup, fake_whisper, fake_openai, talk, tmp_path):
    """gunicorn (two workers, slots started by gunicorn.conf.py) is SIGKILLed mid-job with a
    minute of lease left; the restarted service takes the job over at start-up."""
    from test_gunicorn import free_port
    app, client, headers = setup(PIPELINE_ENABLED=False)
    env = worker_env(app, fake_whisper, fake_openai, JOB_LEASE_SECONDS=60,
                     EXECUTOR_MAX_WORKERS=1, PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")

    def start_service(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
             f"127.0.0.1:{free_port()}", "--workers", "2", "wsgi:app"],
            cwd=ROOT, env=env, stdout=open(tmp_path / f"{name}.log", "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
    fake_whisper.never_finish = True
    first = start_service("first")
    try:
        job_id = upload(client, headers, talk)
        with app.app_context():
            jobs.notify()  # this test app runs no slots; the service's take the job
        wait_for(client, headers, job_id, statuses=("transcribing",), timeout=60)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    with app.app_context():
        row = db.session.get(Transcription, uuid.UUID(job_id))
        assert row.lease_expires_at > utcnow() + timedelta(seconds=30)  # far from expiring
        db.session.commit()
    fake_whisper.never_finish = False
    second = start_service("second")
    try:
        job = wait_for(client, headers, job_id, timeout=30)
        assert job["status"] == "completed", (tmp_path / "second.log").read_text()[-2000:]
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)


# Drain on exit, through the supported hooks only: a plain interpreter exit joins the job
# pool's threads (concurrent.futures) before atexit hooks run, so there a running job
# finishes instead of handing back; gunicorn's worker_exit and `flask worker`'s signal
# handler set the drain flag first.

def job_row(app, job_id: str) -> Transcription:
    with app.app_context():
        row = db.session.get(Transcription, uuid.UUID(job_id))
        db.session.expunge(row)
        db.session.commit()
        return row


def wait_for_row(app, job_id: str, ready, timeout: float) -> Transcription:
    deadline = time.monotonic() + timeout
    while True:
        row = job_row(app, job_id)
        if ready(row) or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_to_a_worker_hands_its_running_job_back(setup, fake_whisper, fake_openai,
                                                          talk, start_worker, tmp_path):
    app, client, headers = setup(EXECUTOR_MAX_WORKERS=0)
    fake_whisper.never_finish = True
    worker = start_worker(worker_env(app, fake_whisper, fake_openai))
    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id, statuses=("transcribing",),
                    timeout=60)["status"] == "transcribing"
    assert lease_owner(app, job_id).split(":")[1] == str(worker.pid)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, (tmp_path / "worker-0.log").read_text()[-2000:]
    row = job_row(app, job_id)
    # Handed back: no owner, claimable at once, the attempt given back, not failed.
    assert row.lease_owner is None and row.lease_expires_at <= utcnow()
    assert row.attempts == 0 and row.status == "transcribing"
    client.post(f"/transcriptions/{job_id}/cancel", headers=headers)


@pytest.mark.slow
def test_gunicorn_recycling_hands_a_running_job_to_the_next_worker(
        setup, fake_whisper, fake_openai, talk, tmp_path):
    """max_requests recycles the only worker mid-job: worker_exit drains it, the job is
    handed back and the next worker claims it at once (attempt 1, not a second attempt
    after a lease taken from a dead or killed owner)."""
    from test_gunicorn import free_port
    app, client, headers = setup(PIPELINE_ENABLED=False)
    env = worker_env(app, fake_whisper, fake_openai, JOB_LEASE_SECONDS=60,
                     EXECUTOR_MAX_WORKERS=1, PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics")
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    fake_whisper.never_finish = True
    service = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "--max-requests", "10",
         "--max-requests-jitter", "0", "wsgi:app"],
        cwd=ROOT, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        job_id = upload(client, headers, talk)
        with app.app_context():
            jobs.notify()  # this test app runs no slots; the service's worker takes the job
        wait_for(client, headers, job_id, statuses=("transcribing",), timeout=60)
        first_owner = wait_for_row(app, job_id, lambda r: r.lease_owner, 30).lease_owner
        assert first_owner, log_path.read_text()[-2000:]
        for _ in range(15):  # past max_requests: the worker is recycled
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            except requests.RequestException:  # the worker is between lives
                time.sleep(0.2)
        row = wait_for_row(app, job_id, lambda r: r.lease_owner not in (None, first_owner),
                           60)
        log = log_path.read_text()
        assert "Autorestarting worker" in log, log[-2000:]
        assert row.lease_owner not in (None, first_owner), log[-2000:]
        assert row.lease_owner.split(":")[1] != first_owner.split(":")[1]
        assert row.attempts == 1, log[-2000:]  # handed back, not taken from a dead owner
        client.post(f"/transcriptions/{job_id}/cancel", headers=headers)
        assert wait_for(client, headers, job_id, timeout=30)["status"] == "cancelled"
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=60)
