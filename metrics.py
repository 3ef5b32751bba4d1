"""Prometheus metrics (prometheus-client), right under several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it), every process writes its
samples to files there and `GET /metrics` adds them up over all live and past workers
(multiprocess mode); without it, the process's own registry is served. Jobs by status are
read from the database at scrape time, so every process reports the same, whole picture.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

# The directory must exist before the first metric is made (each writes a file there).
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry,  # noqa: E402
                               Counter, Gauge, Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

# Buckets for work that takes seconds to hours (steps, queue wait, outside calls).
_LONG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 10800, float("inf"))

HTTP_SECONDS = Histogram("ezra_http_request_seconds", "HTTP request latency by route",
                         ["method", "route", "status"])
STEP_SECONDS = Histogram("ezra_job_step_seconds", "Time a job spent in each step", ["step"],
                         buckets=_LONG_BUCKETS)
QUEUE_WAIT_SECONDS = Histogram("ezra_job_queue_wait_seconds",
                               "From submission (or hand-back) to a runner claiming the job",
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300,
                                        float("inf")))
OUTSIDE_CALL_SECONDS = Histogram("ezra_outside_call_seconds",
                                 "Latency of calls to outside services", ["service"],
                                 buckets=_LONG_BUCKETS)
OUTSIDE_CALL_ERRORS = Counter("ezra_outside_call_errors_total",
                              "Failed calls to outside services", ["service"])
# livesum: a dead worker's slots no longer count.
BUSY_SLOTS = Gauge("ezra_runner_slots_busy", "Runner slots running a job right now",
                   multiprocess_mode="livesum")
SLOTS = Gauge("ezra_runner_slots", "Runner slots of live processes", multiprocess_mode="livesum")


def observe_step(step: str, seconds: float) -> None:
    STEP_SECONDS.labels(step=step).observe(max(seconds, 0.0))


@contextmanager
def outside_call(service: str) -> Iterator[None]:
    """Time one call to an outside service; an exception counts as an error."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        OUTSIDE_CALL_ERRORS.labels(service=service).inc()
        raise
    finally:
        OUTSIDE_CALL_SECONDS.labels(service=service).observe(time.monotonic() - started)


class JobsByStatus:
    """`ezra_jobs{status=...}`: counted in the database when scraped."""

    def collect(self):
        from sqlalchemy import func, select

        from database import db
        from models import Transcription
        family = GaugeMetricFamily("ezra_jobs", "Transcriptions by status", labels=["status"])
        rows = db.session.execute(select(Transcription.status, func.count())
                                  .group_by(Transcription.status)).all()
        db.session.commit()
        for status, count in rows:
            family.add_metric([status or "legacy"], count)
        yield family


def render() -> tuple[bytes, str]:
    """The exposition text of every process (multiprocess mode) or of this one, then the
    job counts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    jobs = CollectorRegistry()
    jobs.register(JobsByStatus())
    return generate_latest(registry) + generate_latest(jobs), CONTENT_TYPE_LATEST
