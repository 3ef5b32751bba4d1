"""Side by side: two commits of the backend on identical upgraded legacy databases.

    .venv/bin/python bench/compare_refs.py REF_A REF_B [--rounds 3] [--duration 4]
                                          [--connections 16] [--db-prefix ezra_compare_]

REF_B may be `WORKTREE` (this checkout as it is on disk, uncommitted changes included).
See bench/README.md for what is measured and how.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench_data import (ADMIN_NAME, PASSWORD, USER_NAME, GunicornServer, generate,
                        memory_kib)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from legacy_schema import LEGACY_COLUMNS, LEGACY_SCHEMA_SQL  # noqa: E402  (the migration test's)
PROBE_CONFIG = Path(__file__).resolve().parent / "gunicorn_probe.py"
WORKTREE = "WORKTREE"
ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# One legacy Werkzeug hash for every user (as the earlier backend stored them); the first
# login through each ref upgrades it to that ref's Argon2 cost.
LEGACY_METHOD = "pbkdf2:sha256:600000"
TOTAL_BUDGET_S = 1800.0
STARTUP_TIMEOUT_S = 60.0

LEGACY_DIRS = {"txt": ("txt", "txt"), "md": ("md", "md"), "docx": ("word", "docx")}


def say(*parts) -> None:
    print(*parts, flush=True)


def run(cmd: list[str], **kwargs) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


# --------------------------------------------------------------------------------------------
# Checkouts and their Python

@dataclass
class Checkout:
    name: str          # A or B
    ref: str
    sha: str
    path: Path
    python: str = ""
    venv_note: str = ""
    temporary: bool = True


def checkout(name: str, ref: str, tmp: Path) -> Checkout:
    if ref == WORKTREE:
        sha = run(["git", "rev-parse", "HEAD"], cwd=ROOT).strip()
        return Checkout(name, ref, sha + "+worktree", ROOT, temporary=False)
    sha = run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT).strip()
    path = tmp / f"tree-{name.lower()}"
    run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT)
    return Checkout(name, ref, sha, path)


def choose_python(co: Checkout, tmp: Path) -> None:
    """This checkout's .venv when the ref's requirements are the same; else a fresh venv."""
    own = ROOT / ".venv" / "bin" / "python"
    wanted = (co.path / "requirements.txt").read_text()
    if own.exists() and wanted == (ROOT / "requirements.txt").read_text():
        co.python, co.venv_note = str(own), f"reuses {ROOT / '.venv'} (same requirements.txt)"
        return
    venv = tmp / f"venv-{co.name.lower()}"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "-r", str(co.path / "requirements.txt")])
    co.python, co.venv_note = str(venv / "bin" / "python"), f"own venv {venv} (requirements differ)"


# --------------------------------------------------------------------------------------------
# Databases: the legacy schema and data set, copied, then upgraded by each ref

def admin_engine():
    from sqlalchemy import create_engine
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def drop_databases(names: list[str]) -> None:
    from sqlalchemy import text
    engine = admin_engine()
    with engine.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def seed_legacy(db_name: str, legacy_root: Path) -> dict:
    """The earlier backend's schema and rows; documents are files recorded by path.
    Files are written for the benchmark user's jobs only (the routes measured read those)."""
    from sqlalchemy import column, create_engine, insert, table, text
    from werkzeug.security import generate_password_hash

    data = generate(random.Random(20240601), datetime.now(timezone.utc))
    password_hash = generate_password_hash(PASSWORD, method=LEGACY_METHOD)
    users = [{k: row[k] for k in LEGACY_COLUMNS["users"] if k in row} | {"password": password_hash}
             for row in data.users]
    bench_user = next(u["id"] for u in data.users if u["username"] == USER_NAME)
    kinds: dict = {}
    for doc in data.documents:
        kinds.setdefault(doc["transcription_id"], []).append(doc)
    jobs = []
    for job in data.jobs:
        row = {k: job.get(k) for k in LEGACY_COLUMNS["transcriptions"]}
        for doc in kinds.get(job["id"], ()):
            folder, ext = LEGACY_DIRS[doc["kind"]]
            # Relative paths, as the earlier backend recorded them (relative to its app folder).
            relative = f"{legacy_root.name}/{folder}/u{job['user_id']}/{job['id']}/transcript.{ext}"
            row[f"{'word' if doc['kind'] == 'docx' else doc['kind']}_document_path"] = relative
            if job["user_id"] == bench_user:
                path = legacy_root.parent / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(doc["content"])
        jobs.append(row)
    logs = [{k: log[k] for k in LEGACY_COLUMNS["error_logs"] if k in log} for log in data.logs]

    engine = create_engine(ADMIN_URL.rsplit("/", 1)[0] + "/" + db_name)
    with engine.begin() as conn:
        conn.execute(text(LEGACY_SCHEMA_SQL))
        for name, rows in (("users", users), ("transcriptions", jobs), ("error_logs", logs)):
            target = table(name, *[column(c) for c in LEGACY_COLUMNS[name]])
            for start in range(0, len(rows), 5000):
                conn.execute(insert(target), rows[start:start + 5000])
        for name in ("users", "error_logs"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                              f"(SELECT max(id) FROM {name}))"))
        for name in ("transcribe_prompts", "proofread_prompts"):
            conn.execute(text(f"INSERT INTO {name} (version, prompt) VALUES ('EMPTY', '')"))
        conn.execute(text(
            "INSERT INTO system_settings (setting_key, setting_value, description) VALUES "
            "('active_transcribe_prompt_id', '1', NULL), ('active_proofread_prompt_id', '1', NULL),"
            " ('transcribing_allowed', 'true', NULL)"))
    engine.dispose()
    mine = [j for j in data.jobs if j["user_id"] == bench_user]
    return {
        "users": len(users), "jobs": len(jobs), "logs": len(logs),
        "documents": len(data.documents),
        "missing_doc_job": next(j["id"] for j in mine if j["status"] == "error"),
        "existing_doc_job": next(j["id"] for j in mine if j["status"] == "completed"),
    }


