"""gunicorn config used by compare_refs.py (`-c bench/gunicorn_probe.py`): counts the SQL
round trips of every request without changing the app under test, so any commit can be
measured the same way.

Counted per request, in the worker thread that serves it: statements sent through a
psycopg2 cursor (a counting cursor class set on every new connection: SQLAlchemy's statements,
its pool pre-ping's `SELECT 1`, and reads that bypass SQLAlchemy, like the download lane's)
and COMMIT/ROLLBACK of an open transaction.
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
    import psycopg2.extensions
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            _bump()
            return super().execute(query, vars)

        def executemany(self, query, vars_list):
            _bump()
            return super().executemany(query, vars_list)

    def count_cursors(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, psycopg2.extensions.connection):
            dbapi_connection.cursor_factory = CountingCursor

    # At the driver: statements SQLAlchemy sends, its pool pre-ping's SELECT 1, and reads
    # that bypass SQLAlchemy's execution layer (download_lane.py) all pass a cursor.
    event.listen(Engine, "connect", count_cursors)
    event.listen(Engine, "commit", _bump_if_open)
    event.listen(Engine, "rollback", _bump_if_open)


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
