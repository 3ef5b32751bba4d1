"""Job runner processes as they are deployed: `flask --app app worker` (in-process slots) or a
one-thread Celery worker, each with its output in a log file; waited for until it says it is
ready, stopped gracefully. Shared by tests/test_jobs.py, tests/test_celery.py and
bench/bench_queue.py."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each kind of runner logs once it takes jobs (jobs.py, celery_app.py).
READY_MARKS = {"local": "event=worker_started", "celery": "event=celery_worker_ready"}


def runner_command(kind: str, name: str = "w0") -> list[str]:
    if kind == "local":
        return [sys.executable, "-m", "flask", "--app", "app", "worker"]
    return [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads",
            "--concurrency", "1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]


def start_runner(kind: str, env: dict, log_path: Path, name: str = "w0") -> subprocess.Popen:
    """Start a runner in the project folder; its output goes to `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(runner_command(kind, name), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def wait_ready(kind: str, started: list[tuple[subprocess.Popen, Path]],
               timeout: float = 60) -> None:
    """Until every runner has logged that it takes jobs; fails with the log of one that
    ended or stayed silent."""
    deadline = time.monotonic() + timeout
    for process, log_path in started:
        while READY_MARKS[kind] not in log_path.read_text(errors="replace"):
            log = log_path.read_text(errors="replace")[-3000:]
            assert process.poll() is None, f"the runner ended:\n{log}"
            assert time.monotonic() < deadline, f"the runner was not ready in {timeout:.0f} s:\n{log}"
            time.sleep(0.2)


def stop_gracefully(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a runner hands its jobs back), then SIGKILL if it has not ended in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
