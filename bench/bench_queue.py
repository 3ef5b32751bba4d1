"""Queue benchmark: a burst of submissions from several users, run by 1, 2 and 4 runner
processes, in-process slots (`flask --app app worker`, one slot each) and Celery (one-thread
workers on Redis). The transcription service is tests/fakes.py's FakeWhisperService with a
fixed latency, so the engine sleeps and cores are not the limit.

    .venv/bin/python bench/bench_queue.py                       # local and celery, 1/2/4
    .venv/bin/python bench/bench_queue.py --modes local --processes 1 2 --jobs 20

Prints, per run: queue wait (submission -> a runner's claim) p50/p99, jobs per minute (first
submission -> last completion), the speed-up over one process, and how often a runner slot
was idle while a job waited (sampled every 50 ms; a slot between two jobs counts as idle).
Targets: >= 1.8x from 1 to 2 processes, >= 3.2x from 1 to 4; no slot idle while a job waits.
Needs PostgreSQL on 127.0.0.1 (a scratch database is created and dropped) and, for celery,
Redis (BENCH_CELERY_BROKER_URL, default redis://127.0.0.1:6379/11).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import text  # noqa: E402

from fakes import FakeWhisperService  # noqa: E402
from load_helpers import (LOAD_SECRET, db_engine, make_audio, make_users,  # noqa: E402
                          migrated_app, scratch_database)
from runner_processes import start_runner, stop_gracefully, wait_ready  # noqa: E402

SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


class Sampler(threading.Thread):
    """Every 50 ms: who holds which job, so claims, completions and idle slots are seen."""

    def __init__(self, engine, slots: int):
        super().__init__(daemon=True)
        self.engine, self.slots = engine, slots
        self.claimed: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.created: dict[str, float] = {}
        self.idle_while_waiting = 0
        self.samples_with_waiting = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            now = time.time()
            with self.engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT id::text, created_at, status, lease_owner, lease_expires_at > now() "
                    "FROM transcriptions")).all()
            running = waiting = 0
            for job_id, created, status, owner, held in rows:
                self.created[job_id] = created.replace(tzinfo=created.tzinfo or timezone.utc
                                                       ).timestamp()
                really_held = bool(owner) and owner != "queued:celery" and held
                if really_held:
                    self.claimed.setdefault(job_id, now)
                if status in ("completed", "error", "cancelled"):
                    self.completed.setdefault(job_id, now)
                    self.claimed.setdefault(job_id, now)
                elif really_held:
                    running += 1
                else:
                    waiting += 1
            if waiting:
                self.samples_with_waiting += 1
                if running < self.slots:
                    self.idle_while_waiting += 1


def start_runners(mode: str, count: int, env: dict, logs: Path, stack: ExitStack) -> None:
    started = []
    for index in range(count):
        log_path = logs / f"{mode}-{count}-{index}.log"
        process = start_runner(mode, env, log_path, name=f"bench{index}")
        stack.callback(stop_gracefully, process, 60)
        started.append((process, log_path))
    wait_ready(mode, started, timeout=120)


def run(mode: str, processes: int, args, audio: Path, work: Path) -> dict:
    from werkzeug.datastructures import FileStorage

    import submission_service
    from app import create_app
    from models import User
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(SERVER_URL, prefix="ezra_bench_queue"))
        storage = work / f"storage-{mode}-{processes}"
        seed = migrated_app(url, storage)
        users = [f"bench-user-{i}" for i in range(args.users)]
        make_users(seed, users)
        whisper = FakeWhisperService(api_key="bench-key")
        whisper.delay = {"process": args.latency}
        whisper.start()
        stack.callback(whisper.stop)
        env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET_KEY": LOAD_SECRET,
               "STORAGE_DIR": str(storage), "EXECUTOR_MAX_WORKERS": "1",
               "JOB_POLL_SECONDS": "2", "TRANSCRIBE_ENGINE": "remote",
               "TRANSCRIBE_API_URL": whisper.submit_url,
               "GET_RESULT_TRANSCRIBE_API_URL": whisper.result_url,
               "TRANSCRIBE_API_KEY": whisper.api_key, "JOB_QUEUE": mode,
               "CELERY_BROKER_URL": BROKER, "LOG_FORMAT": "text",
               "REUSE_FINISHED_WORK": "false"}  # the queue is measured, not reuse
        if mode == "celery":
            import redis
            redis.Redis.from_url(BROKER).flushdb()
        start_runners(mode, processes, env, work, stack)
        web = create_app({"DATABASE_URL": url, "JWT_SECRET_KEY": LOAD_SECRET,
                          "STORAGE_DIR": str(storage), "PIPELINE_ENABLED": True,
                          "EXECUTOR_MAX_WORKERS": 0, "JOB_QUEUE": mode,
                          "CELERY_BROKER_URL": BROKER, "JOB_RECOVERY_INTERVAL_SECONDS": 0,
                          "JOB_POLL_SECONDS": 2, "MAX_UNFINISHED_JOBS_PER_USER": args.jobs})
        engine = db_engine(url)
        stack.callback(engine.dispose)
        sampler = Sampler(engine, processes)
        sampler.start()
        with web.app_context():
            ids = {u.username: u.id for u in User.query.all()}
            for index in range(args.jobs):  # the burst
                with open(audio, "rb") as stream:
                    submission_service.submit(ids[users[index % len(users)]], link=None,
                                              upload=FileStorage(stream, filename="talk.mp3"),
                                              start=None, end=None)
        deadline = time.monotonic() + args.timeout
        while len(sampler.completed) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        sampler.stop.set()
        sampler.join(timeout=30)
        from jobs import stop_runner
        stop_runner(web)
        if len(sampler.completed) < args.jobs:
            raise SystemExit(f"{mode} x{processes}: only {len(sampler.completed)} of "
                             f"{args.jobs} jobs finished in {args.timeout} s")
        waits = [sampler.claimed[j] - sampler.created[j] for j in sampler.created]
        span = max(sampler.completed.values()) - min(sampler.created.values())
        return {"p50": percentile(waits, 0.5), "p99": percentile(waits, 0.99),
                "per_minute": args.jobs / span * 60, "span": span,
                "idle": sampler.idle_while_waiting, "waiting": sampler.samples_with_waiting}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["local", "celery"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--latency", type=float, default=3.0,
                        help="seconds the fake transcription service takes per job (its "
                             "submit answer); the rest of a job is local FFmpeg and Pandoc work")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ezra-bench-queue-"))
    audio = make_audio(work / "talk.mp3", 3)
    print(f"{args.jobs} jobs from {args.users} users in one burst; fake engine latency "
          f"{args.latency} s per job; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; logs in {work}")
    print(f"{'mode':8} {'procs':>5} {'wait p50':>9} {'wait p99':>9} {'jobs/min':>9} "
          f"{'speed-up':>9} {'idle-while-waiting':>19}")
    for mode in args.modes:
        base = None
        for count in args.processes:
            result = run(mode, count, args, audio, work)
            base = base or result["per_minute"] / count
            print(f"{mode:8} {count:>5} {result['p50']:>8.2f}s {result['p99']:>8.2f}s "
                  f"{result['per_minute']:>9.1f} {result['per_minute'] / base:>8.2f}x "
                  f"{result['idle']:>6} of {result['waiting']:>5} samples", flush=True)


if __name__ == "__main__":
    main()
