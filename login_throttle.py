"""Sign-in throttling per (account, client address), kept in the database so that every
gunicorn worker (and every machine) shares it.

Every attempt is counted before its password is checked, in one row-locked step, so parallel
guesses cannot slip past the count. After `LOGIN_MAX_FAILURES_PER_ACCOUNT` failures of one
account from one address, that pair waits before its next attempt: 1 s, then 2 s, 4 s, ... up
to `LOGIN_LOCKOUT_SECONDS`; a caller who comes too early gets 429 with Retry-After. The count
is forgotten after `LOGIN_WINDOW_SECONDS` without a failure, by a correct password, and by an
admin's password reset.

There is no hard lockout and no per-address limit: the frontend's server signs everyone in
from one address, so failures under other names, or from another address, never hold back a
correct password. Usernames are compared case-insensitively here; unknown names count like
real ones, so the answer reveals nothing.
"""
from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from flask import current_app, request
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from database import db
from errors import APIError
from models import LoginThrottle, as_utc, utcnow


def _account(username: str) -> str:
    # Hashed: any name fits the key column, and an account's keys share a prefix.
    return hashlib.sha256(username.casefold().encode()).hexdigest()[:40]


def _key(username: str) -> str:
    return f"{_account(username)}:{request.remote_addr or 'unknown'}"[:200]


def delay_seconds(failures: int, free: int, longest: int) -> int:
    """The wait before the next attempt after `failures` counted failures."""
    if failures < free:
        return 0
    return min(longest, 2 ** min(failures - free, 30))


def begin_attempt(username: str) -> None:
    """Count this attempt as a failure up front (a correct password clears it), or refuse
    with 429 while the pair must wait."""
    config = current_app.config
    key, now = _key(username), utcnow()
    table = LoginThrottle.__table__
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(table).values(key=key, failures=0, last_failure_at=now)
                       .on_conflict_do_nothing(index_elements=[table.c.key]))
    failures, last_failure, locked_until = db.session.execute(
        select(table.c.failures, table.c.last_failure_at, table.c.locked_until)
        .where(table.c.key == key).with_for_update()).one()
    if locked_until is not None and as_utc(locked_until) > now:
        db.session.commit()
        wait = math.ceil((as_utc(locked_until) - now).total_seconds())
        raise APIError(429, f"Too many failed sign-ins; try again in {wait} second(s)",
                       {"Retry-After": str(wait)})
    if as_utc(last_failure) < now - timedelta(seconds=config["LOGIN_WINDOW_SECONDS"]):
        failures = 0
    failures += 1
    wait = delay_seconds(failures, config["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
                         config["LOGIN_LOCKOUT_SECONDS"])
    db.session.execute(update(table).where(table.c.key == key).values(
        failures=failures, last_failure_at=now,
        locked_until=now + timedelta(seconds=wait) if wait else None))
    db.session.commit()


def record_success(username: str) -> None:
    """A correct password clears its pair; rows idle for a day are dropped."""
    now = utcnow()
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == _key(username)))
    db.session.execute(delete(LoginThrottle).where(and_(
        LoginThrottle.last_failure_at < now - timedelta(days=1),
        or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now))))
    db.session.commit()


def clear_account(username: str) -> None:
    """An admin set a new password: the account may sign in again from everywhere."""
    db.session.execute(delete(LoginThrottle).where(
        LoginThrottle.key.startswith(_account(username) + ":")))
