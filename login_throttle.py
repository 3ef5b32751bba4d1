"""Login rate limits per account and per client address, kept in the database so that every
gunicorn worker (and every machine) shares them.

After `LOGIN_MAX_FAILURES_PER_ACCOUNT` failures within `LOGIN_WINDOW_SECONDS` the account is
locked for `LOGIN_LOCKOUT_SECONDS`; likewise an address after
`LOGIN_MAX_FAILURES_PER_ADDRESS`. A locked caller gets 429 with Retry-After. Unknown
usernames count like real ones, so the limit does not reveal which accounts exist.
"""
from __future__ import annotations

import math
from datetime import timedelta

from flask import current_app, request
from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from database import db
from errors import APIError
from models import LoginThrottle, as_utc, utcnow


def _keys(username: str) -> list[tuple[str, int]]:
    config = current_app.config
    return [(f"user:{username.lower()}"[:200], config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]),
            (f"ip:{request.remote_addr or 'unknown'}"[:200],
             config["LOGIN_MAX_FAILURES_PER_ADDRESS"])]


def check_not_locked(username: str) -> None:
    now = utcnow()
    keys = [key for key, _ in _keys(username)]
    locked_until = db.session.execute(
        select(LoginThrottle.locked_until).where(LoginThrottle.key.in_(keys),
                                                 LoginThrottle.locked_until.is_not(None))
    ).scalars().all()
    waits = [(as_utc(until) - now).total_seconds() for until in locked_until]
    wait = max([w for w in waits if w > 0], default=0)
    if wait:
        raise APIError(429, "Too many failed sign-ins; try again in "
                            f"{math.ceil(wait / 60)} minute(s)",
                       {"Retry-After": str(math.ceil(wait))})


def record_failure(username: str) -> None:
    config = current_app.config
    now = utcnow()
    window = timedelta(seconds=config["LOGIN_WINDOW_SECONDS"])
    lockout = timedelta(seconds=config["LOGIN_LOCKOUT_SECONDS"])
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    for key, limit in _keys(username):
        table = LoginThrottle.__table__
        stale = table.c.window_started_at < now - window
        statement = dialect.insert(table).values(key=key, failures=1, window_started_at=now)
        # One atomic upsert per key: concurrent workers never lose a failure.
        failures = db.session.execute(statement.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"failures": case((stale, 1), else_=table.c.failures + 1),
                  "window_started_at": case((stale, now), else_=table.c.window_started_at)},
        ).returning(table.c.failures)).scalar_one()
        if failures >= limit:
            db.session.execute(update(table).where(table.c.key == key)
                               .values(locked_until=now + lockout, failures=0,
                                       window_started_at=now))
    db.session.commit()


def record_success(username: str) -> None:
    """A correct password clears the account's count (the address keeps its own)."""
    db.session.execute(delete(LoginThrottle).where(
        LoginThrottle.key == _keys(username)[0][0]))
    db.session.execute(delete(LoginThrottle).where(
        or_(LoginThrottle.locked_until < utcnow() - timedelta(days=1),
            LoginThrottle.window_started_at < utcnow() - timedelta(days=1))))
    db.session.commit()
