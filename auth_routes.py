"""POST /login and the token routes."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify
from flask_jwt_extended import (create_access_token, create_refresh_token, current_user,
                                decode_token, get_jwt, jwt_required)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import InvalidTokenError
from sqlalchemy import bindparam, select, update

import login_throttle
from auth import SignedInUser, revoke, token_claims
from errors import APIError
from i18n import translate_message
from limits import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH
from database import db
from models import User
from openapi import documented, json_response, obj, ref, string
from password import burn_verification_time, hash_password, needs_rehash, verify_password
from validation import is_storable_text, json_body, optional_json_body, string_field

bp = Blueprint("auth", __name__)



_users = User.__table__
# Plain values, read in the attempt's transaction (an ORM User would be reloaded after each
# commit: a round trip more each time).
_SIGN_IN_USER = select(_users.c.id, _users.c.username, _users.c.is_admin, _users.c.token_version,
                       _users.c.password.label("password_hash")
                       ).where(_users.c.username == bindparam("username"))


def _bad_credentials():
    # The contract keeps Flask-JWT-Extended's original shape for this one answer.
    return jsonify(msg=translate_message("Bad username or password")), 401


@bp.post("/login")
@documented(
    "Sign in", auth=False,
    body=obj({"username": string(minLength=1, maxLength=MAX_USERNAME_LENGTH),
              "password": string(minLength=1, maxLength=MAX_PASSWORD_LENGTH)}, closed=False),
    errors=(429,),
    description="After too many failed sign-ins for an account or from an address, "
                "429 with Retry-After until the lockout ends.",
    response=json_response(ref("Tokens")),
    extra_responses={401: json_response(ref("LoginFailure"), "Bad username or password")})
def login():
    data = json_body()
    username = string_field(data, "username", max_length=MAX_USERNAME_LENGTH)
    password = string_field(data, "password", max_length=MAX_PASSWORD_LENGTH, strip=False)
    # Counted as a failure until the password matches; stored (committed) with the user read
    # before the slow check. Round trips: 5 for a correct password (6 when it is re-hashed to
    # a new cost), 3 for a wrong one, 2 while the pair waits (tests/test_hot_paths.py).
    login_throttle.begin_attempt(username)
    found = db.session.execute(_SIGN_IN_USER, {"username": username}).first()
    db.session.commit()
    if found is None:
        burn_verification_time()  # as slow as a real check: existence stays hidden
        return _bad_credentials()
    if not verify_password(found.password_hash, password):
        return _bad_credentials()
    login_throttle.record_success(username)
    if needs_rehash(found.password_hash):
        # Only over the hash just checked: a password reset meanwhile is kept.
        db.session.execute(update(_users).where(
            _users.c.id == found.id, _users.c.password == found.password_hash)
            .values(password=hash_password(password)))
    db.session.commit()
    user = SignedInUser(found.id, found.username, bool(found.is_admin), found.token_version)
    claims = token_claims(user, family=uuid.uuid4().hex)
    return jsonify(
        access_token=create_access_token(identity=user, additional_claims=claims),
        refresh_token=create_refresh_token(identity=user, additional_claims=claims),
        is_admin=user.is_admin,
    )


@bp.post("/refresh")
@documented(
    "A new access token",
    description="Send the refresh token (not the access token) as the bearer token.",
    response=json_response(ref("AccessToken")))
@jwt_required(refresh=True)
def refresh():
    return jsonify(access_token=create_access_token(
        identity=current_user, additional_claims=token_claims(current_user,
                                                              get_jwt().get("fam"))))


@bp.post("/logout")
@documented(
    "Sign out: revoke the token sent (access or refresh)",
    description="Every token of the same sign-in is revoked with it. An optional body "
                "`{\"refresh_token\"}` revokes that refresh token too (400 if it is not "
                "one of the caller's refresh tokens).",
    body=obj({"refresh_token": string(maxLength=4096)}, required=[], closed=False),
    body_required=False,
    response=json_response(ref("Message")))
@jwt_required(verify_type=False)
def logout():
    """Revokes the token sent (access or refresh) with every token of its sign-in, and the
    refresh token in the body if any (the frontend sends none: the family covers it)."""
    body = optional_json_body()
    payload = None
    if "refresh_token" in body:
        refresh_token = body["refresh_token"]
        if (not isinstance(refresh_token, str) or len(refresh_token) > 4096
                or not is_storable_text(refresh_token)):
            raise APIError(400, "'refresh_token' must be a token string")
        try:
            payload = decode_token(refresh_token)
        except (InvalidTokenError, JWTExtendedException):
            raise APIError(400, "'refresh_token' is not a valid token") from None
        if payload.get("type") != "refresh":
            raise APIError(400, "'refresh_token' is not a refresh token")
        if payload.get("sub") != str(current_user.id):
            raise APIError(400, "'refresh_token' belongs to another user")
    revoke(get_jwt(), current_user.id)
    if payload is not None:
        revoke(payload, current_user.id)
    db.session.commit()
    return jsonify(message="Signed out")
