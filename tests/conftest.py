"""Fixtures: the app on a real PostgreSQL database built by the migrations.

TEST_DATABASE_URL names the server (default: the local `test` database, trust auth).
The schema is rebuilt from nothing once per run with `flask db upgrade`; each test starts
from empty tables.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fixtures import fake_openai, fake_whisper  # noqa: E402,F401

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL",
                                   "postgresql://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
TEST_PASSWORD = "correct horse battery"


def base_config(tmp_path: Path, **overrides) -> dict:
    config = {
        "TESTING": True,
        "DATABASE_URL": TEST_DATABASE_URL,
        "JWT_SECRET_KEY": TEST_SECRET,
        "STORAGE_DIR": str(tmp_path / "storage"),
        "LEGACY_FILES_DIR": str(tmp_path / "user-files"),
        "PIPELINE_ENABLED": False,
        "JOB_RECOVERY_INTERVAL_SECONDS": 0,
        # OWASP's floor keeps tests quick; production defaults are stronger.
        "ARGON2_MEMORY_KIB": 19456,
        "ARGON2_TIME_COST": 2,
    }
    config.update(overrides)
    return config


def reset_schema(url: str) -> None:
    from config import normalize_database_url
    engine = create_engine(normalize_database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def upgrade_database(app) -> None:
    from flask_migrate import upgrade
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory):
    """The test database, emptied and rebuilt by the migrations once per run."""
    from app import create_app
    reset_schema(TEST_DATABASE_URL)
    upgrade_database(create_app(base_config(tmp_path_factory.mktemp("migrate"))))
    return TEST_DATABASE_URL


def truncate_all(app) -> None:
    """Empty every table and restart the id sequences. DELETE rather than TRUNCATE: a test
    leaves a handful of rows, and TRUNCATE's fixed cost per table (new files for 14 tables)
    took 45 ms a test against 3 ms, a seventh of the default tier."""
    from database import db
    with app.app_context():
        sequences = db.session.execute(text(
            "SELECT sequence_name FROM information_schema.sequences "
            "WHERE sequence_schema = current_schema()")).scalars().all()
        db.session.execute(text("; ".join(
            [f'DELETE FROM "{t.name}"' for t in reversed(db.metadata.sorted_tables)] +
            [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences])))
        db.session.commit()


@pytest.fixture
def make_app(migrated_database, tmp_path):
    """Build apps on the migrated database; every test starts with empty tables."""
    from app import create_app
    from database import db
    apps = []

    def make(**overrides):
        app = create_app(base_config(tmp_path, **overrides))
        apps.append(app)
        return app

    first = make()
    truncate_all(first)
    make.first = first  # the `app` fixture's: an app costs ~15 ms to build
    yield make
    from jobs import stop_runner
    for app in apps:
        stop_runner(app)  # its slots must not take the next test's jobs
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app.first


@pytest.fixture
def client(app):
    return app.test_client()


_fixture_hashes: dict[tuple, str] = {}


def fixture_hash(password: str) -> str:
    """A real Argon2id hash of `password` at the app's cost, made once per run: the users the
    fixtures create need a valid hash, not a fresh salt each (42 ms a user)."""
    from flask import current_app
    from password import hash_password
    key = (password, current_app.config["ARGON2_MEMORY_KIB"],
           current_app.config["ARGON2_TIME_COST"])
    if key not in _fixture_hashes:
        _fixture_hashes[key] = hash_password(password)
    return _fixture_hashes[key]


@pytest.fixture
def make_user(app):
    from database import db
    from models import User

    def make(username: str, password: str = TEST_PASSWORD, is_admin: bool = False) -> User:
        with app.app_context():
            user = User(username=username, password_hash=fixture_hash(password),
                        is_admin=is_admin)
            db.session.add(user)
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user
    return make


def login(client, username: str, password: str = TEST_PASSWORD) -> str:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def admin(make_user):
    return make_user("root-admin", is_admin=True)


def signed_in_headers(app, user) -> dict:
    """Bearer headers with the access token `POST /login` gives `user` (the same claims, a
    new sign-in family), without its Argon2 check (40 ms a test): tests of signing in itself
    call `login()`."""
    import uuid

    from flask_jwt_extended import create_access_token

    from auth import token_claims
    with app.app_context():
        claims = token_claims(user, family=uuid.uuid4().hex)
        return bearer(create_access_token(identity=user, additional_claims=claims))


@pytest.fixture
def user_headers(app, user):
    return signed_in_headers(app, user)


@pytest.fixture
def admin_headers(app, admin):
    return signed_in_headers(app, admin)
