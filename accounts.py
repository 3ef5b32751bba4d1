"""Users: the one set of rules for creating them and setting passwords, shared by the admin
routes and `flask create-admin`. A refusal is APIError(400) with the message both show."""
from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import select

import login_throttle
from database import db
from errors import APIError
from limits import MAX_NEW_USERNAME, MAX_PASSWORD_LENGTH, USERNAME_CHARS
from models import User
from password import hash_password
from validation import string_field


def new_username(data: dict[str, Any], name: str = "username") -> str:
    """A name for a new user: 1 to MAX_NEW_USERNAME characters of USERNAME_CHARS."""
    username = string_field(data, name, max_length=MAX_NEW_USERNAME)
    if not set(username) <= USERNAME_CHARS:
        raise APIError(400, f"'{name}' may contain only letters, digits and . _ @ -")
    return username


def new_password(data: dict[str, Any], name: str = "password") -> str:
    """A password to set: PASSWORD_MIN_LENGTH to MAX_PASSWORD_LENGTH characters, unstripped."""
    password = string_field(data, name, max_length=MAX_PASSWORD_LENGTH, strip=False)
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        raise APIError(400, f"'{name}' must be at least {minimum} characters")
    return password


def create_user(username: str, password: str, *, is_admin: bool) -> User:
    """Add and commit a user; `username` and `password` have passed the checks above."""
    exists = db.session.execute(select(User.id).where(User.username == username)).first()
    if exists:
        raise APIError(400, f"The username {username!r} is already taken")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    db.session.add(user)
    db.session.commit()
    return user


def set_password(user: User, password: str) -> None:
    """A new password signs the user out everywhere and lifts a sign-in lock (not committed)."""
    user.password_hash = hash_password(password)
    user.token_version += 1
    login_throttle.clear_account(user.username)
