"""JWT wiring: who a token belongs to, and the 401 JSON for every token problem."""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Hashable

from flask import Flask, current_app, g, has_request_context, request
from flask_jwt_extended import JWTManager

from database import PreparedRead, db, reader
from errors import error_response
from sqlalchemy import Select, bindparam, delete, exists, select

from models import RevokedToken, User, utcnow


class _VerifiedTokens:
    """Tokens this process has verified, with their claims: a bounded map, oldest out first."""

    def __init__(self, size: int):
        self.size = size
        self._claims: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict | None:
        return self._claims.get(key)

    def put(self, key: tuple[str, str], claims: dict) -> None:
        with self._lock:
            self._claims[key] = claims
            while len(self._claims) > self.size:
                del self._claims[next(iter(self._claims))]


class JWTWithVerifiedTokens(JWTManager):
    """Flask-JWT-Extended that remembers the tokens it has verified (signature, algorithm,
    claims) for as long as they are valid, keyed by the token and the secret. Under load,
    verifying was a quarter of a download's Python CPU: PyJWT parsed each token three times
    per request, checking every character (py-spy, bench/README). A token's signature never
    changes its verdict, so a remembered token only has its expiry checked again; revocation,
    demotion and the user are still read from the database on every request (`_is_revoked`,
    `_load_user`). Overrides the one method through which Flask-JWT-Extended decodes every
    token (`decode_token`, `jwt_required`). Should an upgrade rename it, the override is
    never called: tokens are then verified every time, as before, and
    tests/test_hot_paths.py fails on the parse count."""

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value=None,
                                allow_expired: bool = False) -> dict:
        if csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        claims = remembered_claims(current_app, encoded_token)
        if claims is None:
            claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
            verified = current_app.extensions.get(_VERIFIED_TOKENS)
            if verified is not None and isinstance(claims.get("exp"), (int, float)):
                verified.put((encoded_token, current_app.config["JWT_SECRET_KEY"]), claims)
        return dict(claims)  # callers may change theirs


def remembered_claims(app: Flask, encoded_token: str) -> dict | None:
    """The claims of a token this process verified with the current secret and that has not
    expired since, else None (verify it). The caller must not change them."""
    verified = app.extensions.get(_VERIFIED_TOKENS)
    if verified is None:
        return None
    config = app.config
    claims = verified.get((encoded_token, config["JWT_SECRET_KEY"]))
    if claims is None:
        return None
    leeway = config["JWT_DECODE_LEEWAY"]
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    # PyJWT's own rule: expired once int(exp) <= now - leeway.
    return None if int(claims["exp"]) <= time.time() - leeway else claims


_VERIFIED_TOKENS = "ezra_verified_tokens"
VERIFIED_TOKENS_PER_PROCESS = 4096  # ~1 KB each

jwt = JWTWithVerifiedTokens()


def init_jwt(app: Flask) -> None:
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(hours=app.config["JWT_ACCESS_TOKEN_HOURS"])
    app.config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(days=app.config["JWT_REFRESH_TOKEN_DAYS"])
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = "HS256"
    # Shorter tokens: PyJWT checks every character of a token each time it parses one (four
    # times for a token not yet remembered, once for its header after that). The CSRF claim
    # serves cookie tokens only (these are headers), and `nbf` would repeat `iat`; tokens
    # that carry them are still accepted.
    app.config["JWT_COOKIE_CSRF_PROTECT"] = False
    app.config["JWT_ENCODE_NBF"] = False
    jwt.init_app(app)
    app.extensions[_VERIFIED_TOKENS] = _VerifiedTokens(VERIFIED_TOKENS_PER_PROCESS)


def token_claims(user: User | SignedInUser, family: str | None = None) -> dict:
    """`tv` ends every token at a password reset; `fam` ties the access and refresh tokens of
    one sign-in together, so that signing out ends all of them."""
    claims = {"tv": user.token_version}
    if family:
        claims["fam"] = family
    return claims


def _family_key(family: str) -> str:
    return f"fam:{family}"[:64]


@jwt.user_identity_loader
def _identity(user: User | SignedInUser) -> str:
    return str(user.id)


@dataclass(frozen=True)
class SignedInUser:
    """`current_user`: the token's user as read by this request's token check (a plain
    record, not an ORM object: load the User to change it)."""
    id: int
    username: str
    is_admin: bool
    token_version: int


_users = User.__table__
_REVOKED_KEYS = RevokedToken.__table__.c.jti.in_([bindparam("jti"), bindparam("family")])
# Built once: constructing a statement costs more CPU than running this one.
_TOKEN_CHECK = select(
    _users.c.id, _users.c.username, _users.c.is_admin, _users.c.token_version,
    exists().where(_REVOKED_KEYS).label("revoked"),
).where(_users.c.id == bindparam("user_id"))
_REVOKED = select(exists().where(_REVOKED_KEYS))
_TOKEN_CHECK_READ = PreparedRead(_TOKEN_CHECK)


@dataclass(frozen=True)
class _Piggyback:
    plan: Callable[[dict], tuple[Hashable, dict] | None]
    build: Callable[[Hashable, Select], Select]


