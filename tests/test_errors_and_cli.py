"""Every error is contract JSON; the CLI creates admins; configuration fails clearly."""
from __future__ import annotations

import pytest

from config import ConfigError, load_config
from conftest import TEST_SECRET, base_config, login
from database import db
from models import User


@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/no/such/route", 404, "Not found: no route GET /no/such/route"),
    ("DELETE", "/login", 405, "Method DELETE is not allowed here; use POST"),
    ("GET", "/process", 405, "use POST"),
    ("PUT", "/transcriptions", 405, "use GET"),
])
def test_routing_errors_are_json(client, method, path, status, message):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    assert message in response.get_json()["error"]


def test_oversized_body_is_413_json(make_app, make_user):
    app = make_app(MAX_UPLOAD_MB=1)
    make_user("alice")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {login(client, 'alice')}"}
    response = client.post("/login", data=b"x" * (2 * 1024 * 1024),
                           content_type="application/json", headers=headers)
    assert response.status_code == 413
    assert "limit is 16 KB" in response.get_json()["error"]  # /login takes a small JSON body


def test_database_down_is_503_json(make_app, tmp_path):
    # A server that is not there: nothing listens on port 1.
    app = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/test")
    response = app.test_client().post("/login", json={"username": "a", "password": "b"})
    assert response.status_code == 503
    assert response.get_json() == {"error": "The database is unavailable; try again in a moment"}
    assert response.headers["Retry-After"]


def test_unexpected_errors_are_500_without_details(make_app):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("SELECT password FROM users -- secret detail")
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error"}


def test_create_admin_cli(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "boss", "--password", "a strong password"])
    assert result.exit_code == 0, result.output
    assert "Created admin boss" in result.output
    with app.app_context():
        boss = db.session.query(User).filter_by(username="boss").one()
        assert boss.is_admin and boss.password_hash.startswith("$argon2id$")
    assert login(app.test_client(), "boss", "a strong password")
    short = runner.invoke(args=["create-admin", "boss2", "--password", "short"])
    assert short.exit_code != 0 and "at least 8" in short.output
    prompted = runner.invoke(args=["create-admin", "boss3"],
                             input="prompted password\nprompted password\n")
    assert prompted.exit_code == 0, prompted.output
    assert login(app.test_client(), "boss3", "prompted password")


@pytest.mark.parametrize("username, message", [
    ("x" * 65, "'username' must be at most 64 characters"),
    ("../../etc", "'username' may contain only letters, digits and . _ @ -"),
])
def test_create_admin_cli_follows_the_admin_routes_username_rules(app, username, message):
    result = app.test_cli_runner().invoke(
        args=["create-admin", username, "--password", "a strong password"])
    assert result.exit_code != 0 and message in result.output
    with app.app_context():
        assert db.session.query(User).filter_by(username=username).count() == 0


@pytest.mark.parametrize("env, message", [
    ({"EZRA_ENV": "production", "DATABASE_URL": "postgresql://x/y"}, "JWT_SECRET_KEY is required"),
    ({"EZRA_ENV": "production", "DATABASE_URL": "postgresql://x/y", "JWT_SECRET_KEY": "short"},
     "at least 32 bytes"),
    ({"EZRA_ENV": "production", "JWT_SECRET_KEY": TEST_SECRET}, "DATABASE_URL is required"),
    ({"EZRA_ENV": "staging"}, "EZRA_ENV must be development or production"),
    ({"MAX_UPLOAD_MB": "lots"}, "MAX_UPLOAD_MB must be a whole number"),
    ({"ALLOW_PRIVATE_ADDRESSES": "maybe"}, "ALLOW_PRIVATE_ADDRESSES must be true or false"),
    ({"ARGON2_MEMORY_KIB": "1024"}, "ARGON2_MEMORY_KIB must be at least 19456"),
    ({"TRANSCRIBE_ENGINE": "magic"}, "TRANSCRIBE_ENGINE must be remote, openai or local"),
])
def test_bad_configuration_stops_start_up_with_a_clear_message(monkeypatch, env, message):
    for key in ("DATABASE_URL", "JWT_SECRET_KEY", "EZRA_ENV"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_embedded_default_is_sqlite_with_a_kept_secret(monkeypatch):
    for key in ("DATABASE_URL", "JWT_SECRET_KEY", "EZRA_ENV"):
        monkeypatch.delenv(key, raising=False)
    first, second = load_config(), load_config()
    assert first["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert first["EMBEDDED_DATABASE"] is True
    assert len(first["JWT_SECRET_KEY"]) >= 32
    assert first["JWT_SECRET_KEY"] == second["JWT_SECRET_KEY"]


def test_postgres_urls_use_psycopg2(tmp_path):
    config = load_config(base_config(tmp_path, DATABASE_URL="postgres://u@h/db"))
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u@h/db"
