"""Password hashing: Argon2id for new hashes; Werkzeug hashes from the earlier
implementation (`scrypt:...`, `pbkdf2:...`) still verify and are upgraded on login."""
from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from werkzeug.security import check_password_hash

_hashers: dict[tuple[int, int], PasswordHasher] = {}
_DUMMY_PASSWORD = secrets.token_urlsafe(16)


def _hasher() -> PasswordHasher:
    # OWASP's floor is m=19 MiB, t=2; the default (64 MiB, t=3) is RFC 9106's low-memory profile.
    key = (current_app.config["ARGON2_MEMORY_KIB"], current_app.config["ARGON2_TIME_COST"])
    if key not in _hashers:
        _hashers[key] = PasswordHasher(memory_cost=key[0], time_cost=key[1], parallelism=1)
    return _hashers[key]


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        return False
    if stored_hash.startswith("$argon2"):
        try:
            return _hasher().verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        return check_password_hash(stored_hash, password)
    except (ValueError, TypeError):
        return False  # a malformed legacy hash never matches


def needs_rehash(stored_hash: str) -> bool:
    """True for every legacy Werkzeug hash and for Argon2 hashes below today's cost."""
    if not stored_hash.startswith("$argon2"):
        return True
    try:
        return _hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def burn_verification_time() -> None:
    """Spend what a real verification costs, so an unknown username answers as slowly."""
    dummy = _dummy_hash()
    try:
        _hasher().verify(dummy, _DUMMY_PASSWORD + "x")
    except VerificationError:
        pass


def _dummy_hash() -> str:
    config = current_app.config
    key = ("dummy", config["ARGON2_MEMORY_KIB"], config["ARGON2_TIME_COST"])
    cached = current_app.extensions.setdefault("ezra_dummy_hash", {})
    if key not in cached:
        cached[key] = hash_password(_DUMMY_PASSWORD)
    return cached[key]