def copy_database(source: str, target: str) -> None:
    from sqlalchemy import text
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{target}" TEMPLATE "{source}"'))
    engine.dispose()


def vacuum_analyze(db_name: str) -> None:
    from sqlalchemy import create_engine, text
    engine = create_engine(ADMIN_URL.rsplit("/", 1)[0] + "/" + db_name,
                           isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


# --------------------------------------------------------------------------------------------
# Servers

class Server(GunicornServer):
    """One ref's checkout under gunicorn (with the statement-counting probe) on its copy of
    the legacy database."""

    def __init__(self, co: Checkout, db_name: str, legacy_root: Path, tmp: Path,
                 workers: int, threads: int, secret: str):
        self.co = co
        self.probe_dir = tmp / f"probe-{co.name.lower()}"
        self.probe_dir.mkdir()
        env = dict(os.environ)
        for key in list(env):  # the ref reads its settings from here, not from a .env
            if key.startswith(("ARGON2_", "SQLALCHEMY_", "LOGIN_")):
                del env[key]
        env.update(
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{db_name}",
            JWT_SECRET_KEY=secret, EZRA_ENV="production",
            STORAGE_DIR=str(tmp / f"storage-{co.name.lower()}"),
            LEGACY_FILES_DIR=str(legacy_root), JOB_RECOVERY_INTERVAL_SECONDS="0",
            BENCH_PROBE_DIR=str(self.probe_dir), PYTHONDONTWRITEBYTECODE="1")
        super().__init__(co.python, co.path, env, tmp / f"gunicorn-{co.name.lower()}.log",
                         workers, threads, extra_args=("-c", str(PROBE_CONFIG)))

    def upgrade(self) -> None:
        run([self.co.python, "-m", "flask", "--app", "app", "db", "upgrade"],
            cwd=self.co.path, env=self.env)

    def statement_counts(self) -> dict[str, Counter]:
        merged: dict[str, Counter] = {}
        for path in self.probe_dir.glob("*.json"):
            for label, counts in json.loads(path.read_text()).items():
                merged.setdefault(label, Counter()).update(
                    {int(k): v for k, v in counts.items()})
        return merged


# --------------------------------------------------------------------------------------------
# Load: wrk, with the worker memory sampled alongside

@dataclass
class Route:
    label: str
    method: str
    path: str
    token: str            # "admin" or "user" (looked up per server)
    expect: int = 200
    body: str | None = None
    slow: bool = False    # seconds per request: measured 3x as long (at least 12 s)


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    unexpected: int
    peak_rss_kib: int
    worker_cpu_ms: float  # the workers' CPU per request
    machine_busy: float  # the share of all CPUs busy during the measurement (any process)


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    bytes: int = 0

    def median(self, attr: str) -> float:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else float("nan")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def lua_script(route: Route, token: str, tmp: Path) -> Path:
    headers = {"Authorization": f"Bearer {token}", "X-Bench-Route": route.label}
    if route.body is not None:
        headers["Content-Type"] = "application/json"
    lines = [f'wrk.method = "{route.method}"']
    if route.body is not None:
        lines.append(f"wrk.body = {json.dumps(route.body)}")
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path = tmp / f"wrk-{abs(hash((route.label, token))) % 10**8}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(server: Server, route: Route, token: str, tmp: Path, duration: int,
        connections: int) -> Sample:
    script = lua_script(route, token, tmp)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", str(script), f"http://127.0.0.1:{server.port}{route.path}"]
    peak = 0
    stop = threading.Event()

    def sample_memory() -> None:
        nonlocal peak
        while not stop.is_set():
            for pid in server.workers():
                peak = max(peak, memory_kib(pid).get("VmRSS", 0))
            stop.wait(0.05)
    sampler = threading.Thread(target=sample_memory, daemon=True)
    cpu_before, ticks_before = server.cpu_seconds(), machine_busy_ticks()
    sampler.start()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    finally:
        stop.set()
        sampler.join(timeout=30)
    cpu_used = server.cpu_seconds() - cpu_before
    busy, total = (after - before for after, before in zip(machine_busy_ticks(), ticks_before))
    out = done.stdout
    if os.environ.get("BENCH_SHOW_WRK"):
        say(out)
    if "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed: {' '.join(cmd)}\n{out}\n{done.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = _ms(re.search(r"\n\s+50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in errors.groups()) if errors else 0
    unexpected = (non2xx if route.expect < 300 else requests - non2xx) + socket_errors
    return Sample(rps, p50, p99, requests, unexpected, peak,
                  worker_cpu_ms=cpu_used * 1000 / max(requests, 1),
                  machine_busy=busy / total if total else float("nan"))


