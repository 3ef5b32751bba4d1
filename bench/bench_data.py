"""Shared by the benchmarks: the data set (200 users x 100 transcriptions, their documents,
500 error logs), generated deterministically from a seed, and small process helpers.

`generate()` returns plain rows; each benchmark decides how to store them: `bench_lists.py`
inserts them into the current schema (documents in the `documents` table),
`compare_refs.py` into the earlier backend's hand-made schema (documents as disk paths),
which each ref then upgrades in place.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

PASSWORD = "bench-password-0123456789"
ADMIN_NAME = "bench-admin"
USER_NAME = "bench-user-001"

N_USERS = 200
JOBS_PER_USER = 100
N_ERROR_LOGS = 500

LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua. ")
LOREM_BYTES = (LOREM * 2).encode()
DOCX_BYTES = b"PK\x03\x04" + LOREM_BYTES
TRANSCRIBE_PROMPT = ("Transcribe the sermon verbatim in Traditional Chinese; keep speaker turns, "
                     "scripture references and proper names. " * 3)[:300]
PROOFREAD_PROMPT = ("You are a careful proofreader. Fix punctuation and obvious "
                    "recognition errors, keep the wording, format headings in Markdown. " * 10)[:1200]
STACK = "".join(f'  File "/app/pipeline.py", line {100 + i}, in step_{i}\n    do_work()\n'
                for i in range(20)) + "RuntimeError: upstream returned 502"

# Statuses weighted like a live system, and the documents a job in that status has.
STATUS_WEIGHTS = [("completed", 70), ("error", 12), ("cancelled", 5), ("submitted", 2),
                  ("uploading", 1), ("trimming", 1), ("waiting", 2), ("transcribing", 3),
                  ("waiting_for_proofreading", 1), ("proofreading", 2), ("converting", 1)]
DOCS_FOR = {"completed": ("txt", "md", "docx"), "converting": ("txt", "md"),
            "proofreading": ("txt",), "waiting_for_proofreading": ("txt",)}


@dataclass
class DataSet:
    users: list[dict]      # without the password column: the caller picks the hash
    jobs: list[dict]       # every column the current schema has
    documents: list[dict]  # transcription_id, kind, content, created_at
    logs: list[dict]


def generate(rng: random.Random, now: datetime) -> DataSet:
    names = [s for s, _ in STATUS_WEIGHTS]
    weights = [w for _, w in STATUS_WEIGHTS]
    users = [{"id": i, "username": ADMIN_NAME if i == 1 else f"bench-user-{i - 1:03d}",
              "is_admin": i == 1, "created_at": now - timedelta(days=400 - i),
              "token_version": 0} for i in range(1, N_USERS + 1)]
    jobs, docs, error_jobs = [], [], []
    for user_id in range(1, N_USERS + 1):
        for _ in range(JOBS_PER_USER):
            status = rng.choices(names, weights)[0]
            created = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
            job_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            link = rng.random() < 0.6
            has_transcribe = status in DOCS_FOR or status in ("transcribing", "error")
            row = {
                "id": job_id,
                "user_id": user_id,
                "status": status,
                "created_at": created,
                "updated_at": created + timedelta(minutes=rng.uniform(1, 90)),
                "source_type": ("youtube" if rng.random() < 0.7 else "drive") if link
                else "upload",
                "google_drive_url": (f"https://www.youtube.com/watch?v={job_id.hex[:11]}"
                                     if link else None),
                "audio_file_name": None if link else f"Sunday service {created:%Y-%m-%d}",
                "audio_file_path": None if link else f"/srv/ezra/storage/jobs/{job_id}/"
                                                     "source.upload",
                "start_seconds": 60.0 if rng.random() < 0.2 else None,
                "end_seconds": 3600.0 if rng.random() < 0.1 else None,
                "transcribe_prompt": TRANSCRIBE_PROMPT if has_transcribe else None,
                "proofread_prompt": PROOFREAD_PROMPT if status in (
                    "completed", "converting", "proofreading") else None,
                "inference_duration": rng.randint(30, 1800) if status == "completed" else None,
                "error_message": ("The transcription service did not answer in time"
                                  if status == "error" else
                                  "Cancelled by the user" if status == "cancelled" else None),
                "progress_step": "transcribing" if status == "transcribing" else None,
                "progress_done": 3 if status == "transcribing" else None,
                "progress_total": 7 if status == "transcribing" else None,
                "attempts": 1,
                "cancel_requested": status == "cancelled",
            }
            jobs.append(row)
            if status == "error":
                error_jobs.append(row)
            for kind in DOCS_FOR.get(status, ()):
                docs.append({"transcription_id": job_id, "kind": kind,
                             "content": DOCX_BYTES if kind == "docx" else LOREM_BYTES,
                             "created_at": created + timedelta(minutes=5)})
    logs = []
    for _ in range(N_ERROR_LOGS):
        job = rng.choice(error_jobs)
        logs.append({
            "user_id": job["user_id"], "transcription_id": job["id"],
            "error_message": "transcribe: The transcription service did not answer in "
                             "time: ReadTimeout('timed out')",
            "stack_trace": "Traceback (most recent call last):\n" + STACK,
            "inference": True, "step": rng.choice(["fetch", "transcribe", "proofread"]),
            "created_at": job["updated_at"],
        })
    return DataSet(users, jobs, docs, logs)


# --------------------------------------------------------------------------------------------
# Processes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of one process, in KiB; empty once it is gone."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return values


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group this benchmark started, then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


class GunicornServer:
    """gunicorn serving a checkout of Ezra (`wsgi:app` in `cwd`) on a free port of 127.0.0.1,
    in a process group of its own, its output in `log_path`: what bench_lists.py and
    compare_refs.py measure."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str], log_path: Path,
                 workers: int, threads: int, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.cwd, self.env, self.log_path = cwd, env, log_path
        self.cmd = [python, "-m", "gunicorn", *extra_args, "-w", str(workers), "--threads",
                    str(threads), "-b", f"127.0.0.1:{self.port}", "--log-level", "warning",
                    "wsgi:app"]
        self.proc: subprocess.Popen | None = None
        self.worker_pids: set[int] = set()  # every worker seen, recycled ones included

    def start(self, timeout: float = 60.0) -> None:
        """Start, and wait until it answers HTTP (`GET /admin/stats`: 401 without a token)."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=str(self.cwd), env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                self.request("GET", "/admin/stats", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def login(self, username: str) -> str:
        status, body = self.request("POST", "/login", json.dumps(
            {"username": username, "password": PASSWORD}).encode(),
            {"Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError(f"login as {username} failed: {status} {body[:300]!r}")
        return json.loads(body)["access_token"]

    def workers(self) -> list[int]:
        pids = child_pids(self.proc.pid) if self.proc else []
        self.worker_pids.update(pids)
        return pids

    def cpu_seconds(self) -> float:
        """CPU used so far by the gunicorn master and its live workers."""
        return sum(process_cpu_seconds(p) for p in [self.proc.pid] + self.workers())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, grace=grace)