_piggybacks: dict[str, _Piggyback] = {}


def piggyback_on_token_check(endpoint: str, plan, build) -> None:
    """Let a hot route read its own data in the token check's statement: one round trip for
    both. `plan(view_args)` returns `(key, parameters)`, or None to read nothing (e.g. a bad
    id: the view then answers its own error after the token check); `build(key,
    token_check)` extends the token check statement (built once per `build` and key). The
    view takes the row with `piggybacked_row()`."""
    _piggybacks[endpoint] = _Piggyback(plan, build)


@functools.cache
def extended_token_check(build: Callable[[Hashable, Select], Select],
                          key: Hashable) -> PreparedRead:
    """Built once per extension and key: endpoints that share one (a download and its named
    link) share the statement, so a connection prepares it once."""
    return PreparedRead(build(key, _TOKEN_CHECK))


def piggybacked_row():
    """The row the token check read for this request's route, or None if it read none."""
    return g.pop("ezra_piggyback", None)


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    """One statement answers both questions of every request: is the token revoked, and
    who is its user (kept for `_load_user`). Read fresh on every request, so a revocation,
    a demotion or a password reset applies to the very next one."""
    keys = revocation_keys(payload)
    if keys is None:
        return True
    user_id = _user_id(payload)
    if user_id is None:
        return bool(reader().execute(_REVOKED, keys).scalar())
    statement, params = _TOKEN_CHECK_READ, {**keys, "user_id": user_id}
    piggyback = _piggybacks.get(request.endpoint) if has_request_context() else None
    planned = piggyback.plan(request.view_args or {}) if piggyback else None
    if planned is not None:
        statement = extended_token_check(piggyback.build, planned[0])
        params |= planned[1]
    row = statement.execute(params).first()
    g.ezra_token_user = (SignedInUser(row.id, row.username, bool(row.is_admin),
                                      row.token_version) if row else None)
    if planned is not None and row is not None:
        g.ezra_piggyback = row
    return bool(row and row.revoked)


def revocation_keys(payload: dict) -> dict | None:
    """The token check's `jti` and `family` parameters; None for a token without an id."""
    jti = payload.get("jti")
    if not isinstance(jti, str):
        return None
    family = payload.get("fam")
    # The token is revoked by its own id or by its sign-in's (family) key; without a family
    # the second key is the jti again.
    return {"jti": jti, "family": _family_key(family) if isinstance(family, str) else jti}


def token_check_params(payload: dict) -> dict | None:
    """All parameters of the token check (`extended_token_check`), or None when the token
    names no id or no valid user (the request path then answers for it)."""
    keys = revocation_keys(payload)
    user_id = _user_id(payload)
    return None if keys is None or user_id is None else {**keys, "user_id": user_id}


def _user_id(payload: dict) -> int | None:
    try:
        user_id = int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    return user_id if 0 < user_id < 2**31 else None


def revoke(payload: dict, user_id: int | None) -> None:
    """Sign a token out for good (kept in the database, so it survives restarts), and every
    token of its sign-in (its family) with it, until the longest of them would expire."""
    expires = datetime.fromtimestamp(payload["exp"], tz=timezone.utc)
    db.session.merge(RevokedToken(jti=payload["jti"], user_id=user_id, expires_at=expires))
    family = payload.get("fam")
    if isinstance(family, str):
        family_expires = datetime.fromtimestamp(payload["iat"], tz=timezone.utc) + \
            current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
        db.session.merge(RevokedToken(jti=_family_key(family), user_id=user_id,
                                      expires_at=family_expires))
    # Expired tokens are refused anyway: forget them, keeping the table small.
    db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))


@jwt.user_lookup_loader
def _load_user(_header: dict, payload: dict) -> SignedInUser | None:
    user_id = _user_id(payload)
    if user_id is None:
        return None
    user = g.pop("ezra_token_user", None)
    if user is None or user.id != user_id:
        found = db.session.get(User, user_id)
        user = found and SignedInUser(found.id, found.username, bool(found.is_admin),
                                      found.token_version)
    # A deleted user, or a token issued before the last password reset, is signed out.
    if user is None or payload.get("tv") != user.token_version:
        return None
    return user


@jwt.user_lookup_error_loader
def _user_gone(_header: dict, _payload: dict):
    return error_response(401, "Your session has ended; please sign in again")


@jwt.unauthorized_loader
def _missing_token(reason: str):
    return error_response(401, "Sign in first: send 'Authorization: Bearer <access_token>'")


@jwt.invalid_token_loader
def _invalid_token(reason: str):
    return error_response(401, "The access token is invalid; please sign in again")


@jwt.expired_token_loader
def _expired_token(_header: dict, _payload: dict):
    return error_response(401, "The access token has expired; please sign in again")


@jwt.revoked_token_loader
def _revoked_token(_header: dict, _payload: dict):
    return error_response(401, "The access token was revoked; please sign in again")


@jwt.needs_fresh_token_loader
def _needs_fresh(_header: dict, _payload: dict):
    return error_response(401, "Please sign in again")


@jwt.token_verification_failed_loader
def _verification_failed(_header: dict, _payload: dict):
    return error_response(401, "The access token is invalid; please sign in again")
