"""JOB_QUEUE=celery with a real Redis (db 10) and two `celery -A celery_app worker`
processes: jobs spread over both, and a worker killed mid-job leaves its job to the other,
sent to the transcription service once."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import bearer, login
from database import db
from models import Transcription
from runner_processes import start_runner, stop_gracefully, wait_ready
from test_jobs import worker_env
from test_pipeline import (pipeline_config, setup, talk, upload, wait_for,  # noqa: F401
                           wait_until_true)

pytestmark = pytest.mark.slow  # two Celery worker processes and a real Redis: tens of seconds

BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/10")


@pytest.fixture
def broker():
    import redis  # installed with celery[redis]
    client = redis.Redis.from_url(BROKER)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {BROKER} (.ci/run starts one)")
    client.flushdb()
    yield BROKER
    client.flushdb()


@pytest.fixture
def celery_workers(tmp_path, broker):
    processes: list[tuple[subprocess.Popen, Path]] = []

    def start(env: dict, count: int = 2) -> list[subprocess.Popen]:
        for _ in range(count):
            name = f"w{len(processes)}"
            log_path = tmp_path / f"celery-{name}.log"
            processes.append((start_runner(
                "celery", {**env, "JOB_QUEUE": "celery", "CELERY_BROKER_URL": broker},
                log_path, name), log_path))
        wait_ready("celery", processes)
        return [p for p, _ in processes]
    start.logs = lambda: [path.read_text() for _, path in processes]
    yield start
    for process, _path in processes:
        stop_gracefully(process)


def celery_setup(setup, broker):
    return setup(JOB_QUEUE="celery", CELERY_BROKER_URL=broker, JOB_POLL_SECONDS=0.5,
                 JOB_LEASE_SECONDS=10, EXECUTOR_MAX_WORKERS=0)


def test_jobs_spread_over_two_celery_workers(setup, make_user, fake_whisper, fake_openai,
                                             talk, broker, celery_workers):
    app, client, headers = celery_setup(setup, broker)
    fake_whisper.processing_polls = 4  # each job holds its worker a little while
    celery_workers(worker_env(app, fake_whisper, fake_openai))
    make_user("bob")
    everyone = [headers, bearer(login(client, "bob"))]
    ids = [upload(client, everyone[i % 2], talk) for i in range(4)]
    for index, job_id in enumerate(ids):
        job = wait_for(client, everyone[index % 2], job_id, timeout=90)
        assert job["status"] == "completed", job
    logs = celery_workers.logs()
    received = [log.count("Task ezra.run_job[") for log in logs]
    assert all(count >= 1 for count in received), received  # both workers ran jobs
    assert sorted(s["transcription_id"] for s in fake_whisper.submits) == sorted(ids)


def test_a_killed_celery_worker_leaves_its_job_to_the_other(setup, fake_whisper, fake_openai,
                                                           talk, broker, celery_workers):
    app, client, headers = celery_setup(setup, broker)
    fake_whisper.never_finish = True
    workers = celery_workers(worker_env(app, fake_whisper, fake_openai))
    job_id = upload(client, headers, talk)
    wait_until_true(lambda: fake_whisper.polls, 60, "poll (the job submitted and polled)")
    with app.app_context():
        owner = db.session.get(Transcription, uuid.UUID(job_id)).lease_owner
        db.session.commit()
    running = next(w for w in workers if owner.split(":")[1] == str(w.pid))
    survivor = next(w for w in workers if w is not running)
    running.send_signal(signal.SIGKILL)
    running.wait(timeout=10)
    fake_whisper.never_finish = False
    job = wait_for(client, headers, job_id, timeout=60)
    assert job["status"] == "completed", job
    assert len(fake_whisper.submits) == 1  # resumed by polling, not sent again
    assert survivor.poll() is None
    with app.app_context():
        assert db.session.get(Transcription, uuid.UUID(job_id)).attempts == 2