# --------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref_a")
    parser.add_argument("ref_b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds before each")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--db-prefix", default="ezra_compare_",
                        help="the two databases are <prefix>a and <prefix>b (dropped at the end)")
    parser.add_argument("--only", help="regular expression: measure only matching routes")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 10 and 1 <= args.duration <= 60 and 1 <= args.connections <= 256
            and re.fullmatch(r"[a-z0-9_]{1,40}", args.db_prefix)):
        parser.error("rounds 1..10, duration 1..60 s, connections 1..256, "
                     "db-prefix [a-z0-9_]{1,40}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (Debian: apt-get install -y wrk)")

    started = time.monotonic()
    watchdog = threading.Timer(TOTAL_BUDGET_S, lambda: (say("watchdog: time budget exceeded"),
                                                        cleanup(), os._exit(3)))
    watchdog.daemon = True
    tmp = Path(tempfile.mkdtemp(prefix="ezra-compare-"))
    db_names = [f"{args.db_prefix}a", f"{args.db_prefix}b"]
    checkouts: list[Checkout] = []
    servers: list[Server] = []
    cleaned = threading.Lock()

    def cleanup() -> None:
        if not cleaned.acquire(blocking=False):
            return
        for server in servers:
            server.stop()
        try:
            drop_databases(db_names)
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning
            say(f"could not drop {db_names}: {exc}")
        for co in checkouts:
            if co.temporary:
                subprocess.run(["git", "worktree", "remove", "--force", str(co.path)], cwd=ROOT,
                               capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)

    watchdog.start()
    try:
        for name, ref in (("A", args.ref_a), ("B", args.ref_b)):
            co = checkout(name, ref, tmp)
            checkouts.append(co)
            choose_python(co, tmp)
            say(f"{name}: {ref} = {co.sha[:12]} in {co.path}; Python: {co.venv_note}")

        say(f"[{time.monotonic() - started:5.0f}s] legacy data set -> {db_names[0]}, "
            f"copied to {db_names[1]}")
        drop_databases(db_names)
        from sqlalchemy import text
        engine = admin_engine()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db_names[0]}"'))
        engine.dispose()
        legacy_root = tmp / "user-files"
        seeded = seed_legacy(db_names[0], legacy_root)
        copy_database(db_names[0], db_names[1])
        say(f"  {seeded['users']} users, {seeded['jobs']} transcriptions, "
            f"{seeded['documents']} documents (paths; files for {USER_NAME}), "
            f"{seeded['logs']} error logs")

        secret = secrets.token_urlsafe(36)
        for co, db_name in zip(checkouts, db_names):
            server = Server(co, db_name, legacy_root, tmp, args.workers, args.threads, secret)
            servers.append(server)
            server.upgrade()
            vacuum_analyze(db_name)
            say(f"[{time.monotonic() - started:5.0f}s] {co.name}: `flask db upgrade` done; "
                f"gunicorn {' '.join(server.cmd[3:])}")
            server.start(STARTUP_TIMEOUT_S)

        missing, existing = seeded["missing_doc_job"], seeded["existing_doc_job"]
        login_body = json.dumps({"username": USER_NAME, "password": PASSWORD})
        routes = [
            Route("GET /admin/users", "GET", "/admin/users", "admin"),
            Route("GET /admin/transcriptions", "GET", "/admin/transcriptions", "admin"),
            Route("GET /admin/transcriptions?limit=100", "GET",
                  "/admin/transcriptions?limit=100", "admin"),
            Route("GET /admin/logs", "GET", "/admin/logs", "admin"),
            Route("GET /admin/logs?limit=100", "GET", "/admin/logs?limit=100", "admin"),
            Route("GET /admin/stats", "GET", "/admin/stats", "admin"),
            Route("GET /transcriptions", "GET", "/transcriptions", "user"),
            Route("GET /download/word/<id> (404)", "GET", f"/download/word/{missing}", "user",
                  expect=404),
            Route("GET /download/word/<id> (200)", "GET", f"/download/word/{existing}", "user"),
            Route("POST /login", "POST", "/login", "none", body=login_body, slow=True),
        ]
        if args.only:
            routes = [r for r in routes if re.search(args.only, r.label)]
        tokens = {}
        cells: dict[tuple[str, str], Cell] = {}
        for server in servers:
            # The first sign-in upgrades the legacy hash to the ref's Argon2 cost.
            tokens[server.co.name] = {"admin": server.login(ADMIN_NAME),
                                      "user": server.login(USER_NAME), "none": ""}
            for route in routes:
                token = tokens[server.co.name][route.token]
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                if route.body:
                    headers["Content-Type"] = "application/json"
                status, body = server.request(route.method, route.path,
                                              route.body.encode() if route.body else None, headers)
                if status != route.expect:
                    raise RuntimeError(f"{server.co.name} {route.label}: {status} "
                                       f"(expected {route.expect}) {body[:200]!r}")
                cells[(route.label, server.co.name)] = Cell(bytes=len(body))

        say(f"[{time.monotonic() - started:5.0f}s] load: wrk -t2 -c{args.connections} "
            f"-d{args.duration:g}s per route and ref ({args.warmup:g}s warm-up each), "
            f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f}")
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for route in routes:
                for server in order:
                    token = tokens[server.co.name][route.token]
                    duration = max(3 * args.duration, 12) if route.slow else args.duration
                    if args.warmup:
                        wrk(server, route, token, tmp, args.warmup, args.connections)
                    sample = wrk(server, route, token, tmp, duration, args.connections)
                    cells[(route.label, server.co.name)].samples.append(sample)
            say(f"[{time.monotonic() - started:5.0f}s] round {round_no + 1} done; load average "
                f"{os.getloadavg()[0]:.2f}")

        peaks = {}
        for server in servers:
            peaks[server.co.name] = {pid: memory_kib(pid).get("VmHWM", 0)
                                     for pid in sorted(server.workers())}
            server.stop()
        counts = {s.co.name: s.statement_counts() for s in servers}
        report(routes, cells, counts, peaks, servers, args)
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        watchdog.cancel()
        cleanup()


