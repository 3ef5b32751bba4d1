"""Benchmark of the list routes on a realistically filled PostgreSQL database.

    .venv/bin/python bench/bench_lists.py [--database-url URL] [--requests N] [--concurrency 16]

What it does (see bench/README.md):
1. drops and recreates the database (its name must start with `ezra_bench`), builds the
   schema with the migrations and seeds 200 users, 20,000 transcriptions (100 per user),
   their stored documents and 500 error logs with bulk INSERTs;
2. starts gunicorn (`wsgi:app`) on 127.0.0.1 with a free port and logs in as an admin and a
   normal user;
3. sends N requests per list route over C concurrent keep-alive connections and reports
   req/s, p50/p99 latency, response size and item count (every answer must be a 200 with a
   JSON array);
4. counts, in-process, the SQL statements each route issues, on the full data and again after
   deleting down to 10 users' data, and runs EXPLAIN ANALYZE on the list queries;
5. prints a summary table and checks the targets (constant statement count <= 3 per list
   route; GET /admin/users p50 < 50 ms).

Everything is bounded: the script stops by itself within about five minutes, and gunicorn is
stopped on every exit path.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench_data import ADMIN_NAME, PASSWORD, USER_NAME, GunicornServer, generate

ROOT = Path(__file__).resolve().parent.parent
SHIM_DIR = Path("/tmp/shim")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/ezra_bench"
KEEP_USERS_SMALL = 10
BASELINE = "GET /admin/settings (baseline, empty)"

TOTAL_BUDGET_S = 285.0        # hard stop for the whole script
ROUTE_BUDGET_S = 60.0         # measured phase of one route, at most
RESERVED_S = 40.0             # kept for the statement counts, EXPLAIN and the summary
WARMUP_REQUESTS = 64
SERIAL_REQUESTS = 30
STARTUP_TIMEOUT_S = 40.0
REQUEST_TIMEOUT_S = 30.0

STARTED = time.monotonic()
DEADLINE = STARTED + TOTAL_BUDGET_S


def say(*parts) -> None:
    print(*parts, flush=True)


def elapsed() -> str:
    return f"[{time.monotonic() - STARTED:6.1f}s]"


# --------------------------------------------------------------------------------------------
# Environment: the app's modules, and stand-ins while pandoc/audio services are missing

def _prepare_imports() -> None:
    missing = [name for name in ("pandoc_service.py", "audio_service.py")
               if not (ROOT / name).exists()]
    if missing and SHIM_DIR.is_dir():
        sys.path.insert(0, str(SHIM_DIR))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(SHIM_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        say(f"note: {', '.join(missing)} missing; using stand-ins from {SHIM_DIR}")
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------
# 1. Database: recreate, migrate, seed

def check_url(raw: str):
    from sqlalchemy.engine import make_url

    from config import normalize_database_url
    url = make_url(normalize_database_url(raw))
    if not url.get_backend_name().startswith("postgresql"):
        sys.exit("--database-url must be a PostgreSQL URL")
    if url.host not in ("127.0.0.1", "localhost"):
        sys.exit("--database-url must point at 127.0.0.1 (this benchmark only talks to it)")
    if not (url.database or "").startswith("ezra_bench"):
        sys.exit("refusing to drop a database whose name does not start with 'ezra_bench'")
    return url


def recreate_database(url) -> None:
    from sqlalchemy import create_engine, text
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    quoted = engine.dialect.identifier_preparer.quote(url.database)
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    engine.dispose()


def app_config(url_string: str, secret: str, storage: Path) -> dict:
    return {
        "DATABASE_URL": url_string,
        "JWT_SECRET_KEY": secret,
        "EZRA_ENV": "production",
        "STORAGE_DIR": str(storage / "storage"),
        "LEGACY_FILES_DIR": str(storage / "user-files"),
        "PIPELINE_ENABLED": False,
        "JOB_RECOVERY_INTERVAL_SECONDS": 0,
    }


def _quiet_logging() -> None:
    # create_app and Alembic's fileConfig switch INFO logging on; the figures matter here.
    for name in ("", "alembic", "ezra", "sqlalchemy", "flask_migrate"):
        logging.getLogger(name).setLevel(logging.WARNING)


def migrate(app) -> None:
    from flask_migrate import upgrade
    logging.disable(logging.INFO)  # Alembic's fileConfig turns INFO on for its own loggers
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
    finally:
        logging.disable(logging.NOTSET)
    _quiet_logging()


def _filter(table, rows: list[dict]) -> list[dict]:
    """Keep only keys the table has (the schema is still moving); say what was dropped."""
    columns = set(table.c.keys())
    dropped = {k for row in rows[:1] for k in row} - columns
    if dropped:
        say(f"  note: {table.name} has no column(s) {sorted(dropped)}; not seeded")
        rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
    return rows


def seed(app, rng: random.Random) -> dict:
    """Bulk-insert the data set; return the ids the benchmark needs."""
    from database import db
    from password import hash_password
    from sqlalchemy import insert, text

    with app.app_context():
        password_hash = hash_password(PASSWORD)  # once; every user shares it
        data = generate(rng, datetime.now(timezone.utc))
        users = [row | {"password": password_hash} for row in data.users]
        jobs, docs, logs = data.jobs, data.documents, data.logs

        tables = db.metadata.tables
        with db.engine.begin() as conn:
            conn.execute(insert(tables["users"]), _filter(tables["users"], users))
            conn.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), "
                              "(SELECT max(id) FROM users))"))
            table = tables["transcriptions"]
            jobs = _filter(table, jobs)
            for start in range(0, len(jobs), 5000):
                conn.execute(insert(table), jobs[start:start + 5000])
            table = tables["documents"]
            docs = _filter(table, docs)
            for start in range(0, len(docs), 10000):
                conn.execute(insert(table), docs[start:start + 10000])
            conn.execute(insert(tables["error_logs"]), _filter(tables["error_logs"], logs))
        db.engine.dispose()
    return {"admin_id": 1, "user_id": 2, "users": len(users), "jobs": len(jobs),
            "documents": len(docs), "logs": len(logs)}


def vacuum_analyze(url) -> None:
    from sqlalchemy import create_engine, text
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


# --------------------------------------------------------------------------------------------
# 2. gunicorn

def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class Server(GunicornServer):
    """This checkout under gunicorn, on the bench database, as in production."""

    def __init__(self, url_string: str, secret: str, storage: Path, workers: int, threads: int):
        import config
        env = dict(os.environ)
        env.update(DATABASE_URL=url_string, JWT_SECRET_KEY=secret, EZRA_ENV="production",
                   STORAGE_DIR=str(storage / "storage"),
                   LEGACY_FILES_DIR=str(storage / "user-files"))
        if "JOB_RECOVERY_INTERVAL_SECONDS" in getattr(config, "_VARIABLES", {}):
            env["JOB_RECOVERY_INTERVAL_SECONDS"] = "0"
        super().__init__(sys.executable, ROOT, env, storage / "gunicorn.log", workers, threads)


# --------------------------------------------------------------------------------------------
# 3. Load

@dataclass
class LoadResult:
    label: str
    path: str
    requested: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    wall: float = 0.0
    size: int = 0
    items: int | None = None
    problems: list[str] = field(default_factory=list)
    stopped_early: bool = False
    server_cpu_ms: float = float("nan")    # gunicorn CPU per request
    client_cpu_ms: float = float("nan")    # this script's CPU per request
    machine_busy: float = float("nan")     # share of all CPUs busy during the run
    serial_p50: float = float("nan")       # p50 over one connection, no concurrency

    def pct(self, p: float) -> float:
        values = sorted(self.latencies)
        if not values:
            return float("nan")
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else float("nan")

    @property
    def ok(self) -> bool:
        return not self.problems


class _Conn:
    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict) -> tuple[int, str, bytes]:
        for attempt in (1, 2):  # an idle keep-alive connection may have been closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=REQUEST_TIMEOUT_S)
            try:
                self.conn.request("GET", path, headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                if response.will_close:
                    self.close()
                return response.status, response.getheader("Content-Type", ""), body
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(server: "Server", label: str, path: str, token: str, n: int,
             concurrency: int, budget: float) -> LoadResult:
    port = server.port
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "Connection": "keep-alive"}
    conns = [_Conn(port) for _ in range(concurrency)]
    result = LoadResult(label, path, n)
    lock = threading.Lock()
    bodies: dict[bytes, bytes] = {}   # digest -> one body: identical answers are parsed once
    digests: Counter = Counter()
    sizes: Counter = Counter()

    def phase(total: int, record: bool, stop_at: float) -> None:
        counter = iter(range(total))

        def worker(index: int) -> None:
            conn = conns[index]
            while True:
                with lock:
                    taken = next(counter, None)
                if taken is None or time.monotonic() > stop_at:
                    return
                t0 = time.perf_counter()
                try:
                    status, ctype, body = conn.get(path, headers)
                except Exception as exc:  # noqa: BLE001 - reported, never hidden
                    with lock:
                        result.statuses["exception"] += 1
                        if len(result.problems) < 5:
                            result.problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                if not record:
                    continue
                digest = hashlib.blake2b(body, digest_size=16).digest()
                with lock:
                    result.latencies.append(dt)
                    result.statuses[status] += 1
                    digests[digest] += 1
                    sizes[len(body)] += 1
                    if digest not in bodies and len(bodies) < 20:
                        bodies[digest] = body
                    if (status != 200 or "json" not in ctype) and len(result.problems) < 5:
                        result.problems.append(f"{status} {ctype}: {body[:200]!r}")

        threads = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, stop_at - time.monotonic() + REQUEST_TIMEOUT_S + 5))

    phase(WARMUP_REQUESTS, record=False, stop_at=min(DEADLINE, time.monotonic() + 15))
    stop_at = min(DEADLINE - RESERVED_S, time.monotonic() + budget)
    server_cpu0, client_cpu0, machine0 = server.cpu_seconds(), time.process_time(), machine_cpu()
    t0 = time.perf_counter()
    phase(n, record=True, stop_at=stop_at)
    result.wall = time.perf_counter() - t0
    server_cpu1, client_cpu1, machine1 = server.cpu_seconds(), time.process_time(), machine_cpu()
    for conn in conns:
        conn.close()
    if result.latencies:
        result.server_cpu_ms = (server_cpu1 - server_cpu0) * 1000 / len(result.latencies)
        result.client_cpu_ms = (client_cpu1 - client_cpu0) * 1000 / len(result.latencies)
    if machine1[1] > machine0[1]:
        result.machine_busy = (machine1[0] - machine0[0]) / (machine1[1] - machine0[1])

    # The same route over one connection, one request at a time: the latency without queueing.
    serial, one = [], _Conn(port)
    stop_serial = min(DEADLINE - RESERVED_S + 8, time.monotonic() + 8)
    for _ in range(SERIAL_REQUESTS):
        if time.monotonic() > stop_serial:
            break
        t1 = time.perf_counter()
        status, _ctype, _body = one.get(path, headers)
        if status == 200:
            serial.append(time.perf_counter() - t1)
    one.close()
    if serial:
        serial.sort()
        result.serial_p50 = serial[max(0, math.ceil(len(serial) / 2) - 1)] * 1000

    done = len(result.latencies)
    if done < n:
        result.stopped_early = True
    if len(bodies) < len(digests):
        result.problems.append(f"{len(digests) - len(bodies)} distinct bodies left unparsed")
    items = set()
    for body in bodies.values():
        try:
            data = json.loads(body)
        except ValueError:
            result.problems.append(f"not JSON: {body[:120]!r}")
            continue
        if not isinstance(data, list):
            result.problems.append(f"not a JSON array: {body[:120]!r}")
            continue
        items.add(len(data))
    if len(digests) > 1:
        result.problems.append(f"{len(digests)} different bodies for identical requests")
    result.items = items.pop() if len(items) == 1 else None
    result.size = sizes.most_common(1)[0][0] if sizes else 0
    return result


# --------------------------------------------------------------------------------------------
# 4. Statement counts, in-process

@dataclass
class CountResult:
    statements: list[tuple[str, object]]
    status: int
    items: int | None
    total_ms: float
    sql_ms: float


class StatementCounter:
    def __init__(self, app):
        from sqlalchemy import event
        from database import db
        self.app = app
        self.client = app.test_client()
        self.statements: list[tuple[str, object]] = []
        self.sql_seconds = 0.0
        self._t0 = 0.0
        with app.app_context():
            self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append((statement, parameters))
        self._t0 = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.sql_seconds += time.perf_counter() - self._t0

    def token(self, username: str) -> str:
        response = self.client.post("/login", json={"username": username, "password": PASSWORD})
        if response.status_code != 200:
            raise RuntimeError(f"in-process login failed: {response.status_code} "
                               f"{response.get_data(as_text=True)[:200]}")
        return response.get_json()["access_token"]

    def count(self, path: str, token: str, repeat: int = 5) -> CountResult:
        headers = {"Authorization": f"Bearer {token}"}
        runs = []
        for _ in range(repeat):
            self.statements = []
            self.sql_seconds = 0.0
            t0 = time.perf_counter()
            response = self.client.get(path, headers=headers)
            total = time.perf_counter() - t0
            data = response.get_json(silent=True)
            runs.append(CountResult(list(self.statements), response.status_code,
                                    len(data) if isinstance(data, list) else None,
                                    total * 1000, self.sql_seconds * 1000))
        counts = {len(r.statements) for r in runs}
        best = sorted(runs, key=lambda r: r.total_ms)[len(runs) // 2]  # the median run
        if len(counts) > 1:
            say(f"  note: {path} issued a varying number of statements: {sorted(counts)}")
        return best

    def close(self) -> None:
        from database import db
        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()


def statement_counter(url_string: str, secret: str, storage: Path):
    """A StatementCounter on a fresh app, and the token each route is called with (the
    user's list as the user, every admin route as the admin)."""
    from app import create_app
    counter = StatementCounter(create_app(app_config(url_string, secret, storage)))
    _quiet_logging()
    admin, user = counter.token(ADMIN_NAME), counter.token(USER_NAME)
    return counter, lambda path: user if path == "/transcriptions" else admin


def explain(engine, statement: str, parameters, options: str = "ANALYZE, BUFFERS") -> list[str]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"EXPLAIN ({options}) " + statement, parameters)
        lines = [row[0] for row in cursor.fetchall()]
        cursor.close()
        raw.rollback()
        return lines
    finally:
        raw.close()


