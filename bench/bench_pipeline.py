"""Benchmarks of the job pipeline: memory of a worker on long audio, cut time, proofreading
and transcription concurrency. Everything runs on 127.0.0.1 (PostgreSQL, the fake OpenAI
server of tests/fakes.py, the app's own HTTP server for the upload).

    .venv/bin/python bench/bench_pipeline.py              # all four targets, then a summary
    .venv/bin/python bench/bench_pipeline.py pipeline     # 1: 30 min and 2 h through the whole job
    .venv/bin/python bench/bench_pipeline.py cut          # 2: 10 minutes out of the 2 h file
    .venv/bin/python bench/bench_pipeline.py proofread    # 3: 40 slices, 1 s each, C = 1/4/8/10
    .venv/bin/python bench/bench_pipeline.py transcribe   # 4: 2 h via the openai engine, 2 s/chunk

Targets
1. A 30-minute and a 2-hour talk go upload -> prepare/encode -> transcribe (`openai` engine,
   FakeOpenAI, no delay) -> proofread (FakeOpenAI chat, no delay) -> pandoc docx. The upload
   goes over HTTP to the app served by a separate process; the job runs in a separate worker
   process built from environment variables (like tests/test_pipeline.py's RUNNER) calling
   pipeline.run_job. Per-step wall times come from the worker's
   `job=... step=... status=... previous_step_seconds=...` log lines; memory from
   /proc/<pid>/status (VmHWM of the worker at its end, VmRSS sampled every 50 ms per step) and
   from its ffmpeg/pandoc children (sampled VmHWM per child, plus RUSAGE_CHILDREN ru_maxrss).
   Target: worker peak RSS < 150 MB, and no growth with the audio's length (2 h vs 30 min:
   at most +10 MB).
2. audio_service.encode_compact cutting 10 minutes out of the 2 h file: < 2 s.
3. proofreading_service.Proofreader on 40 slices, chat delay 1 s: <= 1.3 x ceil(40 / C) s.
4. transcription_service.OpenAIEngine on the compact 2 h file, 2 s per chunk, chunk_seconds
   1200 and 600, C = 1/2/4: <= 1.3 x ceil(chunks / C) x 2 s + local preparation (probe,
   silence detection, cutting every chunk; measured separately and printed).

Generated audio (mono 44.1 kHz MP3 at 64 kbit/s: a tone with 1 s of silence every 50 s) and the
compact 2 h file are cached in /tmp/ezra-bench/. The database `ezra_bench_pipeline` is created
if missing and its schema rebuilt by the migrations at every `pipeline` run.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from bench_data import free_port  # noqa: E402

CACHE = Path("/tmp/ezra-bench")
DB_NAME = "ezra_bench_pipeline"
ADMIN_DB_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
API_KEY = "sk-bench"
PASSWORD = "correct horse battery"
SILENCE_PERIOD = 50  # seconds: 49 s of tone, then 1 s of silence
MEMORY_LIMIT_MB = 150.0
GROWTH_LIMIT_MB = 10.0
OVERALL_TIMEOUT = 45 * 60  # the whole run is killed (with a traceback) after this
WORKER_TIMEOUT = 900.0
GENERATE_TIMEOUT = 900.0

RESULTS: list[tuple[str, str, str, bool | None]] = []  # (target, wanted, measured, passed)


def record(target: str, wanted: str, measured: str, passed: bool | None) -> None:
    RESULTS.append((target, wanted, measured, passed))


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- audio


def talk_path(seconds: int) -> Path:
    return CACHE / f"talk_{seconds // 60}min_64k.mp3"


def make_talk(seconds: int) -> Path:
    """Mono 44.1 kHz MP3 at 64 kbit/s: a 220 Hz tone, silent for 1 s every 50 s."""
    from audio_service import ffmpeg_exe
    path = talk_path(seconds)
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    say(f"  generating {path} ({seconds // 60} min, once)...")
    started = time.perf_counter()
    graph = (f"sine=frequency=220:sample_rate=44100:duration={seconds},"
             f"volume='if(lt(mod(t,{SILENCE_PERIOD}),{SILENCE_PERIOD - 1}),0.5,0)':eval=frame[a]")
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-filter_complex", graph, "-map", "[a]", "-ac", "1", "-ar", "44100",
                    "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", str(partial)],
                   check=True, timeout=GENERATE_TIMEOUT)
    partial.replace(path)
    say(f"  generated in {time.perf_counter() - started:.1f} s "
        f"({path.stat().st_size / 1e6:.1f} MB)")
    return path


def compact_2h() -> tuple[Path, float | None]:
    """The 2 h talk in the compact codec (what the engine sees), cached; (path, encode time)."""
    from audio_service import compact_extension, encode_compact
    source = make_talk(7200)
    path = CACHE / f"talk_120min_compact{compact_extension()}"
    if path.exists() and path.stat().st_mtime >= source.stat().st_mtime:
        return path, None
    partial = path.with_name("partial-" + path.name)
    started = time.perf_counter()
    encode_compact(source, partial)
    elapsed = time.perf_counter() - started
    partial.replace(path)
    return path, elapsed


def words_for_seconds(seconds: float, seed: int) -> str:
    """About 150 words a minute of plausible sermon text, in paragraphs of ~6 sentences."""
    vocabulary = ("the law of the Lord was in his heart and Ezra had prepared his heart to "
                  "seek it to do it and to teach in Israel statutes and judgments for the "
                  "hand of his God was upon him").split()
    count = max(1, int(seconds * 2.5))
    sentences, paragraph, paragraphs = [], [], []
    for i in range(count):
        sentences.append(vocabulary[(i * 7 + seed) % len(vocabulary)])
        if len(sentences) == 12:
            paragraph.append(" ".join(sentences).capitalize() + ".")
            sentences = []
            if len(paragraph) == 6:
                paragraphs.append(" ".join(paragraph))
                paragraph = []
    if sentences:
        paragraph.append(" ".join(sentences).capitalize() + ".")
    if paragraph:
        paragraphs.append(" ".join(paragraph))
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------- /proc helpers


def proc_status(pid: int | str) -> dict[str, int]:
    """VmRSS/VmHWM/... of a live process, in kB (empty when it is gone)."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Vm"):
                    name, rest = line.split(":", 1)
                    values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return values


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            pass
    return found


