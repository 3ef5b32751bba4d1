"""Migrations: one linear chain with one head; `flask db upgrade` builds the models' schema
from nothing on PostgreSQL and on SQLite; a legacy deployment (the hand-made schema of
shared/legacy-schema.md, with rows in every table) upgrades in place without losing or
changing a row, and every existing user logs in with the password they have today.

The PostgreSQL tests use their own databases (`ezra_mig_*`) on the test server, so they
never touch the shared `test` database the other tests use.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from werkzeug.security import generate_password_hash

from config import normalize_database_url
from conftest import ROOT, TEST_DATABASE_URL, base_config, bearer, upgrade_database
from database import db
from legacy_schema import LEGACY_COLUMNS, LEGACY_SCHEMA_SQL

MIGRATIONS = ROOT / "migrations"
# The same filter as migrations/env.py: the old hand-made migration log stays in legacy
# databases as history and is not part of the models.
LEGACY_ONLY_TABLES = {"migrations"}


def _include_object(obj, name, type_, reflected, compare_to):
    return not (type_ == "table" and name in LEGACY_ONLY_TABLES)


def _script() -> ScriptDirectory:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def _head() -> str:
    heads = _script().get_heads()
    assert len(heads) == 1, heads
    return heads[0]


def _create_app(tmp_path: Path, **overrides):
    from app import create_app
    return create_app(base_config(tmp_path, **overrides))


def _dispose(app) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _schema_diff(app) -> list:
    """What autogenerate would write: empty when the migrated schema equals the models."""
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _include_object})
        return compare_metadata(context, db.metadata)


def _version(app) -> str | None:
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def _table_names(app) -> set[str]:
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


def _model_tables() -> set[str]:
    return set(db.metadata.tables)


# --- scratch PostgreSQL databases ---------------------------------------------------------

def _drop_database(conn, name: str) -> None:
    try:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    except DBAPIError:  # someone is still connected: end those sessions and try again
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextmanager
def scratch_database(name: str):
    """A new empty database on the test server, dropped afterwards; yields its URL."""
    assert name.startswith("ezra_mig_")
    server_url = normalize_database_url(TEST_DATABASE_URL)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            _drop_database(conn, name)
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            _drop_database(conn, name)
        admin.dispose()


# --- 1. one head, one line ----------------------------------------------------------------

def test_one_head_and_a_linear_chain():
    script = _script()
    heads = script.get_heads()
    assert len(heads) == 1, f"more than one head: {heads}"
    bases = script.get_bases()
    assert len(bases) == 1, f"more than one base: {bases}"

    chain = list(script.walk_revisions("base", "heads"))  # head first
    for revision in chain:
        assert not revision.is_branch_point, f"{revision.revision} branches"
        assert not revision.is_merge_point, f"{revision.revision} merges"
        assert revision.down_revision is None or isinstance(revision.down_revision, str)
    assert chain[0].revision == heads[0]
    assert chain[-1].revision == bases[0] and chain[-1].down_revision is None
    for newer, older in zip(chain, chain[1:]):
        assert newer.down_revision == older.revision
    # Every revision file is on that one line.
    files = sorted(p for p in (MIGRATIONS / "versions").glob("*.py"))
    assert len(chain) == len(files) == len(list(script.iterate_revisions("heads", "base")))


# --- 2./3. fresh databases ------------------------------------------------------------------

def _fresh_database_round_trip(app) -> None:
    """Upgrade from nothing, compare with the models, downgrade to base, upgrade again."""
    upgrade_database(app)
    assert _version(app) == _head()
    assert _model_tables() <= _table_names(app)
    diff = _schema_diff(app)
    assert diff == [], f"models and migrations disagree: {diff}"

    with app.app_context():
        downgrade(directory=str(MIGRATIONS), revision="base")
    assert _table_names(app) <= {"alembic_version"}
    assert _version(app) is None

    upgrade_database(app)
    assert _version(app) == _head()
    diff = _schema_diff(app)
    assert diff == [], f"models and migrations disagree after downgrade/upgrade: {diff}"
    # The seed rows of the old scripts are there on a fresh install too.
    with app.app_context(), db.engine.connect() as conn:
        settings = dict(conn.execute(text(
            "SELECT setting_key, setting_value FROM system_settings")).all())
        assert settings == {"active_transcribe_prompt_id": "1",
                            "active_proofread_prompt_id": "1", "transcribing_allowed": "true"}
        for table in ("transcribe_prompts", "proofread_prompts"):
            assert conn.execute(text(f"SELECT id, version, prompt FROM {table}")).all() == [
                (1, "EMPTY", "")]


def test_fresh_postgresql_matches_the_models(tmp_path):
    with scratch_database("ezra_mig_fresh") as url:
        app = _create_app(tmp_path, DATABASE_URL=url)
        try:
            _fresh_database_round_trip(app)
        finally:
            _dispose(app)


def test_fresh_sqlite_matches_the_models(tmp_path):
    # No special cases needed: Uuid reflects as CHAR(32) and Boolean as BOOLEAN, which
    # Alembic's type comparison treats as equal to the models' types.
    app = _create_app(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        _fresh_database_round_trip(app)
        # The app turns SQLite's foreign keys on, so the cascades hold there too.
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(text("INSERT INTO users (username, password) VALUES ('u', 'h')"))
            conn.execute(text("INSERT INTO transcriptions (id, user_id) "
                              "VALUES ('0123456789abcdef0123456789abcdef', 1)"))
            conn.execute(text("DELETE FROM users"))
            assert conn.execute(text("SELECT count(*) FROM transcriptions")).scalar() == 0
    finally:
        _dispose(app)


# --- 4. the real command --------------------------------------------------------------------

def test_flask_db_upgrade_command(tmp_path):
    database = tmp_path / "cli.sqlite3"
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{database}",
               JWT_SECRET_KEY="cli-test-secret-that-is-long-enough-0123456789",
               STORAGE_DIR=str(tmp_path / "storage"), EZRA_ENV="development",
               JOB_RECOVERY_INTERVAL_SECONDS="0")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"users", "transcriptions", "alembic_version"} <= tables
    assert _model_tables() <= tables
    assert version == [(_head(),)]


def test_cli_commands_start_no_job_threads(tmp_path):
    # The default recovery interval: before issue 8 its thread queried the not yet created
    # tables and printed "job recovery pass failed" with a traceback.
    database = tmp_path / "fresh.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "JOB_RECOVERY_INTERVAL_SECONDS"}
    env.update(DATABASE_URL=f"sqlite:///{database}", EZRA_ENV="development",
               JWT_SECRET_KEY="cli-test-secret-that-is-long-enough-0123456789",
               STORAGE_DIR=str(tmp_path / "storage"))
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "job recovery pass failed" not in output and "Traceback" not in output, output


# --- 5. a legacy deployment upgrades in place ------------------------------------------------

# username -> (password, Werkzeug method, is_admin)
LEGACY_USERS = {
    "admin": ("admin pass of 2023", "scrypt:32768:8:1", True),
    "sara": ("sara's long-standing secret", "pbkdf2:sha256:600000", False),
    "tom": ("tom-from-the-old-days", "pbkdf2:sha256:260000", False),
}

T_SARA_DONE = uuid.UUID("6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f")
T_SARA_FAILED = uuid.UUID("0b7e9a44-52c1-4d0e-8a5f-3c2d1e0f9a8b")
T_TOM_DONE = uuid.UUID("c3a4f5e6-7b8c-4d9e-a0b1-c2d3e4f5a6b7")
BASE_TIME = datetime(2024, 3, 14, 15, 9, 26, 535897, tzinfo=timezone(timedelta(hours=2)))


def _seed_legacy(conn, legacy_root: Path) -> dict[str, int]:
    """Rows in every table, the way the old service wrote them."""
    users = {}
    for i, (username, (password, method, is_admin)) in enumerate(LEGACY_USERS.items()):
        users[username] = conn.execute(text(
            "INSERT INTO users (username, password, is_admin, created_at) "
            "VALUES (:u, :p, :a, :c) RETURNING id"),
            {"u": username, "p": generate_password_hash(password, method=method),
             "a": is_admin, "c": BASE_TIME + timedelta(days=i)}).scalar_one()

    def job(**values):
        columns = ", ".join(values)
        placeholders = ", ".join(f":{k}" for k in values)
        return conn.execute(text(
            f"INSERT INTO transcriptions ({columns}) VALUES ({placeholders}) RETURNING id"),
            values).scalar_one()

    job(id=T_SARA_DONE, user_id=users["sara"],
        audio_file_path=f"uploads/sara/{T_SARA_DONE}/Sermon 12 - Sunday Service.mp3",
        google_drive_url="https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        txt_document_path=f"user-files/txt/sara/{T_SARA_DONE}/x.txt",
        md_document_path=f"user-files/md/sara/{T_SARA_DONE}/x.md",
        word_document_path=f"user-files/word/sara/{T_SARA_DONE}/x.docx",
        status="completed", transcribe_prompt="Transcribe every word.",
        proofread_prompt="Fix punctuation only.", inference_duration=321,
        created_at=BASE_TIME + timedelta(days=10),
        updated_at=BASE_TIME + timedelta(days=10, minutes=7))
    job(id=T_SARA_FAILED, user_id=users["sara"],
        audio_file_path=None,
        google_drive_url="https://drive.google.com/file/d/1AbCdEfGhIjKlMnOp/view?usp=sharing",
        txt_document_path=None, md_document_path=None,
        word_document_path=f"user-files/word/sara/{T_SARA_FAILED}/Drive Talk.docx",
        status="error", transcribe_prompt="Transcribe every word.", proofread_prompt="",
        inference_duration=12, created_at=BASE_TIME + timedelta(days=11),
        updated_at=BASE_TIME + timedelta(days=11, seconds=40))
    tom_dir = legacy_root / "md" / "tom" / str(T_TOM_DONE)
    job(id=T_TOM_DONE, user_id=users["tom"],
        audio_file_path=f"/srv/ezra/uploads/tom/{T_TOM_DONE}.m4a",
        google_drive_url="https://youtu.be/abcdefghijk",
        txt_document_path=str(legacy_root / "txt" / "tom" / str(T_TOM_DONE) / "x.txt"),
        md_document_path=str(tom_dir / "x.md"),  # an absolute recorded path
        word_document_path=str(legacy_root / "word" / "tom" / str(T_TOM_DONE) / "x.docx"),
        status="completed", transcribe_prompt="Old prompt", proofread_prompt="Old proofread",
        inference_duration=4000, created_at=BASE_TIME + timedelta(days=3),
        updated_at=BASE_TIME + timedelta(days=3, hours=1))
    # A job the old service never finished: id and status from the column defaults.
    in_flight = job(user_id=users["admin"],
                    google_drive_url="https://drive.google.com/file/d/ZZZ/view",
                    created_at=BASE_TIME + timedelta(days=20),
                    updated_at=BASE_TIME + timedelta(days=20))

    for user, transcription, message, inference in [
        ("sara", T_SARA_FAILED, "Transcription API returned 500", True),
        ("tom", T_TOM_DONE, "Proofreading slice 3 timed out", False),
        ("admin", in_flight, "Upload interrupted", False),
        ("admin", None, "Could not reach Google Drive", False),
    ]:
        conn.execute(text(
            "INSERT INTO error_logs (user_id, transcription_id, error_message, stack_trace, "
            "inference, created_at) VALUES (:u, :t, :m, :s, :i, :c)"),
            {"u": users[user], "t": transcription, "m": message,
             "s": f"Traceback (most recent call last):\n  ...\nError: {message}",
             "i": inference, "c": BASE_TIME + timedelta(days=12)})

    for table, newer in (("transcribe_prompts", "Transcribe in Hebrew, keep speaker names."),
                         ("proofread_prompts", "Fix spelling; never change meaning.")):
        conn.execute(text(f"INSERT INTO {table} (version, prompt) VALUES ('EMPTY', '')"))
        conn.execute(text(f"INSERT INTO {table} (version, prompt, created_at) "
                          "VALUES ('v2', :p, :c)"), {"p": newer, "c": BASE_TIME})
    conn.execute(text(
        "INSERT INTO system_settings (setting_key, setting_value, description) VALUES "
        "('active_transcribe_prompt_id', '1', 'Active transcribe prompt'), "
        "('active_proofread_prompt_id', '1', 'Active proofread prompt'), "
        "('transcribing_allowed', 'true', NULL)"))
    conn.execute(text(
        "INSERT INTO migrations (version, description, applied_at, checksum) VALUES "
        "('001', 'initial schema', :a, :c1), ('002', 'system settings', :b, :c2)"),
        {"a": BASE_TIME, "b": BASE_TIME + timedelta(days=30), "c1": "a" * 64, "c2": "b" * 64})
    # The trigger was live: an update through the old service bumped updated_at.
    conn.execute(text("UPDATE system_settings SET setting_value = '1' "
                      "WHERE setting_key = 'active_proofread_prompt_id'"))
    return users


def _snapshot(conn) -> dict[str, list[tuple]]:
    return {table: [tuple(row) for row in conn.execute(text(
        f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"))]
        for table, columns in LEGACY_COLUMNS.items()}


def _user_triggers(conn, table: str) -> list[str]:
    return conn.execute(text(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
        "AND NOT tgisinternal"), {"t": table}).scalars().all()


def test_legacy_postgresql_database_upgrades_in_place(tmp_path):
    legacy_root = tmp_path / "user-files"
    with scratch_database("ezra_mig_legacy") as url:
        engine = create_engine(url)
        app = None
        try:
            with engine.begin() as conn:
                conn.execute(text(LEGACY_SCHEMA_SQL))
                users = _seed_legacy(conn, legacy_root)
                assert _user_triggers(conn, "transcriptions") and _user_triggers(
                    conn, "system_settings")
            with engine.connect() as conn:
                before = _snapshot(conn)
            assert all(before.values()), "every legacy table has rows"

            app = _create_app(tmp_path, DATABASE_URL=url, LEGACY_FILES_DIR=str(legacy_root))
            upgrade_database(app)
            assert _version(app) == _head()

            with engine.connect() as conn:
                # Not a row lost or changed: same ids, uuids, timestamps, hashes.
                after = _snapshot(conn)
                for table in LEGACY_COLUMNS:
                    assert after[table] == before[table], table
                # The old migration log stays as history.
                assert inspect(conn).has_table("migrations")
                # New columns start from their defaults on legacy rows.
                assert conn.execute(text(
                    "SELECT DISTINCT token_version FROM users")).scalars().all() == [0]
                assert conn.execute(text(
                    "SELECT DISTINCT attempts, cancel_requested "
                    "FROM transcriptions")).all() == [(0, False)]
                # Legacy rows get the name the earlier backend showed: the stem of the audio
                # path, else of a document path; a row with no path keeps none (the link).
                names = dict(conn.execute(text("SELECT id, audio_file_name FROM transcriptions")
                                          ).all())
                assert names[T_SARA_DONE] == "Sermon 12 - Sunday Service"
                assert names[T_SARA_FAILED] == "Drive Talk"
                assert names[T_TOM_DONE] == str(T_TOM_DONE)
                assert list(names.values()).count(None) == 1  # the in-flight row
            diff = _schema_diff(app)
            assert diff == [], f"the upgraded legacy schema differs from the models: {diff}"

            with engine.begin() as conn:
                # 0002 drops the hand-made updated_at triggers (the ORM keeps updated_at
                # current); the function stays behind, unused.
                assert _user_triggers(conn, "transcriptions") == []
                assert _user_triggers(conn, "system_settings") == []
                stamp = conn.execute(text("SELECT updated_at FROM transcriptions WHERE id = :i"),
                                     {"i": T_TOM_DONE}).scalar_one()
                conn.execute(text("UPDATE transcriptions SET inference_duration = 4001 "
                                  "WHERE id = :i"), {"i": T_TOM_DONE})
                assert conn.execute(text("SELECT updated_at FROM transcriptions WHERE id = :i"),
                                    {"i": T_TOM_DONE}).scalar_one() == stamp
                conn.execute(text("UPDATE transcriptions SET inference_duration = 4000 "
                                  "WHERE id = :i"), {"i": T_TOM_DONE})
                # New rows: serial sequences continue; the status default is the new word.
                new = conn.execute(text("INSERT INTO transcriptions (id, user_id) VALUES "
                                        "(:i, :u) RETURNING status"),
                                   {"i": uuid.uuid4(), "u": users["tom"]}).scalar_one()
                assert new == "submitted"
                new_user = conn.execute(text("INSERT INTO users (username, password) "
                                             "VALUES ('newcomer', 'x') RETURNING id, is_admin"
                                             )).one()
                assert new_user == (max(users.values()) + 1, False)
                conn.execute(text("DELETE FROM transcriptions WHERE status = 'submitted'"))
                conn.execute(text("DELETE FROM users WHERE username = 'newcomer'"))

            _check_legacy_users_through_the_api(app, engine, users, legacy_root)

            # Deleting a user now cascades to their transcriptions and error logs.
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM users WHERE username = 'sara'"))
                assert conn.execute(text("SELECT count(*) FROM transcriptions WHERE id IN "
                                         "(:a, :b)"), {"a": T_SARA_DONE, "b": T_SARA_FAILED}
                                    ).scalar() == 0
                assert conn.execute(text("SELECT count(*) FROM error_logs WHERE user_id = :u "
                                         "OR transcription_id = :t"),
                                    {"u": users["sara"], "t": T_SARA_FAILED}).scalar() == 0
                # Everyone else's rows stay.
                assert conn.execute(text("SELECT count(*) FROM transcriptions")).scalar() == 2
                assert conn.execute(text("SELECT count(*) FROM error_logs")).scalar() == 3
                # And deleting a transcription takes its error logs with it.
                conn.execute(text("DELETE FROM transcriptions WHERE id = :t"), {"t": T_TOM_DONE})
                assert conn.execute(text("SELECT count(*) FROM error_logs WHERE user_id = :u"),
                                    {"u": users["tom"]}).scalar() == 0
        finally:
            if app is not None:
                _dispose(app)
            engine.dispose()


def _check_legacy_users_through_the_api(app, engine, users, legacy_root: Path) -> None:
    client = app.test_client()

    def stored_hash(username):
        with engine.connect() as conn:
            return conn.execute(text("SELECT password FROM users WHERE username = :u"),
                                {"u": username}).scalar_one()

    tokens = {}
    for username, (password, method, is_admin) in LEGACY_USERS.items():
        old_hash = stored_hash(username)
        assert old_hash.startswith(method + "$")
        # A wrong password is refused by the legacy hash and leaves it alone.
        response = client.post("/login", json={"username": username, "password": password + "!"})
        assert response.status_code == 401
        assert response.get_json() == {"msg": "Bad username or password"}
        assert stored_hash(username) == old_hash

        response = client.post("/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["is_admin"] is is_admin
        new_hash = stored_hash(username)
        assert new_hash.startswith("$argon2id$"), new_hash  # upgraded on this login
        # The new hash works, the wrong password still does not.
        response = client.post("/login", json={"username": username, "password": password})
        assert response.status_code == 200
        assert stored_hash(username) == new_hash  # already at today's strength
        tokens[username] = response.get_json()["access_token"]
        response = client.post("/login", json={"username": username, "password": "nope-nope"})
        assert response.status_code == 401
        assert response.get_json() == {"msg": "Bad username or password"}

    # The legacy jobs, in the contract's shape.
    response = client.get("/transcriptions", headers=bearer(tokens["sara"]))
    assert response.status_code == 200, response.get_json()
    rows = {row["id"]: row for row in response.get_json()}
    assert set(rows) == {str(T_SARA_DONE), str(T_SARA_FAILED)}
    contract = {"id", "created_at", "updated_at", "status", "word_document_path",
                "txt_document_path", "audio_file_name"}
    for row in rows.values():
        assert contract <= set(row), row
    done, failed = rows[str(T_SARA_DONE)], rows[str(T_SARA_FAILED)]
    assert done["status"] == "completed" and failed["status"] == "error"
    assert done["audio_file_name"] == "Sermon 12 - Sunday Service"
    assert failed["audio_file_name"] == "Drive Talk"  # not the Drive URL
    assert datetime.fromisoformat(done["created_at"]) == BASE_TIME + timedelta(days=10)
    assert datetime.fromisoformat(done["updated_at"]) == BASE_TIME + timedelta(days=10, minutes=7)
    assert done["txt_document_path"] == (
        f"/download/txt/{T_SARA_DONE}/Sermon 12 - Sunday Service.txt")
    assert done["word_document_path"] == (
        f"/download/word/{T_SARA_DONE}/Sermon 12 - Sunday Service.docx")
    assert failed["txt_document_path"] is None
    admin_rows = {row["id"]: row for row in client.get(
        "/admin/transcriptions", headers=bearer(tokens["admin"])).get_json()}
    # The recorded server path never goes out: only its last segment, the file name.
    assert admin_rows[str(T_SARA_DONE)]["audio_file_path"] == "Sermon 12 - Sunday Service.mp3"
    assert admin_rows[str(T_TOM_DONE)]["audio_file_path"] == f"{T_TOM_DONE}.m4a"

    # A recorded relative path resolves against LEGACY_FILES_DIR's parent.
    txt = legacy_root / "txt" / "sara" / str(T_SARA_DONE) / "x.txt"
    txt.parent.mkdir(parents=True)
    txt.write_bytes("שלום, a legacy transcript\n".encode())
    response = client.get(f"/download/txt/{T_SARA_DONE}", headers=bearer(tokens["sara"]))
    assert response.status_code == 200, response.get_json()
    assert response.data == txt.read_bytes()
    assert "Sermon 12 - Sunday Service.txt" in response.headers["Content-Disposition"]
    # A recorded absolute path inside LEGACY_FILES_DIR serves too.
    md = legacy_root / "md" / "tom" / str(T_TOM_DONE) / "x.md"
    md.parent.mkdir(parents=True)
    md.write_bytes(b"# Tom's transcript\n")
    response = client.get(f"/download/md/{T_TOM_DONE}", headers=bearer(tokens["tom"]))
    assert response.status_code == 200, response.get_json()
    assert response.data == b"# Tom's transcript\n"
    # Another user's legacy document is not theirs to download.
    response = client.get(f"/download/txt/{T_SARA_DONE}", headers=bearer(tokens["tom"]))
    assert response.status_code == 404
