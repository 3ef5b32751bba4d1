"""gunicorn config used by compare_refs.py (`-c bench/gunicorn_probe.py`): counts the SQL
round trips of every request without changing the app under test, so any commit can be
measured the same way.

Counted per request, in the worker thread that serves it: statements sent through
SQLAlchemy (`before_cursor_execute`), pool pre-ping probes (`SELECT 1` sent by the dialect's
`do_ping`, which bypasses the cursor events) and COMMIT/ROLLBACK of an open transaction.
A request names its route in the `X-Bench-Route` header; each worker writes its counts to
`$BENCH_PROBE_DIR/<pid>.json` when it exits.
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter, defaultdict

_local = threading.local()
_counts: dict[str, Counter] = defaultdict(Counter)
_lock = threading.Lock()


def _bump(*_args, **_kwargs) -> None:
    _local.n = getattr(_local, "n", 0) + 1


def _bump_if_open(conn) -> None:
    """COMMIT/ROLLBACK reach the server only when a transaction is open (psycopg2 skips
    them when idle, e.g. in autocommit)."""
    try:
        dbapi_connection = conn.connection.dbapi_connection
        idle = dbapi_connection.get_transaction_status() == 0  # TRANSACTION_STATUS_IDLE
    except Exception:  # noqa: BLE001 - another driver: count it
        idle = False
    if not idle:
        _bump()


def post_fork(server, worker) -> None:
    import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401 - its do_ping is patched
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.engine.default import DefaultDialect

    event.listen(Engine, "before_cursor_execute", _bump)
    event.listen(Engine, "commit", _bump_if_open)
    event.listen(Engine, "rollback", _bump_if_open)
    pending = [DefaultDialect]
    while pending:  # every dialect class with its own do_ping
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "do_ping" in cls.__dict__:
            cls.do_ping = _counted(cls.__dict__["do_ping"])


def _counted(ping):
    def counted_ping(self, dbapi_connection):
        _bump()
        return ping(self, dbapi_connection)
    return counted_ping


def pre_request(worker, req) -> None:
    _local.n = 0


def post_request(worker, req, environ, resp) -> None:
    label = environ.get("HTTP_X_BENCH_ROUTE")
    if label:
        with _lock:
            _counts[label][getattr(_local, "n", 0)] += 1


def worker_exit(server, worker) -> None:
    directory = os.environ.get("BENCH_PROBE_DIR")
    if directory:
        with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as fh:
            json.dump({label: dict(c) for label, c in _counts.items()}, fh)
