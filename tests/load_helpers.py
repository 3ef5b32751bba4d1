"""Helpers for tests/test_load_faults.py: a real gunicorn in a subprocess, throw-away
PostgreSQL databases (one on the shared server, or a private cluster that a test may stop and
start), generated audio and a bounded HTTP client.

Everything here talks to 127.0.0.1 only, and every wait is bounded in time.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
LOAD_SECRET = "load-secret-" + "0123456789abcdef" * 2 + "ABCD"  # 48 characters
LOAD_PASSWORD = "load test password 42"
assert len(LOAD_SECRET) == 48


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_url(url: str) -> str:
    from config import normalize_database_url
    return normalize_database_url(url)


# --------------------------------------------------------------------------------------------
# Databases

@contextmanager
def scratch_database(server_url: str, prefix: str = "ezra_load") -> Iterator[str]:
    """A new, empty database on the server of `server_url` (only its host/port/user are used);
    dropped (WITH FORCE) on exit. Yields its URL."""
    base = make_url(pg_url(server_url))
    assert base.host in ("127.0.0.1", "localhost"), "load tests only talk to 127.0.0.1"
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE on a server of our own (a PrivateCluster); returns its URL."""
    base = make_url(pg_url(server_url))
    assert base.host in ("127.0.0.1", "localhost"), "load tests only talk to 127.0.0.1"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def app_config(database_url: str, storage: Path) -> dict:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": LOAD_SECRET,
        "STORAGE_DIR": str(storage),
        "LEGACY_FILES_DIR": str(storage.parent / "user-files"),
        "PIPELINE_ENABLED": False,
        "JOB_RECOVERY_INTERVAL_SECONDS": 0,
        "ARGON2_MEMORY_KIB": 19456,
        "ARGON2_TIME_COST": 2,
    }


def migrated_app(database_url: str, storage: Path):
    """A Flask app (no pipeline) on `database_url`, whose schema it builds with the
    migrations, like conftest does. Used by the tests to seed and inspect the database."""
    import logging

    from flask_migrate import upgrade

    from app import create_app
    app = create_app(app_config(database_url, storage))
    logging.disable(logging.INFO)  # Alembic's fileConfig switches INFO on
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
    finally:
        logging.disable(logging.NOTSET)
    return app


def make_users(app, names: list[str]) -> None:
    from database import db
    from models import User
    from password import hash_password
    with app.app_context():
        password_hash = hash_password(LOAD_PASSWORD)
        for name in names:
            db.session.add(User(username=name, password_hash=password_hash, is_admin=False))
        db.session.commit()


def dispose(app) -> None:
    from database import db
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else `pg_config --bindir`, else the newest
    Debian-style /usr/lib/postgresql/<version>/bin; None when there are none."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                timeout=30)
        candidates.append(Path(result.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                         reverse=True)
    return next((c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()),
                None)


class PrivateCluster:
    """A PostgreSQL cluster of our own (initdb into a temporary folder, trust auth,
    127.0.0.1 on a free port), which a test may stop and start at will. The shared
    server on 5432 is never touched. As root it runs as the `postgres` user (initdb refuses
    root); otherwise as the current user."""

    @staticmethod
    def unavailable() -> str | None:
        """Why no private cluster can be made here (a reason to skip), or None."""
        if postgres_bin_dir() is None:
            return "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root without a 'postgres' user to run PostgreSQL as"
            if shutil.which("runuser") is None:
                return "running as root without runuser to switch to the 'postgres' user"
        return None

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="ezra-load-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o700)

    def _as_postgres(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*as_user, *args], capture_output=True,
                              text=True, timeout=timeout, cwd=str(self.base))

    def init(self) -> None:
        result = self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        result = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                                   str(self.log), "-w", "-t", "30", "-o", options, "start")
        assert result.returncode == 0, result.stdout + result.stderr + self.log_tail()

    def stop(self, mode: str = "fast") -> None:
        result = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode,
                                   "-w", "-t", "30", "stop")
        assert result.returncode == 0, result.stdout + result.stderr

    def running(self) -> bool:
        if not self.data.exists():
            return False
        return self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data),
                                 "status").returncode == 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Audio

def make_audio(path: Path, seconds: float, *, bitrate: str | None = None,
               sample_rate: int = 44100, frequency: int = 440) -> Path:
    """A mono tone of `seconds`, MP3 (optionally at a given bitrate, e.g. "8k")."""
    from audio_service import ffmpeg_exe
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
            f"sine=frequency={frequency}:duration={seconds}", "-ar", str(sample_rate), "-ac", "1"]
    if bitrate:
        args += ["-b:a", bitrate]
    subprocess.run(args + [str(path)], check=True, timeout=60)
    return path


# --------------------------------------------------------------------------------------------
# Processes

