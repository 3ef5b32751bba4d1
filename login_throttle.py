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
from sqlalchemy import and_, case, delete, null, or_, update
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
    with 429 while the pair must wait.

    One statement counts and locks the pair's row (an upsert that leaves a waiting pair as
    it is and returns its state); the pair's wait is written by a second one only when this
    attempt reaches `LOGIN_MAX_FAILURES_PER_ACCOUNT`. The caller commits (login reads the
    user in the same transaction first), so the count is stored before the password is
    checked and parallel guesses wait for the row lock and see it."""
    config = current_app.config
    key, now = _key(username), utcnow()
    table = LoginThrottle.__table__
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    waiting = and_(table.c.locked_until.is_not(None), table.c.locked_until > now)
    forgotten = table.c.last_failure_at < now - timedelta(seconds=config["LOGIN_WINDOW_SECONDS"])
    failures, locked_until = db.session.execute(
        dialect.insert(table).values(key=key, failures=1, last_failure_at=now, locked_until=None)
        .on_conflict_do_update(index_elements=[table.c.key], set_={
            "failures": case((waiting, table.c.failures), (forgotten, 1),
                             else_=table.c.failures + 1),
            "last_failure_at": case((waiting, table.c.last_failure_at), else_=now),
            "locked_until": case((waiting, table.c.locked_until), else_=null()),
        }).returning(table.c.failures, table.c.locked_until)).one()
    if locked_until is not None and as_utc(locked_until) > now:  # left as it was: waiting
        db.session.commit()
        wait = math.ceil((as_utc(locked_until) - now).total_seconds())
        raise APIError(429, f"Too many failed sign-ins; try again in {wait} second(s)",
                       {"Retry-After": str(wait)})
    wait = delay_seconds(failures, config["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
                         config["LOGIN_LOCKOUT_SECONDS"])
    if wait:
        db.session.execute(update(table).where(table.c.key == key).values(
            locked_until=now + timedelta(seconds=wait)))


def record_success(username: str) -> None:
    """A correct password clears its pair; rows idle for a day are dropped (one statement;
    the caller commits)."""
    now = utcnow()
    db.session.execute(delete(LoginThrottle).where(or_(
        LoginThrottle.key == _key(username),
        and_(LoginThrottle.last_failure_at < now - timedelta(days=1),
             or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now)))))


def clear_account(username: str) -> None:
    """An admin set a new password: the account may sign in again from everywhere."""
    db.session.execute(delete(LoginThrottle).where(
        LoginThrottle.key.startswith(_account(username) + ":")))
