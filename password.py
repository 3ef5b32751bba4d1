"""Password hashing: Argon2id for new hashes; Werkzeug hashes from the earlier
implementation (`scrypt:...`, `pbkdf2:...`) still verify and are upgraded on login.

Cost: OWASP's Argon2id row m=19 MiB, t=2, p=1 by default (also the configured floor). Each
hash or check holds its memory for its whole run, so at most `ARGON2_MAX_CONCURRENT` of them
run at once per process: a worker's memory stays bounded however many threads sign in.
"""
from __future__ import annotations

import ctypes
import secrets
import sys
import threading
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from werkzeug.security import check_password_hash

_hashers: dict[tuple[int, int], PasswordHasher] = {}
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()
_DUMMY_PASSWORD = secrets.token_urlsafe(16)
_M_MMAP_THRESHOLD = -3


def _give_hash_memory_back() -> None:
    """glibc raises its mmap threshold after the first large free, so every later Argon2
    block comes from the arena of the thread that asked and stays resident when freed: a
    worker would keep one block per thread that ever signed someone in. A fixed 1 MiB
    threshold keeps large blocks mmap'ed and returned on free (bench/compare_refs.py shows
    the worker RSS)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        except (OSError, AttributeError):
            pass  # not glibc (e.g. musl): nothing to tune


_give_hash_memory_back()


def _hasher() -> PasswordHasher:
    key = (current_app.config["ARGON2_MEMORY_KIB"], current_app.config["ARGON2_TIME_COST"])
    if key not in _hashers:
        _hashers[key] = PasswordHasher(memory_cost=key[0], time_cost=key[1], parallelism=1)
    return _hashers[key]


@contextmanager
def _hash_slot():
    """One of the process's ARGON2_MAX_CONCURRENT slots for a memory-hard computation."""
    size = current_app.config["ARGON2_MAX_CONCURRENT"]
    slot = _slots.get(size)
    if slot is None:
        with _slots_lock:
            slot = _slots.setdefault(size, threading.BoundedSemaphore(size))
    with slot:
        yield


def hash_password(password: str) -> str:
    with _hash_slot():
        return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        return False
    with _hash_slot():
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
    """True for every legacy Werkzeug hash and for Argon2 hashes of another cost."""
    if not stored_hash.startswith("$argon2"):
        return True
    try:
        return _hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def burn_verification_time() -> None:
    """Spend what a real verification costs (the same slot wait included), so an unknown
    username answers as slowly."""
    dummy = _dummy_hash()
    with _hash_slot():
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