def shrink(app, keep_users: int, normal_user_id: int) -> dict:
    """Delete down to `keep_users` users' data; the normal user keeps one transcription."""
    from sqlalchemy import text
    from database import db
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE id > :n"), {"n": keep_users})
            conn.execute(text(
                "DELETE FROM transcriptions WHERE user_id = :u AND id <> (SELECT id FROM "
                "transcriptions WHERE user_id = :u ORDER BY created_at DESC LIMIT 1)"),
                {"u": normal_user_id})
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                      for t in ("users", "transcriptions", "documents", "error_logs")}
        db.engine.dispose()
    return counts


# --------------------------------------------------------------------------------------------
# 5. Main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 256:
        parser.error("--requests must be 1..100000 and --concurrency 1..256")

    _prepare_imports()
    url = check_url(args.database_url)
    url_string = url.render_as_string(hide_password=False)
    secret = secrets.token_urlsafe(36)  # 48 characters
    assert len(secret) == 48
    storage = Path(tempfile.mkdtemp(prefix="ezra-bench-"))
    server: Server | None = None

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background

    def watchdog():
        say(f"\nwatchdog: {TOTAL_BUDGET_S + 10:.0f}s budget exceeded; stopping")
        if server is not None:
            server.stop()
        os._exit(3)
    timer = threading.Timer(TOTAL_BUDGET_S + 10, watchdog)
    timer.daemon = True
    timer.start()

    try:
        from app import create_app
        say(f"{elapsed()} database {url.render_as_string(hide_password=True)}: recreate + migrate")
        recreate_database(url)
        app = create_app(app_config(url_string, secret, storage))
        _quiet_logging()
        migrate(app)
        say(f"{elapsed()} seeding")
        t0 = time.perf_counter()
        seeded = seed(app, random.Random(20240601))
        vacuum_analyze(url)
        say(f"{elapsed()} seeded {seeded['users']} users, {seeded['jobs']} transcriptions, "
            f"{seeded['documents']} documents, {seeded['logs']} error logs "
            f"in {time.perf_counter() - t0:.1f}s (incl. VACUUM ANALYZE)")
        with app.app_context():
            from database import db
            db.engine.dispose()

        server = Server(url_string, secret, storage, args.workers, args.threads)
        say(f"{elapsed()} gunicorn: {' '.join(server.cmd[1:])} (port {server.port})")
        server.start(STARTUP_TIMEOUT_S)
        admin_token = server.login(ADMIN_NAME)
        user_token = server.login(USER_NAME)
        say(f"{elapsed()} gunicorn ready; logged in as {ADMIN_NAME} and {USER_NAME}")

        routes = [("GET /transcriptions (user)", "/transcriptions", user_token),
                  ("GET /admin/users", "/admin/users", admin_token),
                  ("GET /admin/transcriptions", "/admin/transcriptions", admin_token),
                  ("GET /admin/transcriptions?limit=50", "/admin/transcriptions?limit=50",
                   admin_token),
                  ("GET /admin/logs", "/admin/logs", admin_token),
                  # Reference, not a target: an empty list, i.e. the fixed cost of a request
                  # (routing, JWT check, user lookup, one query, JSON).
                  (BASELINE, "/admin/settings", admin_token)]
        loads: dict[str, LoadResult] = {}
        say(f"\n== HTTP: {args.requests} requests per route, {args.concurrency} keep-alive "
            f"connections, {WARMUP_REQUESTS} warm-up requests; load average before: "
            f"{os.getloadavg()[0]:.2f} (other processes skew the figures) ==")
        for index, (label, path, token) in enumerate(routes):
            left = DEADLINE - RESERVED_S - time.monotonic()
            if left < 5:
                say(f"  {label}: skipped (time budget)")
                continue
            # Share what is left between the remaining routes (warm-up and serial runs too).
            budget = min(ROUTE_BUDGET_S, left / (len(routes) - index) - 10)
            r = run_load(server, label, path, token, args.requests, args.concurrency,
                         max(5.0, budget))
            loads[label] = r
            say(f"  {label:36s} {r.rps:7.1f} req/s  p50 {r.pct(50):7.1f} ms  "
                f"p99 {r.pct(99):7.1f} ms  {r.size / 1024:8.1f} KiB  {r.items} items  "
                f"statuses {dict(r.statuses)}")
            say(f"  {'':36s} one connection: p50 {r.serial_p50:.1f} ms; CPU per request: "
                f"gunicorn {r.server_cpu_ms:.1f} ms, this client {r.client_cpu_ms:.1f} ms; "
                f"all CPUs {r.machine_busy:.0%} busy")
            if r.stopped_early:
                say(f"    note: only {len(r.latencies)} of {args.requests} requests within this "
                    f"route's time budget ({budget:.0f}s)")
            for problem in r.problems:
                say(f"    PROBLEM: {problem}")
        server.stop()
        server_log = server.log_tail(10)
        server = None
        if server_log.strip():
            say(f"  gunicorn log tail:\n{server_log}")

        say(f"\n{elapsed()} == SQL statements per request (in-process, Flask test client) ==")
        counter, token_for = statement_counter(url_string, secret, storage)
        full: dict[str, CountResult] = {}
        for label, path, _ in routes:
            full[label] = counter.count(path, token_for(path))
        for label, res in full.items():
            say(f"  {label:36s} {len(res.statements)} statements, status {res.status}, "
                f"{res.items} items, in-process {res.total_ms:6.1f} ms of which SQL "
                f"{res.sql_ms:5.1f} ms")
            for statement, _ in res.statements:
                say(f"      - {' '.join(statement.split())[:150]}")

        # EXPLAIN ANALYZE on each route's list query (the last statement it issued)
        say(f"\n{elapsed()} == EXPLAIN (ANALYZE, BUFFERS) of each list query, full data ==")
        slowest = max(loads.values(), key=lambda r: r.pct(50)).label if loads else None
        say(f"  (load average now {os.getloadavg()[0]:.2f})")
        plans: dict[str, list[str]] = {}
        for label, res in full.items():
            statement, parameters = res.statements[-1]
            plans[label] = explain(counter.engine, statement, parameters)
            key = [line for line in plans[label] if "Execution Time" in line]
            verbose = "\n".join(explain(counter.engine, statement, parameters, "VERBOSE"))
            hashed = len(set(re.findall(r"hashed SubPlan \d+", verbose)))
            say(f"  {label:36s} top: {plans[label][0].strip()[:110]}")
            say(f"  {'':36s} {key[0].strip() if key else ''}"
                + (f"; {hashed} hashed SubPlan(s): each is built over the whole table"
                   if hashed else ""))
        shown = []
        for label in (slowest, "GET /admin/transcriptions?limit=50", "GET /admin/users"):
            if label in plans and label not in shown:
                shown.append(label)
                say(f"\n  full plan of {label}"
                    + (" (slowest route over HTTP)" if label == slowest else "") + ":")
                for line in plans[label]:
                    say(f"    {line}")
        counter.close()

        say(f"\n{elapsed()} == shrinking to {KEEP_USERS_SMALL} users' data "
            f"({USER_NAME} keeps 1 transcription) ==")
        remaining = shrink(app, KEEP_USERS_SMALL, seeded["user_id"])
        vacuum_analyze(url)
        say(f"  rows now: {remaining}")
        counter, token_for = statement_counter(url_string, secret, storage)
        small: dict[str, CountResult] = {}
        for label, path, _ in routes:
            small[label] = counter.count(path, token_for(path), repeat=3)
            say(f"  {label:36s} {len(small[label].statements)} statements, "
                f"{small[label].items} items")
        counter.close()

        # Summary
        say(f"\n{elapsed()} == SUMMARY (gunicorn -w {args.workers} --threads {args.threads}, "
            f"{args.concurrency} connections, {os.cpu_count()} CPUs, client on the same machine; "
            f"busiest route's CPUs {max((r.machine_busy for r in loads.values()), default=0):.0%} "
            f"busy) ==")
        head = (f"{'route':36s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'p50 c=1':>7s} "
                f"{'srv CPU':>7s} {'KiB':>8s} {'items':>6s} {'SQL full':>8s} {'SQL small':>9s} "
                f"{'items small':>11s}  ok")
        say(head)
        say("-" * len(head))
        failures = []
        for label, _, _ in routes:
            r = loads.get(label)
            f, s = full[label], small[label]
            stmt_ok = len(f.statements) == len(s.statements) and len(f.statements) <= 3
            if label == BASELINE:
                stmt_ok = True
            http_ok = r is not None and r.ok and r.statuses.get(200, 0) == len(r.latencies)
            if not stmt_ok:
                failures.append(f"{label}: {len(f.statements)} statements on full data, "
                                f"{len(s.statements)} on small data (target: constant, <= 3)")
            if not http_ok:
                failures.append(f"{label}: HTTP problems: {r.problems if r else 'not run'}")
            say(f"{label:36s} {r.rps if r else float('nan'):7.1f} "
                f"{r.pct(50) if r else float('nan'):7.1f} {r.pct(99) if r else float('nan'):7.1f} "
                f"{r.serial_p50 if r else float('nan'):7.1f} "
                f"{r.server_cpu_ms if r else float('nan'):7.1f} "
                f"{(r.size / 1024) if r else 0:8.1f} {str(r.items if r else '-'):>6s} "
                f"{len(f.statements):8d} {len(s.statements):9d} {str(s.items):>11s}  "
                f"{'yes' if stmt_ok and http_ok else 'NO'}"
                + (f" (only {len(r.latencies)} requests: time budget)"
                   if r is not None and r.stopped_early else ""))
        say("(p50 c=1: one connection, no concurrency; srv CPU: gunicorn CPU ms per request; "
            "KiB/items: one answer; SQL: statements per request on full / shrunk data)")
        users = loads.get("GET /admin/users")
        if users is None or not users.pct(50) < 50:
            failures.append(f"GET /admin/users p50 = "
                            f"{users.pct(50) if users else float('nan'):.1f} ms (target < 50 ms)")
        say("")
        say("targets: list routes issue a constant number of statements (<= 3): "
            + ("met" if not any("statements" in f for f in failures) else "NOT met"))
        say(f"targets: GET /admin/users p50 < 50 ms: "
            f"{'met' if users and users.pct(50) < 50 else 'NOT met'} "
            f"({users.pct(50) if users else float('nan'):.1f} ms)")
        for failure in failures:
            say(f"  FAIL {failure}")
        say(f"{elapsed()} done")
        return 1 if failures else 0
    except KeyboardInterrupt as exc:
        say(f"\ninterrupted ({exc}); stopping")
        return 130
    finally:
        if server is not None:
            server.stop()
        timer.cancel()


if __name__ == "__main__":
    sys.exit(main())