def classify_child(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    exe = os.path.basename(argv[0])
    if "pandoc" in exe:
        return "pandoc"
    if "ffmpeg" not in exe:
        return exe
    joined = " ".join(argv)
    if "-encoders" in argv or "-demuxers" in argv:
        return "ffmpeg list"
    if "silencedetect" in joined:
        return "ffmpeg silencedetect"
    if "libopus" in argv or "libmp3lame" in argv:
        return "ffmpeg encode_compact"
    if "copy" in argv:
        return "ffmpeg cut_segment"
    return "ffmpeg probe"


class Sampler(threading.Thread):
    """Samples a process's VmRSS (per current step) and its children's VmHWM every 50 ms."""

    def __init__(self, pid: int, step: Callable[[], str], interval: float = 0.05):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.step, self.interval = pid, step, interval
        self.stopped = threading.Event()
        self.step_peak_kb: dict[str, int] = {}
        self.children: dict[int, list[Any]] = {}  # pid -> [kind, peak VmHWM kB]
        self.samples = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            status = proc_status(self.pid)
            if not status:
                break
            self.samples += 1
            step = self.step()
            self.step_peak_kb[step] = max(self.step_peak_kb.get(step, 0), status.get("VmRSS", 0))
            for child in children_of(self.pid):
                entry = self.children.get(child)
                if entry is None:
                    entry = self.children[child] = [classify_child(child), 0]
                elif entry[0].startswith("python") or entry[0] == "?":
                    entry[0] = classify_child(child)  # seen between fork and exec
                hwm = proc_status(child).get("VmHWM", 0)
                entry[1] = max(entry[1], hwm)
            self.stopped.wait(self.interval)

    def child_peaks(self) -> dict[str, tuple[int, int]]:
        """kind -> (processes seen, peak VmHWM kB)."""
        out: dict[str, tuple[int, int]] = {}
        for kind, peak in self.children.values():
            if kind.startswith("python") or kind == "?":
                continue  # caught between fork and exec (a copy of the worker), or already gone
            seen, best = out.get(kind, (0, 0))
            out[kind] = (seen + 1, max(best, peak))
        return out


def mb(kb: float) -> float:
    return kb / 1024.0


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children) user + system CPU seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def load_note() -> str:
    one, five, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    pressure = ""
    try:  # share of the last 10 s in which some runnable task waited for a CPU
        with open("/proc/pressure/cpu") as fh:
            avg10 = float(fh.readline().split()[1].split("=")[1])
        pressure = f", CPU pressure {avg10:.0f}% (10 s)"
    except (OSError, ValueError, IndexError):
        avg10 = 0.0
    busy = ("  <- the machine is busy: CPU-bound wall times are inflated"
            if one > cpus or avg10 > 20 else "")
    return f"load average {one:.2f} / {five:.2f} (1/5 min) on {cpus} CPUs{pressure}{busy}"