def _count_text(counter: Counter | None) -> str:
    if not counter:
        return "-"
    values = sorted(counter)
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def report(routes, cells, counts, peaks, servers, args) -> None:
    a, b = (s.co for s in servers)
    say(f"\n== A = {a.ref} ({a.sha[:12]}), B = {b.ref} ({b.sha[:12]}); gunicorn -w "
        f"{args.workers} --threads {args.threads}; wrk {args.connections} connections; "
        f"median of {args.rounds} rounds; {os.cpu_count()} CPUs shared with the client ==")
    head = (f"{'route':34s} {'req/s A':>8s} {'req/s B':>8s} {'B/A':>6s} {'p50 A':>7s} "
            f"{'p50 B':>7s} {'p99 A':>7s} {'p99 B':>7s} {'bytes A':>8s} {'bytes B':>8s} "
            f"{'SQL A':>5s} {'SQL B':>5s} {'RSS A':>6s} {'RSS B':>6s}")
    say(head)
    say("-" * len(head))
    problems = []
    for route in routes:
        ca, cb = cells[(route.label, "A")], cells[(route.label, "B")]
        ra, rb = ca.median("rps"), cb.median("rps")
        say(f"{route.label:34s} {ra:8.1f} {rb:8.1f} {(rb / ra if ra else float('nan')):5.2f}x {ca.median('p50_ms'):7.1f} "
            f"{cb.median('p50_ms'):7.1f} {ca.median('p99_ms'):7.1f} {cb.median('p99_ms'):7.1f} "
            f"{ca.bytes:8d} {cb.bytes:8d} "
            f"{_count_text(counts['A'].get(route.label)):>5s} "
            f"{_count_text(counts['B'].get(route.label)):>5s} "
            f"{max(s.peak_rss_kib for s in ca.samples) / 1024:6.0f} "
            f"{max(s.peak_rss_kib for s in cb.samples) / 1024:6.0f}")
        for name, cell in (("A", ca), ("B", cb)):
            bad = sum(s.unexpected for s in cell.samples)
            if bad:
                problems.append(f"{name} {route.label}: {bad} answers with an unexpected status "
                                "or socket errors")
    say("(req/s, p50/p99 ms: median over rounds; bytes: one response body; SQL: round trips "
        "per request = statements + pool pre-ping + COMMIT/ROLLBACK, counted in the workers "
        "by bench/gunicorn_probe.py; RSS: highest worker VmRSS in MiB sampled during that "
        "route)")
    say("req/s per round: " + "; ".join(
        f"{r.label}: A " + "/".join(f"{s.rps:.0f}" for s in cells[(r.label, 'A')].samples)
        + " B " + "/".join(f"{s.rps:.0f}" for s in cells[(r.label, 'B')].samples)
        for r in routes))
    say("per round, gunicorn CPU per request (ms) and the share of the machine's CPUs busy (a "
        "round that halves with CPUs idle is the machine, not the code): " + "; ".join(
            f"{r.label}: " + " ".join(
                name + " " + "/".join(f"{s.worker_cpu_ms:.2f}@{s.machine_busy:.0%}"
                                      for s in cells[(r.label, name)].samples)
                for name in ("A", "B"))
            for r in routes))
    for server in servers:
        name = server.co.name
        say(f"{name}: peak RSS (VmHWM) of each worker over the whole run: "
            + ", ".join(f"{kib / 1024:.0f} MiB" for kib in peaks[name].values())
            + f"; workers seen {len(server.worker_pids)} (a recycled worker adds one)")
    for problem in problems:
        say(f"PROBLEM: {problem}")


if __name__ == "__main__":
    sys.exit(main())
