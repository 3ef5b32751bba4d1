"""POST /login and the token routes."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask_jwt_extended import create_access_token, create_refresh_token, current_user, jwt_required
from sqlalchemy import select

from auth import token_claims
from database import db
from models import User
from password import burn_verification_time, hash_password, needs_rehash, verify_password
from validation import json_body, string_field

bp = Blueprint("auth", __name__)

MAX_USERNAME_LENGTH = 150
MAX_PASSWORD_LENGTH = 1024


def _bad_credentials():
    # The contract keeps Flask-JWT-Extended's original shape for this one answer.
    return jsonify(msg="Bad username or password"), 401


@bp.post("/login")
def login():
    data = json_body()
    username = string_field(data, "username", max_length=MAX_USERNAME_LENGTH)
    password = string_field(data, "password", max_length=MAX_PASSWORD_LENGTH, strip=False)
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        burn_verification_time()
        return _bad_credentials()
    if not verify_password(user.password_hash, password):
        return _bad_credentials()
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        db.session.commit()
    claims = token_claims(user)
    return jsonify(
        access_token=create_access_token(identity=user, additional_claims=claims),
        refresh_token=create_refresh_token(identity=user, additional_claims=claims),
        is_admin=bool(user.is_admin),
    )


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    return jsonify(access_token=create_access_token(
        identity=current_user, additional_claims=token_claims(current_user)))