# --------------------------------------------------------------------------- database


def setup_database() -> None:
    """Create `ezra_bench_pipeline` when missing and rebuild its schema by the migrations."""
    import psycopg2
    from sqlalchemy import create_engine, text
    from config import normalize_database_url

    conn = psycopg2.connect(ADMIN_DB_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()
    engine = create_engine(normalize_database_url(DB_URL))
    with engine.begin() as db_conn:
        db_conn.execute(text("DROP SCHEMA public CASCADE"))
        db_conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    # In a child process: Alembic's env.py reconfigures logging.
    env = {**os.environ, **app_env(CACHE / "storage-migrate")}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"migrations failed:\n{result.stderr[-3000:]}")


def app_env(storage: Path, **extra: Any) -> dict[str, str]:
    env = {"DATABASE_URL": DB_URL, "JWT_SECRET_KEY": SECRET, "STORAGE_DIR": str(storage),
           "LEGACY_FILES_DIR": str(CACHE / "user-files"), "JOB_RECOVERY_INTERVAL_SECONDS": "0",
           "ARGON2_MEMORY_KIB": "19456", "ARGON2_TIME_COST": "2", "MAX_UPLOAD_MB": "1024",
           "REUSE_FINISHED_WORK": "false"}  # each run transcribes (the figures are the point)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------- target 1

# Both child scripts end themselves when the bench goes away or after a hard cap.
WATCHDOG = """
import os, threading, time
def _watchdog(parent=os.getppid(), deadline=time.monotonic() + {cap}):
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.5)
    os._exit(3)
threading.Thread(target=_watchdog, daemon=True).start()
"""

SERVER = WATCHDOG + """
import sys
sys.path.insert(0, {root!r})
from app import create_app
from werkzeug.serving import run_simple
app = create_app({{"PIPELINE_ENABLED": False}})  # the job runs in the bench's own worker
run_simple("127.0.0.1", {port}, app, threaded=True)
"""

RUNNER = WATCHDOG + """
import json, os, resource, sys, time, uuid
sys.path.insert(0, {root!r})

def vm():
    out = {{}}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Vm"):
                name, rest = line.split(":", 1)
                out[name] = int(rest.split()[0])
    return out

from app import create_app
import pipeline
app = create_app()
ready = vm()
print("BENCH " + json.dumps({{"event": "ready", "vm": ready}}), flush=True)
started = time.monotonic()
with app.app_context():
    pipeline.run_job(uuid.UUID({job_id!r}))
elapsed = time.monotonic() - started
print("BENCH " + json.dumps({{
    "event": "done", "seconds": elapsed, "vm": vm(),
    "ru_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "cpu_self": sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f) for f in ("ru_utime", "ru_stime")),
    "cpu_children": sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime")),
    "ru_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}), flush=True)
"""

STEP_LINE = re.compile(r"job=(\S+) step=(\S+) status=(\S+) previous_step_seconds=([\d.]+)")
STEP_LABELS = {
    "start": "claim + probe source (start)",
    "waiting": "prepare: encode_compact (waiting)",
    "transcribing": "transcribe: silences+cuts+API (transcribing)",
    "waiting_for_proofreading": "settings look-up (waiting_for_proofreading)",
    "proofreading": "proofread (proofreading)",
    "converting": "pandoc docx (converting)",
}


@dataclass
class PipelineRun:
    minutes: int
    upload_seconds: float = 0.0
    upload_server_base_kb: int = 0
    upload_server_hwm_kb: int = 0
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    total_seconds: float = 0.0
    ready_rss_kb: int = 0
    hwm_kb: int = 0
    ru_children_kb: int = 0
    cpu_self: float = 0.0
    cpu_children: float = 0.0
    step_peak_kb: dict[str, int] = field(default_factory=dict)
    child_peaks: dict[str, tuple[int, int]] = field(default_factory=dict)
    status: str = "?"
    error: str | None = None
    details: str = ""


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    import requests
    port = free_port()
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), port=port, cap=600)],
                               env={**os.environ, **env}, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app server ended: {log_path.read_text()[-2000:]}")
        try:
            requests.get(url + "/transcriptions", timeout=2)
            return process, url
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the app server did not start within 60 s")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prepare_users(bench_app) -> None:
    from database import db
    from models import ProofreadPrompt, SystemSetting, TranscribePrompt, User
    from password import hash_password
    from sqlalchemy import select
    with bench_app.app_context():
        db.session.add(User(username="bench", password_hash=hash_password(PASSWORD)))
        transcribe = TranscribePrompt(version="bench", prompt="Names: Ezra, Nehemia")
        proofread = ProofreadPrompt(version="bench", prompt="Fix punctuation.")
        db.session.add_all([transcribe, proofread])
        db.session.flush()
        # The migrations seed empty prompts and these settings; point them at ours.
        for key, prompt_id in (("active_transcribe_prompt_id", transcribe.id),
                               ("active_proofread_prompt_id", proofread.id)):
            setting = db.session.execute(select(SystemSetting).where(
                SystemSetting.setting_key == key)).scalar_one_or_none()
            if setting is None:
                db.session.add(SystemSetting(setting_key=key, setting_value=str(prompt_id)))
            else:
                setting.setting_value = str(prompt_id)
        db.session.commit()


