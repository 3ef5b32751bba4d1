"""JOB_QUEUE=celery: jobs run in Celery workers, on any machine.

    celery -A celery_app worker --pool threads --concurrency 4

The web tier (and its recovery pass) hands each claimable job id to Celery with a queued lease
(jobs.send_to_celery); the task claims the job's PostgreSQL lease like any runner, so one job
runs in one place even if a message is delivered twice, and a job whose runner died is sent again
once its lease expires (at once when it died on a host where a web process runs). Uploads are read
from STORAGE_DIR: it must be a volume every worker sees.
"""
from __future__ import annotations

import logging
import os
import uuid

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from flask import Flask

from config import load_config

log = logging.getLogger("ezra.celery")

TASK_NAME = "ezra.run_job"

celery = Celery("ezra", broker=load_config()["CELERY_BROKER_URL"])
celery.conf.update(
    task_ignore_result=True,
    # One job at a time per pool thread: a prefetched message would wait behind a long job.
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
app = celery  # `celery -A celery_app` finds it under this name too

_flask_app: Flask | None = None


def flask_app() -> Flask:
    global _flask_app
    if _flask_app is None:
        from app import create_app
        _flask_app = create_app()
    return _flask_app


def send_job(web_app: Flask, job_id: uuid.UUID) -> None:
    """From the web tier: put the job id on the broker (CELERY_BROKER_URL of web_app)."""
    celery.conf.broker_url = web_app.config["CELERY_BROKER_URL"]
    celery.send_task(TASK_NAME, args=[str(job_id)])
    log.info("job=%s event=sent_to_celery", job_id)


@celery.task(name=TASK_NAME)
def run_job(job_id: str) -> None:
    import jobs
    with flask_app().app_context():
        jobs.run_job(uuid.UUID(job_id))


@worker_ready.connect
def _take_over_dead_owners(**_kwargs) -> None:
    # A worker killed on this machine is noticed by the next one to start here.
    import jobs
    with flask_app().app_context():
        jobs.take_over_dead_owners()
        jobs.notify()
    log.info("event=celery_worker_ready pid=%s", os.getpid())


@worker_shutting_down.connect
def _hand_back(**_kwargs) -> None:
    # Warm shutdown (SIGTERM): running jobs stop at their next checkpoint and hand back.
    import jobs
    jobs._drain()