def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_of(int(entry)) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Gunicorn:
    """`gunicorn wsgi:app` on a free 127.0.0.1 port, as a subprocess in its own session."""

    def __init__(self, env: dict[str, Any], log_path: Path, *, workers: int = 2, threads: int = 4,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.args = [str(GUNICORN), "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                     "--threads", str(threads), "--worker-class", "gthread",
                     "--chdir", str(ROOT), "--no-control-socket", *extra_args, "wsgi:app"]
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("EZRA_", "DATABASE_", "JWT_", "STORAGE_", "TRANSCRIBE_",
                                     "DEEPSEEK_", "OPENAI_", "JOB_", "MAX_", "EXECUTOR_"))}
        self.env = {**base, "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in env.items()}}
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def start(self, timeout: float = 40) -> "Gunicorn":
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=str(ROOT), env=self.env,
                                        stdout=self._log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n"
                                     + self.log_tail())
            try:
                requests.get(f"{self.url}/__ready__", timeout=2)
                if len(self.worker_pids()) >= 1:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("gunicorn did not start:\n" + self.log_tail())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        return {pid for pid in children_of(self.pid) if alive(pid)}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        if self.process is None:
            return
        workers = self.worker_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Workers finishing jobs on exit (or orphaned): end them, by id.
        for pid in workers | ({self.pid} if self.process.poll() is None else set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the session we created: ffmpeg, pandoc
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._log_file is not None:
            self._log_file.close()


def ezra_env(database_url: str, storage: Path, whisper, **overrides) -> dict[str, Any]:
    env: dict[str, Any] = {
        "EZRA_ENV": "production",
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": LOAD_SECRET,
        "STORAGE_DIR": str(storage),
        "LEGACY_FILES_DIR": str(storage.parent / "user-files"),
        "TRANSCRIBE_ENGINE": "remote",
        "TRANSCRIBE_API_URL": whisper.submit_url if whisper else "",
        "GET_RESULT_TRANSCRIBE_API_URL": whisper.result_url if whisper else "",
        "TRANSCRIBE_API_KEY": whisper.api_key if whisper else "",
        "TRANSCRIBE_POLL_MAX_SECONDS": "0.5",
        "MAX_UNFINISHED_JOBS_PER_USER": "3",
        "JOB_LEASE_SECONDS": "10",
        "JOB_RECOVERY_INTERVAL_SECONDS": "2",
        "EXECUTOR_MAX_WORKERS": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_TIME_COST": "2",
        # Delivery counts per job are asserted: every job of the same audio must pay.
        "REUSE_FINISHED_WORK": "false",
    }
    env.update(overrides)
    return env


# --------------------------------------------------------------------------------------------
# HTTP

@dataclass
class Answer:
    """One HTTP exchange, kept for the assertions and for failure messages."""
    what: str
    started: float
    ended: float
    status: int | None = None  # None: no HTTP answer (connection error, timeout)
    content_type: str = ""
    body: Any = None
    text: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def json_error(self) -> bool:
        return (self.content_type.startswith("application/json") and isinstance(self.body, dict)
                and isinstance(self.body.get("error"), str) and bool(self.body["error"]))

    def short(self) -> str:
        return (f"{self.what} -> {self.status} {self.content_type} "
                f"{(self.text or self.error or '')[:200]!r}")


class Client:
    """requests, one Session per thread, every call bounded by `timeout`."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # never a proxy: 127.0.0.1 only
        return session

    def call(self, method: str, path: str, what: str | None = None, **kwargs) -> Answer:
        kwargs.setdefault("timeout", self.timeout)
        started = time.monotonic()
        try:
            response = self._session().request(method, self.base_url + path, **kwargs)
        except requests.RequestException as exc:
            self._local.session = None
            return Answer(what or f"{method} {path}", started, time.monotonic(),
                          error=f"{type(exc).__name__}: {exc}")
        answer = Answer(what or f"{method} {path}", started, time.monotonic(),
                        status=response.status_code,
                        content_type=response.headers.get("Content-Type", ""),
                        text=response.text[:2000])
        answer.extra["headers"] = dict(response.headers)
        try:
            answer.body = response.json()
        except ValueError:
            answer.body = None
        return answer

    def login(self, username: str, password: str = LOAD_PASSWORD) -> dict[str, str]:
        answer = self.call("POST", "/login", json={"username": username, "password": password})
        assert answer.status == 200, answer.short()
        return {"Authorization": f"Bearer {answer.body['access_token']}"}

    def upload(self, headers: dict[str, str], audio: bytes, name: str = "talk.mp3",
               what: str | None = None, **fields) -> Answer:
        return self.call("POST", "/process", what=what or "POST /process", headers=headers,
                         files={"file": (name, audio, "audio/mpeg")}, data=fields)


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text_ = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text_}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Looking at the database from the test

def job_rows(engine, ids=None) -> dict[str, dict]:
    """id -> row (status, user, lease, attempts, error_message) of the transcriptions."""
    query = ("SELECT t.id::text AS id, t.status, u.username, t.lease_owner, t.lease_expires_at, "
             "t.attempts, t.error_message, t.created_at FROM transcriptions t "
             "LEFT JOIN users u ON u.id = t.user_id")
    params = {}
    if ids is not None:
        query += " WHERE t.id::text = ANY(:ids)"
        params["ids"] = [str(i) for i in ids]
    with engine.connect() as conn:
        rows = conn.execute(text(query), params).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def submitted_marks(engine) -> set[str]:
    """Ids of jobs whose remote submit is recorded (job_chunks index -1, stage transcribe)."""
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(text(
            "SELECT transcription_id FROM job_chunks "
            "WHERE stage = 'transcribe' AND \"index\" = -1"))}


def documents(engine, job_id: str) -> dict[str, bytes]:
    with engine.connect() as conn:
        return {r[0]: bytes(r[1]) for r in conn.execute(text(
            "SELECT kind, content FROM documents WHERE transcription_id = :id"), {"id": job_id})}


def db_engine(database_url: str):
    return create_engine(pg_url(database_url), pool_pre_ping=True, pool_size=2, max_overflow=2)