def upload_over_http(source: Path, env: dict[str, str], run: PipelineRun) -> str:
    """POST /process in a fresh app server process; returns the job id."""
    import requests
    process, url = start_server(env, CACHE / f"server-{run.minutes}min.log")
    try:
        token = requests.post(url + "/login", json={"username": "bench", "password": PASSWORD},
                              timeout=30).json()["access_token"]
        run.upload_server_base_kb = proc_status(process.pid).get("VmHWM", 0)
        started = time.perf_counter()
        with open(source, "rb") as fh:
            response = requests.post(url + "/process", headers={"Authorization": f"Bearer {token}"},
                                     files={"file": (f"Sunday talk {run.minutes} min.mp3", fh,
                                                     "audio/mpeg")}, timeout=600)
        run.upload_seconds = time.perf_counter() - started
        run.upload_server_hwm_kb = proc_status(process.pid).get("VmHWM", 0)
        if response.status_code != 200:
            raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
        return response.json()["transcription_id"]
    finally:
        stop_process(process)


def run_worker(job_id: str, env: dict[str, str], run: PipelineRun) -> None:
    current = {"step": "start"}
    stderr_tail: list[str] = []
    bench_lines: list[dict] = []
    process = subprocess.Popen([sys.executable, "-c", RUNNER.format(root=str(ROOT), job_id=job_id,
                                                             cap=WORKER_TIMEOUT + 30)],
                               env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(process.pid, lambda: current["step"])
    sampler.start()

    def read_stderr() -> None:
        for line in process.stderr:
            stderr_tail.append(line.rstrip())
            del stderr_tail[:-60]
            match = STEP_LINE.search(line)
            if match:
                _job, step, status, seconds = match.groups()
                run.steps.append((step, status, float(seconds)))
                current["step"] = status

    def read_stdout() -> None:
        for line in process.stdout:
            if line.startswith("BENCH "):
                bench_lines.append(json.loads(line[6:]))

    readers = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=read_stdout, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        run.error = f"the worker did not finish within {WORKER_TIMEOUT:.0f} s"
    for reader in readers:
        reader.join(timeout=10)
    sampler.stopped.set()
    sampler.join(timeout=5)
    run.step_peak_kb = sampler.step_peak_kb
    run.child_peaks = sampler.child_peaks()
    for line in bench_lines:
        if line["event"] == "ready":
            run.ready_rss_kb = line["vm"].get("VmRSS", 0)
        elif line["event"] == "done":
            run.total_seconds = line["seconds"]
            run.hwm_kb = line["vm"].get("VmHWM", 0)
            run.ru_children_kb = line["ru_children_kb"]
            run.cpu_self, run.cpu_children = line["cpu_self"], line["cpu_children"]
    if process.returncode != 0 and run.error is None:
        run.error = f"the worker exited with {process.returncode}"
    if run.error or not run.hwm_kb:
        run.details = "\n".join(stderr_tail[-30:])


def pipeline_once(minutes: int, bench_app, fake, storage: Path) -> PipelineRun:
    from database import db
    from models import Document, JobChunk, Transcription
    from sqlalchemy import func, select
    run = PipelineRun(minutes)
    source = make_talk(minutes * 60)
    env = app_env(storage, TRANSCRIBE_ENGINE="openai", OPENAI_TRANSCRIBE_BASE_URL=fake.base_url,
                  OPENAI_TRANSCRIBE_API_KEY=API_KEY, OPENAI_TRANSCRIBE_MODEL="whisper-1",
                  DEEPSEEK_BASE_URL=fake.base_url, DEEPSEEK_API_KEY=API_KEY)
    say(f"  {minutes} min: uploading {source.name} ({source.stat().st_size / 1e6:.1f} MB) "
        f"over HTTP...")
    job_id = upload_over_http(source, env, run)
    say(f"  {minutes} min: running job {job_id} in a worker process...")
    fake.reset()
    run_worker(job_id, env, run)
    with bench_app.app_context():
        job = db.session.get(Transcription, uuid.UUID(job_id))
        run.status, error = job.status, job.error_message
        sizes = dict(db.session.execute(select(Document.kind, func.length(Document.content))
                                        .where(Document.transcription_id == job.id)).all())
        chunks = dict(db.session.execute(select(JobChunk.stage, func.count())
                                         .where(JobChunk.transcription_id == job.id)
                                         .group_by(JobChunk.stage)).all())
        db.session.commit()
    if run.status != "completed" and not run.error:
        run.error = f"job ended {run.status}: {error}"
    run.details = ("documents: " + ", ".join(f"{k} {v / 1000:.0f} kB" for k, v in sorted(sizes.items()))
                   + f"; chunks: {chunks}; requests: {len(fake.transcription_requests)} "
                   f"transcriptions, {len(fake.chat_requests)} chat\n" + run.details)
    return run


def target_pipeline() -> None:
    from app import create_app
    from fakes import FakeOpenAI
    say("== 1. whole pipeline in a separate worker process (30 min and 2 h) ==")
    say(f"  {load_note()}")
    for seconds in (1800, 7200):
        make_talk(seconds)
    setup_database()
    storage = CACHE / "storage"
    shutil.rmtree(storage, ignore_errors=True)
    bench_app = create_app({"DATABASE_URL": DB_URL, "JWT_SECRET_KEY": SECRET, "TESTING": True,
                            "STORAGE_DIR": str(storage), "PIPELINE_ENABLED": False,
                            "JOB_RECOVERY_INTERVAL_SECONDS": 0, "ARGON2_MEMORY_KIB": 19456,
                            "ARGON2_TIME_COST": 2})
    prepare_users(bench_app)

    def transcript_for(audio: bytes, model: str, prompt: str | None) -> str:
        # Compact audio is ~24 kbit/s: ~3000 bytes a second of speech, 150 words a minute.
        return words_for_seconds(len(audio) / 3000.0, len(audio) % 97)

    runs: list[PipelineRun] = []
    with FakeOpenAI(api_key=API_KEY, transcript_for=transcript_for) as fake:
        for minutes in (30, 120):
            runs.append(pipeline_once(minutes, bench_app, fake, storage))
    shutil.rmtree(storage, ignore_errors=True)
    from database import db
    with bench_app.app_context():
        db.session.remove()
        db.engine.dispose()

    say()
    header = f"  {'step':<48}" + "".join(f"{f'{r.minutes} min':>12}" for r in runs)
    say(header + "   (wall seconds)")
    say(f"  {'upload over HTTP (POST /process, app server)':<48}"
        + "".join(f"{r.upload_seconds:12.2f}" for r in runs))
    steps = [s for s in STEP_LABELS]
    for step in steps:
        values = []
        for r in runs:
            found = [sec for st, _status, sec in r.steps if st == step]
            values.append(f"{sum(found):12.2f}" if found else f"{'-':>12}")
        say(f"  {STEP_LABELS[step]:<48}" + "".join(values))
    say(f"  {'run_job total (worker)':<48}" + "".join(f"{r.total_seconds:12.2f}" for r in runs))
    say(f"  {'  CPU s: worker python / its ffmpeg+pandoc':<48}"
        + "".join(f"{f'{r.cpu_self:.1f} / {r.cpu_children:.1f}':>12}" for r in runs))
    say()
    say(f"  {'memory (MB)':<48}" + "".join(f"{f'{r.minutes} min':>12}" for r in runs))
    say(f"  {'worker RSS after create_app (before run_job)':<48}"
        + "".join(f"{mb(r.ready_rss_kb):12.1f}" for r in runs))
    for step in steps:
        say(f"  {'worker RSS peak during ' + step:<48}"
            + "".join(f"{mb(r.step_peak_kb[step]):12.1f}" if r.step_peak_kb.get(step)
                      else f"{'(too short)':>12}" for r in runs))
    say(f"  {'worker peak RSS (VmHWM at the end)':<48}" + "".join(f"{mb(r.hwm_kb):12.1f}" for r in runs))
    kinds = sorted({k for r in runs for k in r.child_peaks})
    for kind in kinds:
        cells = []
        for r in runs:
            seen, peak = r.child_peaks.get(kind, (0, 0))
            cells.append(f"{mb(peak):7.1f} ({seen:>2})" if seen else f"{'-':>12}")
        say(f"  {'child ' + kind + ' peak VmHWM (processes)':<48}" + "".join(cells))
    say(f"  {'largest child (RUSAGE_CHILDREN ru_maxrss)':<48}"
        + "".join(f"{mb(r.ru_children_kb):12.1f}" for r in runs))
    say(f"  {'app server VmHWM before -> after the upload':<48}"
        + "".join(f"{f'{mb(r.upload_server_base_kb):.0f}->{mb(r.upload_server_hwm_kb):.0f}':>12}"
                  for r in runs))
    for r in runs:
        say(f"  {r.minutes} min: status {r.status}; {r.details.strip()}")
        if r.error:
            say(f"  {r.minutes} min: PROBLEM: {r.error}")

    for r in runs:
        ok = r.status == "completed" and not r.error
        record(f"1. {r.minutes} min job completes (worker process)", "completed",
               f"{r.status} in {r.total_seconds:.1f} s", ok)
        record(f"1. worker peak RSS, {r.minutes} min", f"< {MEMORY_LIMIT_MB:.0f} MB",
               f"{mb(r.hwm_kb):.1f} MB", bool(r.hwm_kb) and mb(r.hwm_kb) < MEMORY_LIMIT_MB)
    if len(runs) == 2 and all(r.hwm_kb for r in runs):
        growth = mb(runs[1].hwm_kb - runs[0].hwm_kb)
        record("1. worker peak growth 30 min -> 2 h", f"<= +{GROWTH_LIMIT_MB:.0f} MB",
               f"{growth:+.1f} MB", growth <= GROWTH_LIMIT_MB)
        child = mb(runs[1].ru_children_kb - runs[0].ru_children_kb)
        record("1. largest child (ffmpeg/pandoc) growth", f"<= +{GROWTH_LIMIT_MB:.0f} MB",
               f"{mb(runs[0].ru_children_kb):.0f} -> {mb(runs[1].ru_children_kb):.0f} MB "
               f"({child:+.1f})", child <= GROWTH_LIMIT_MB)
        ffmpeg = [max((p for k, (_n, p) in r.child_peaks.items() if k.startswith("ffmpeg")),
                      default=0) for r in runs]
        record("1. ffmpeg child peak (sampled) growth", f"<= +{GROWTH_LIMIT_MB:.0f} MB",
               f"{mb(ffmpeg[0]):.0f} -> {mb(ffmpeg[1]):.0f} MB ({mb(ffmpeg[1] - ffmpeg[0]):+.1f})",
               mb(ffmpeg[1] - ffmpeg[0]) <= GROWTH_LIMIT_MB)
        pandoc = [r.child_peaks.get("pandoc", (0, 0))[1] for r in runs]
        record("1. pandoc child peak (outside the worker)", "(info)",
               f"30 min {mb(pandoc[0]):.0f} MB, 2 h {mb(pandoc[1]):.0f} MB", None)
        record("1. 2 h: upload + run_job wall", "(info)",
               f"{runs[1].upload_seconds:.1f} + {runs[1].total_seconds:.1f} s", None)
        server = [mb(r.upload_server_hwm_kb - r.upload_server_base_kb) for r in runs]
        record("1. app server RSS added by the upload", "(info)",
               f"30 min {server[0]:+.1f} MB, 2 h {server[1]:+.1f} MB", None)


# --------------------------------------------------------------------------- target 2


def target_cut(runs: int) -> None:
    from audio_service import compact_extension, encode_compact, require_audio
    say("== 2. encode_compact: 10 minutes out of the 2 h file ==")
    say(f"  {load_note()}")
    source = make_talk(7200)
    duration = require_audio(source)
    with tempfile.TemporaryDirectory(prefix="ezra-bench-") as tmp:
        for label, start, end in (("1:00:00-1:10:00", 3600.0, 4200.0),
                                  ("1:50:00-2:00:00", duration - 600, duration)):
            dst = Path(tmp) / f"cut{compact_extension()}"
            times, cpus = [], []
            for _ in range(runs):
                cpu_before = cpu_seconds()[1]
                started = time.perf_counter()
                encode_compact(source, dst, start, end)
                times.append(time.perf_counter() - started)
                cpus.append(cpu_seconds()[1] - cpu_before)
            got = require_audio(dst)
            median = statistics.median(times)
            say(f"  {label}: median {median:.2f} s, best {min(times):.2f} s over {runs} runs "
                f"({', '.join(f'{t:.2f}' for t in times)}); ffmpeg CPU median "
                f"{statistics.median(cpus):.2f} s; -> {got:.1f} s of audio, "
                f"{dst.stat().st_size / 1e6:.2f} MB")
            record(f"2. cut 10 min ({label}) of 2 h", "< 2.00 s",
                   f"{median:.2f} s (best {min(times):.2f}, cpu {statistics.median(cpus):.2f})",
                   median < 2.0 and abs(got - 600) < 1)


# --------------------------------------------------------------------------- target 3


class MemoryStore:
    """An in-memory ChunkStore."""

    def __init__(self):
        self.saved: dict[int, str] = {}
        self.progress_calls = 0
        self.lock = threading.Lock()

    def done(self) -> dict[int, str]:
        with self.lock:
            return dict(self.saved)

    def save(self, index: int, text: str) -> None:
        with self.lock:
            self.saved[index] = text

    def progress(self, done: int, total: int) -> None:
        self.progress_calls += 1

    def should_stop(self) -> bool:
        return False


def forty_slice_transcript(max_chars: int = 6000) -> str:
    """40 paragraphs of ~0.8 x max_chars: each fits a slice, no two fit together."""
    paragraphs = []
    for i in range(40):
        sentence = f"Paragraph {i} of the sermon speaks of Ezra and the law. "
        text = ""
        while len(text) + len(sentence) <= int(max_chars * 0.8):
            text += sentence
        paragraphs.append(text.strip())
    return "\n\n".join(paragraphs)


def target_proofread() -> None:
    from fakes import FakeOpenAI
    from proofreading_service import Proofreader, split_into_slices
    say("== 3. proofreading 40 slices, FakeOpenAI chat 1 s per answer ==")
    say(f"  {load_note()}")
    slices = split_into_slices(forty_slice_transcript(), 6000)
    assert len(slices) == 40, len(slices)
    with FakeOpenAI(api_key=API_KEY, delay={"chat": 1.0}) as fake:
        for concurrency in (1, 4, 8, 10):
            fake.reset()
            store = MemoryStore()
            proofreader = Proofreader(fake.base_url, API_KEY, "deepseek-chat", concurrency,
                                      timeout_seconds=60, max_retries=2)
            started = time.perf_counter()
            markdown = proofreader.proofread(slices, "Fix punctuation.", store)
            elapsed = time.perf_counter() - started
            target = 1.3 * math.ceil(40 / concurrency)
            ideal = math.ceil(40 / concurrency) * 1.0
            complete = len(store.saved) == 40 and markdown.count("PROOFREAD[") == 40
            say(f"  C={concurrency:>2}: {elapsed:6.2f} s (ideal {ideal:.0f} s, target {target:.1f} s), "
                f"{fake.attempts('chat')} requests, peak in flight {fake.peak_in_flight['chat']}"
                f"{'' if complete else ', INCOMPLETE'}")
            record(f"3. proofread 40 slices, C={concurrency}", f"<= {target:.1f} s",
                   f"{elapsed:.2f} s", complete and elapsed <= target)


# --------------------------------------------------------------------------- target 4


def target_transcribe() -> None:
    from audio_service import cut_segment, compact_extension, detect_silences, plan_chunks
    from audio_service import require_audio
    from fakes import FakeOpenAI
    from transcription_service import EngineJob, OpenAIEngine
    say("== 4. openai engine on the compact 2 h file, FakeOpenAI 2 s per chunk ==")
    say(f"  {load_note()}")
    compact, encode_seconds = compact_2h()
    if encode_seconds is not None:
        say(f"  (encoded the 2 h source to {compact.name} in {encode_seconds:.1f} s, cached)")
    say(f"  compact file: {compact.stat().st_size / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory(prefix="ezra-bench-") as tmp:
        work = Path(tmp)
        cpu_before = cpu_seconds()[1]
        started = time.perf_counter()
        duration = require_audio(compact)
        silences = detect_silences(compact)
        silence_seconds = time.perf_counter() - started
        say(f"  local: probe + detect_silences {silence_seconds:.2f} s, ffmpeg CPU "
            f"{cpu_seconds()[1] - cpu_before:.2f} s ({len(silences)} silences in {duration:.0f} s)")
        plans = {}
        for chunk_seconds in (1200, 600):
            plan = plan_chunks(duration, silences, chunk_seconds)
            cpu_before = cpu_seconds()[1]
            started = time.perf_counter()
            each = []
            for i, (start, end) in enumerate(plan):
                piece = work / f"piece-{i}{compact_extension()}"
                one = time.perf_counter()
                cut_segment(compact, piece, start, end)
                each.append(time.perf_counter() - one)
                piece.unlink()
            cut_seconds = time.perf_counter() - started
            plans[chunk_seconds] = (plan, cut_seconds)
            lengths = ", ".join(f"{e - s:.1f}" for s, e in plan)
            say(f"  local: chunk_seconds={chunk_seconds}: {len(plan)} chunks [{lengths}] s")
            say(f"         cutting them one after another {cut_seconds:.2f} s (ffmpeg CPU "
                f"{cpu_seconds()[1] - cpu_before:.2f} s); per chunk, in order: "
                f"{', '.join(f'{t:.2f}' for t in each)}")
            record(f"4. local prep, chunk_seconds={chunk_seconds}", "(info)",
                   f"silences {silence_seconds:.2f} s + cuts {cut_seconds:.2f} s", None)
        with FakeOpenAI(api_key=API_KEY, delay={"transcriptions": 2.0}) as fake:
            for chunk_seconds in (1200, 600):
                plan, cut_seconds = plans[chunk_seconds]
                prep = silence_seconds + cut_seconds
                for concurrency in (1, 2, 4):
                    fake.reset()
                    store = MemoryStore()
                    engine = OpenAIEngine(fake.base_url, API_KEY, "whisper-1", chunk_seconds,
                                          concurrency, timeout_seconds=120, max_retries=2)
                    job_dir = work / f"job-{chunk_seconds}-{concurrency}"
                    job_dir.mkdir()
                    cpu_before = cpu_seconds()
                    started = time.perf_counter()
                    text = engine.transcribe(EngineJob(job_id=str(uuid.uuid4()), audio=compact,
                                                       work_dir=job_dir, prompt="Names: Ezra",
                                                       store=store))
                    elapsed = time.perf_counter() - started
                    cpu_after = cpu_seconds()
                    cpu_ffmpeg = cpu_after[1] - cpu_before[1]
                    cpu_python = cpu_after[0] - cpu_before[0]
                    sent = [i for i, (s, e) in enumerate(plan) if e - s >= 0.3]
                    rounds = math.ceil(len(plan) / concurrency)
                    target = 1.3 * rounds * 2.0 + prep
                    complete = (len(store.saved) == len(plan)
                                and len(fake.transcription_requests) == len(sent)
                                and text.count("Transcript of") == len(sent))
                    say(f"  chunk_seconds={chunk_seconds:>4} C={concurrency}: {elapsed:6.2f} s "
                        f"({len(plan)} chunks, ideal {rounds * 2.0:.0f} s + prep {prep:.2f} s, "
                        f"target {target:.1f} s), peak in flight "
                        f"{fake.peak_in_flight['transcriptions']}, CPU ffmpeg {cpu_ffmpeg:.1f} s "
                        f"python {cpu_python:.1f} s (client + fake server)"
                        f"{'' if complete else ', INCOMPLETE'}")
                    record(f"4. transcribe 2 h, {len(plan)} chunks of <= {chunk_seconds} s, "
                           f"C={concurrency}", f"<= {target:.1f} s", f"{elapsed:.2f} s",
                           complete and elapsed <= target)


# --------------------------------------------------------------------------- main


def summary() -> None:
    say()
    say("== summary ==")
    say(f"  {load_note()}")
    width = max((len(t) for t, *_ in RESULTS), default=10)
    say(f"  {'target':<{width}}  {'wanted':<14}  {'measured':<34}  result")
    for target, wanted, measured, passed in RESULTS:
        verdict = "info" if passed is None else ("PASS" if passed else "FAIL")
        say(f"  {target:<{width}}  {wanted:<14}  {measured:<34}  {verdict}")
    failed = sum(1 for *_, p in RESULTS if p is False)
    say(f"\n  {len(RESULTS)} rows, {failed} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="all",
                        choices=["all", "pipeline", "cut", "proofread", "transcribe"])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each cut (target 2)")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(OVERALL_TIMEOUT, exit=True)  # bounded, whatever happens
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    from audio_service import compact_extension, ffmpeg_exe
    say(f"ffmpeg: {ffmpeg_exe()}  compact codec: {compact_extension()}  "
        f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chosen = ["pipeline", "cut", "proofread", "transcribe"] if args.target == "all" else [args.target]
    for name in chosen:
        try:
            if name == "pipeline":
                target_pipeline()
            elif name == "cut":
                target_cut(args.runs)
            elif name == "proofread":
                target_proofread()
            else:
                target_transcribe()
        except Exception as exc:  # report and go on with the other targets
            import traceback
            traceback.print_exc()
            record(f"{name}", "runs", f"crashed: {exc!r}"[:34], False)
        say()
    say(f"bench took {time.perf_counter() - started:.0f} s")
    summary()
    return 1 if any(p is False for *_, p in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())
