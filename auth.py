"""JWT wiring: who a token belongs to, and the 401 JSON for every token problem."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask, current_app, g
from flask_jwt_extended import JWTManager

from database import db
from errors import error_response
from sqlalchemy import delete, exists, select

from models import RevokedToken, User, utcnow

jwt = JWTManager()


def init_jwt(app: Flask) -> None:
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(hours=app.config["JWT_ACCESS_TOKEN_HOURS"])
    app.config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(days=app.config["JWT_REFRESH_TOKEN_DAYS"])
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = "HS256"
    jwt.init_app(app)


def token_claims(user: User, family: str | None = None) -> dict:
    """`tv` ends every token at a password reset; `fam` ties the access and refresh tokens of
    one sign-in together, so that signing out ends all of them."""
    claims = {"tv": user.token_version}
    if family:
        claims["fam"] = family
    return claims


def _family_key(family: str) -> str:
    return f"fam:{family}"[:64]


@jwt.user_identity_loader
def _identity(user: User) -> str:
    return str(user.id)


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    """One statement answers both questions of every request: is the token revoked, and
    who is its user (kept for `_load_user`)."""
    jti = payload.get("jti")
    if not isinstance(jti, str):
        return True
    user_id = _user_id(payload)
    family = payload.get("fam")
    keys = [jti, _family_key(family)] if isinstance(family, str) else [jti]
    revoked = exists().where(RevokedToken.jti.in_(keys))
    if user_id is None:
        return bool(db.session.execute(select(revoked)).scalar())
    row = db.session.execute(select(User, revoked).where(User.id == user_id)).first()
    g.ezra_token_user = row[0] if row else None
    return bool(row and row[1])


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
def _load_user(_header: dict, payload: dict) -> User | None:
    user_id = _user_id(payload)
    if user_id is None:
        return None
    user = g.pop("ezra_token_user", None)
    if user is None or user.id != user_id:
        user = db.session.get(User, user_id)
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
