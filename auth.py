"""JWT wiring: who a token belongs to, and the 401 JSON for every token problem."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask
from flask_jwt_extended import JWTManager

from database import db
from errors import error_response
from sqlalchemy import delete

from models import RevokedToken, User, utcnow

jwt = JWTManager()


def init_jwt(app: Flask) -> None:
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(hours=app.config["JWT_ACCESS_TOKEN_HOURS"])
    app.config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(days=app.config["JWT_REFRESH_TOKEN_DAYS"])
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = "HS256"
    jwt.init_app(app)


def token_claims(user: User) -> dict:
    return {"tv": user.token_version}


@jwt.user_identity_loader
def _identity(user: User) -> str:
    return str(user.id)


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    jti = payload.get("jti")
    return not isinstance(jti, str) or db.session.get(RevokedToken, jti) is not None


def revoke(payload: dict, user_id: int | None) -> None:
    """Sign a token out for good (kept in the database, so it survives restarts)."""
    expires = datetime.fromtimestamp(payload["exp"], tz=timezone.utc)
    db.session.merge(RevokedToken(jti=payload["jti"], user_id=user_id, expires_at=expires))
    # Expired tokens are refused anyway: forget them, keeping the table small.
    db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))


@jwt.user_lookup_loader
def _load_user(_header: dict, payload: dict) -> User | None:
    try:
        user_id = int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None
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
