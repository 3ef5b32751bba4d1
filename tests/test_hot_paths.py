"""The request hot paths (issue 9): what the speed-ups must not change, and the statements
they save. Speed itself is measured by bench/compare_refs.py, never here."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import date, datetime, timezone

import flask_sqlalchemy.session
import psycopg2.extensions
from argon2 import PasswordHasher
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from werkzeug.security import generate_password_hash

from conftest import TEST_PASSWORD, bearer, login
import database
from database import db
from models import SEGMENTS_KIND, Document, Transcription, User
from password import hash_password, verify_password


class StatementLog:
    """Statements the app's connections send, with whether the connection was in autocommit.
    Recorded at the driver (a psycopg2 cursor class set on every checkout), so that the
    download lane's reads, which bypass SQLAlchemy, count too. A PREPARE (once per pooled
    connection and hot read, database.PreparedRead) is kept apart in `prepared`: the counts
    are of what every request sends."""

    def __init__(self, app):
        with app.app_context():
            self.engine = db.engine
        self.entries: list[tuple[str, bool]] = []
        self.prepared: list[str] = []
        self.closed = False
        log = self

        class RecordingCursor(psycopg2.extensions.cursor):
            def execute(self, query, vars=None):
                log._record(self.connection, query)
                return super().execute(query, vars)

            def executemany(self, query, vars_list):
                log._record(self.connection, query)
                return super().executemany(query, vars_list)

        self._cursor_class = RecordingCursor
        event.listen(self.engine, "checkout", self._on_checkout)
        event.listen(self.engine, "checkin", self._on_checkin)

    def _on_checkout(self, dbapi_connection, *_args):
        dbapi_connection.cursor_factory = self._cursor_class

    @staticmethod
    def _on_checkin(dbapi_connection, *_args):
        if dbapi_connection is not None:
            dbapi_connection.cursor_factory = None

    def _record(self, dbapi_connection, statement: str) -> None:
        if self.closed:
            return
        if statement.startswith("PREPARE "):
            self.prepared.append(statement)
        else:
            self.entries.append((statement, bool(dbapi_connection.autocommit)))

    def take(self) -> list[tuple[str, bool]]:
        entries, self.entries = self.entries, []
        return entries

    def close(self) -> None:
        self.closed = True
        event.remove(self.engine, "checkout", self._on_checkout)
        event.remove(self.engine, "checkin", self._on_checkin)


def _jobs(app, user_id: int, count: int, with_docs: bool = True) -> list[uuid.UUID]:
    ids = []
    with app.app_context():
        for i in range(count):
            job = Transcription(id=uuid.uuid4(), user_id=user_id, status="completed",
                                audio_file_name=f"talk {i}")
            db.session.add(job)
            db.session.flush()
            if with_docs:
                db.session.add(Document(transcription_id=job.id, kind="docx", content=b"PK"))
            ids.append(job.id)
        db.session.commit()
    return ids


def test_lists_and_downloads_issue_a_constant_small_number_of_statements(
        app, client, user, admin, user_headers, admin_headers):
    log = StatementLog(app)
    try:
        _jobs(app, user.id, 1)
        log.take()
        one = client.get("/transcriptions", headers=user_headers)
        few = len(log.take())
        _jobs(app, user.id, 30)
        log.take()
        many = client.get("/transcriptions", headers=user_headers)
        assert one.status_code == many.status_code == 200 and len(many.get_json()) == 31
        # The token check (revocation + the user, one statement) and the page.
        assert few == len(log.take()) == 2

        job_id = many.get_json()[0]["id"]
        # An error answer is written in the admins' `default_language` (when Accept-Language
        # names none of ours): a download reads it in the same statement.
        assert client.get(f"/download/txt/{job_id}", headers=user_headers).status_code == 404
        assert len(log.take()) == 1
        # A download reads the token check and its job and document in one statement.
        for path, status in ((f"/download/word/{job_id}", 200), (f"/download/txt/{job_id}", 404),
                             (f"/download/word/{uuid.uuid4()}", 404)):
            response = client.get(path, headers=user_headers)
            assert response.status_code == status, path
            assert len(log.take()) == 1, path
        # Bad ids still answer their own error, after the token check.
        for path, status in (("/download/word/not-a-uuid", 400), (f"/download/pdf/{job_id}", 400)):
            assert client.get(path, headers=user_headers).status_code == status, path
            assert len(log.take()) == 1, path
        assert client.get(f"/download/word/{job_id}").status_code == 401
        assert client.get(f"/admin/download/word/{job_id}", headers=admin_headers
                          ).status_code == 200
        assert len(log.take()) == 2
        for path in ("/admin/transcriptions?limit=100", "/admin/logs?limit=100", "/admin/stats"):
            assert client.get(path, headers=admin_headers).status_code == 200
            assert len(log.take()) == 2, path
    finally:
        log.close()


def test_reads_run_in_autocommit_and_writes_in_one_transaction(app, client, user, user_headers):
    log = StatementLog(app)
    try:
        assert client.get("/transcriptions", headers=user_headers).status_code == 200
        reads = log.take()
        assert reads and all(autocommit for _, autocommit in reads)
        refresh = client.post("/login", json={"username": user.username,
                                              "password": TEST_PASSWORD})
        assert refresh.status_code == 200
        writes = log.take()
        assert writes and not any(autocommit for _, autocommit in writes)
        # The pooled connection went back to transactions after the read.
        with app.app_context():
            assert not db.session.connection().connection.dbapi_connection.autocommit
    finally:
        log.close()


# The admin reads that run on the request's Core connection (database.request_connection).
ADMIN_HOT_READS = ("/admin/stats", "/admin/logs?limit=100", "/admin/transcriptions?limit=100",
                   "/admin/users")


def test_revocation_and_demotion_apply_to_the_next_request(app, client, make_user):
    boss = make_user("boss", is_admin=True)
    make_user("second-admin", is_admin=True)
    token = login(client, "boss")
    for path in ADMIN_HOT_READS:
        assert client.get(path, headers=bearer(token)).status_code == 200, path
    with app.app_context():
        db.session.get(User, boss.id).is_admin = False
        db.session.commit()
    for path in ADMIN_HOT_READS:
        demoted = client.get(path, headers=bearer(token))
        assert demoted.status_code == 403, path
    assert client.get("/transcriptions", headers=bearer(token)).status_code == 200
    job_id = _jobs(app, boss.id, 1)[0]
    download = f"/download/word/{job_id}"
    assert client.get(download, headers=bearer(token)).status_code == 200
    assert client.post("/logout", headers=bearer(token)).status_code == 200
    for path in ("/transcriptions", download):
        revoked = client.get(path, headers=bearer(token))
        assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]
    other = login(client, "boss")
    with app.app_context():
        db.session.delete(db.session.get(User, boss.id))
        db.session.commit()
    gone = client.get(download, headers=bearer(other))
    assert gone.status_code == 401 and "session has ended" in gone.get_json()["error"]


def test_hot_reads_take_one_pooled_connection_and_no_orm_session(
        app, client, user, admin, user_headers, admin_headers):
    """The hot GET routes read on one Core connection per request (token check included);
    other routes keep the ORM session, and the connection goes back to transactions."""
    job_id, timed_id = _jobs(app, user.id, 2)
    with app.app_context():
        db.session.add(Document(transcription_id=timed_id, kind=SEGMENTS_KIND,
                                content=b'[[0.0, 1.5, "Selamat pagi"]]'))
        db.session.commit()
        engine = db.engine
    checkouts, sessions = [], []

    def count_checkout(*_args) -> None:
        checkouts.append(1)

    def count_session(*_args) -> None:
        sessions.append(1)
    event.listen(engine.pool, "checkout", count_checkout)
    event.listen(flask_sqlalchemy.session.Session, "after_begin", count_session)
    try:
        for path, headers, status in (
                ("/transcriptions", user_headers, 200),
                (f"/download/word/{job_id}", user_headers, 200),
                (f"/download/word/{job_id}/talk%200.docx", user_headers, 200),
                (f"/download/txt/{job_id}", user_headers, 404),
                (f"/download/srt/{job_id}", user_headers, 404),  # no segments: not ready
                (f"/download/vtt/{timed_id}", user_headers, 200),
                (f"/admin/download/srt/{timed_id}", admin_headers, 200),
                (f"/download/word/{uuid.uuid4()}", user_headers, 404),
                (f"/admin/download/word/{job_id}", admin_headers, 200),
                *((path, admin_headers, 200) for path in ADMIN_HOT_READS)):
            checkouts.clear()
            sessions.clear()
            response = client.get(path, headers=headers)
            assert response.status_code == status, path
            assert (len(checkouts), len(sessions)) == (1, 0), path
        checkouts.clear()
        assert client.get(f"/transcriptions/{job_id}", headers=user_headers).status_code == 200
        assert len(checkouts) == 1 and sessions  # an ordinary route: the session, as before
    finally:
        event.remove(engine.pool, "checkout", count_checkout)
        event.remove(flask_sqlalchemy.session.Session, "after_begin", count_session)
    with app.app_context():
        assert not db.session.connection().connection.dbapi_connection.autocommit


def test_a_hot_read_with_the_database_down_is_503_json(make_app):
    from flask_jwt_extended import create_access_token

    from auth import SignedInUser, token_claims
    app = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/test")
    with app.app_context():
        someone = SignedInUser(1, "someone", False, 0)
        token = create_access_token(identity=someone, additional_claims=token_claims(someone))
    for path in ("/transcriptions", f"/download/word/{uuid.uuid4()}"):
        response = app.test_client().get(path, headers=bearer(token))
        assert response.status_code == 503, path
        assert response.get_json() == {
            "error": "The database is unavailable; try again in a moment"}


def test_a_pooled_connection_closed_by_the_server_is_replaced_not_a_503(app, client, user,
                                                                        user_headers):
    """No pre-ping round trip: a connection the server closed (restart, idle timeout) is
    noticed on checkout from its socket and replaced."""
    assert client.get("/transcriptions", headers=user_headers).status_code == 200
    with app.app_context():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        db.session.remove()  # back to the pool, idle
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    try:
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar():
                time.sleep(0.05)
    finally:
        other.dispose()
    for _ in range(3):  # every pooled connection, the terminated one among them
        response = client.get("/transcriptions", headers=user_headers)
        assert response.status_code == 200, response.get_json()


def test_an_argon2_cost_change_rehashes_on_the_next_login(make_app, client, user):
    stronger = make_app(ARGON2_TIME_COST=3)
    strong_client = stronger.test_client()
    login(strong_client, user.username)
    with stronger.app_context():
        stored = db.session.get(User, user.id).password_hash
    assert stored.startswith("$argon2id$") and ",t=3," in stored
    login(strong_client, user.username)  # verifies at the new cost


def test_password_checks_run_at_most_argon2_max_concurrent_at_once(make_app, monkeypatch):
    app = make_app(ARGON2_MAX_CONCURRENT=2)
    with app.app_context():
        stored = hash_password("correct horse")
    inside, peak, lock = 0, 0, threading.Lock()
    real_verify = PasswordHasher.verify

    def tracking_verify(self, hash, password):
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        try:
            time.sleep(0.05)  # hold the slot, so that threads overlap
            return real_verify(self, hash, password)
        finally:
            with lock:
                inside -= 1
    monkeypatch.setattr(PasswordHasher, "verify", tracking_verify)
    results = []

    def check():
        with app.app_context():
            results.append(verify_password(stored, "correct horse"))
    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [True] * 6
    assert peak <= 2


class RoundTrips:
    """What reaches the server per request, counted as bench/gunicorn_probe.py counts it:
    statements, and COMMIT/ROLLBACK of an open transaction."""

    def __init__(self, app):
        with app.app_context():
            self.engine = db.engine
        self.count = 0
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._end)
        event.listen(self.engine, "rollback", self._end)

    def _statement(self, *_args):
        self.count += 1

    def _end(self, conn):
        if conn.connection.dbapi_connection.get_transaction_status() != 0:  # not idle
            self.count += 1

    def take(self) -> int:
        count, self.count = self.count, 0
        return count

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._end)
        event.remove(self.engine, "rollback", self._end)


def test_sign_in_round_trips_are_constant_per_outcome(app, client, make_user):
    """The throttle's bookkeeping costs the same on every sign-in: a correct password 5
    round trips (the earlier backend: 9), 6 on the one that re-hashes a password to a new
    cost, a wrong one 3, a waiting pair 2."""
    make_user("counted")
    with app.app_context():
        legacy = User(username="legacy-hash", is_admin=False,
                      password_hash=generate_password_hash(TEST_PASSWORD, "pbkdf2:sha256:1000"))
        db.session.add(legacy)
        db.session.commit()
    # An error answer's language: the admin's default_language is read once, then kept for
    # a while per process (i18n); read it before counting.
    assert client.post("/login", json={"username": "nobody", "password": "x"}).status_code == 401
    trips = RoundTrips(app)
    try:
        def sign_in(name, password=TEST_PASSWORD):
            response = client.post("/login", json={"username": name, "password": password})
            return response.status_code, trips.take()

        assert [sign_in("counted") for _ in range(4)] == [(200, 5)] * 4
        assert sign_in("legacy-hash") == (200, 6)  # re-hashed to Argon2id
        assert sign_in("legacy-hash") == (200, 5)
        limit = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
        wrong = [sign_in("counted", "wrong password") for _ in range(limit - 1)]
        assert wrong == [(401, 3)] * (limit - 1)
        assert sign_in("nobody-by-this-name") == (401, 3)  # unknown names cost the same
        # The attempt that reaches the limit also writes the pair's wait; the next one waits.
        assert sign_in("counted", "wrong password") == (401, 4)
        assert sign_in("counted") == (429, 2)
    finally:
        trips.close()


def test_json_answers_are_the_bytes_flask_gives(app):
    """orjson encodes the answers; the bytes stay those of Flask's own encoder (non-ASCII
    text escaped as before, integers past 64 bits through the standard library)."""
    from flask.json.provider import DefaultJSONProvider
    flask_json = DefaultJSONProvider(app)
    flask_json.sort_keys = False
    samples = [
        [{"id": "a", "n": 1, "f": 2.5, "none": None, "ok": True, "nested": {"b": [1, 2]}}],
        {"error": "Say \"hi\"\n\tback\\slash </script>", "z": 1, "a": 2},
        {"name": "Été — 講演", "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)},
        {"id": uuid.UUID(int=7), "big": 2**70, "date": date(2026, 1, 2)},
        [],
    ]
    with app.test_request_context():
        for sample in samples:
            assert app.json.response(sample).get_data() == \
                flask_json.response(sample).get_data(), sample


def test_answers_with_times_write_them_as_iso_does(app):
    """The list answers keep their timestamps as datetimes to the encoder
    (serializers.json_with_times): the bytes stay those of Flask's encoder given iso()'s text."""
    from datetime import timedelta

    from flask.json.provider import DefaultJSONProvider

    from serializers import iso, json_with_times
    flask_json = DefaultJSONProvider(app)
    flask_json.sort_keys = False
    times = [datetime(2026, 1, 2, 3, 4, 5, 67, tzinfo=timezone.utc),
             datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
             datetime(2026, 1, 2, 3, 4, 5, 678000),  # naive: stored in UTC (SQLite)
             datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=7))), None]
    samples = [
        [{"id": "a", "created_at": when, "updated_at": when, "n": 1.5} for when in times],
        {"id": "b", "created_at": times[0], "audio_file_name": "Été — 講演"},  # non-ASCII
        [{"created_at": times[2], "big": 2**70}],  # past 64 bits: the standard library
        [],
    ]
    with app.test_request_context():
        for sample in samples:
            as_text = (
                [{k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}
                 for row in sample] if isinstance(sample, list)
                else {k: iso(v) if isinstance(v, datetime) else v for k, v in sample.items()})
            assert json_with_times(sample).get_data() == \
                flask_json.response(as_text).get_data(), sample


def _prepare_and_execute(log: StatementLog) -> tuple[list[str], list[str]]:
    executes = [statement for statement, _ in log.take() if statement.startswith("EXECUTE ")]
    prepared, log.prepared = log.prepared, []
    return prepared, executes


def test_hot_reads_are_planned_once_per_connection(app, client, user, user_headers):
    """database.PreparedRead: the token check (with a download's job and document) is
    prepared the first time a pooled connection runs it, then only executed; a server that
    forgot it (DEALLOCATE or DISCARD ALL on the connection) gets it prepared again."""
    job_id = _jobs(app, user.id, 1)[0]
    with app.app_context():
        engine = db.engine
        engine.dispose()  # one pooled connection from here on: the requests are sequential
    log = StatementLog(app)
    try:
        download = f"/download/word/{job_id}"
        first = client.get(download, headers=user_headers)
        assert first.status_code == 200 and first.data == b"PK"
        prepared, executes = _prepare_and_execute(log)
        assert len(prepared) == 1 and len(executes) == 1
        name = prepared[0].split()[1]
        assert executes[0].startswith(f"EXECUTE {name} ")
        for _ in range(3):
            assert client.get(download, headers=user_headers).data == b"PK"
            assert _prepare_and_execute(log) == ([], [f"EXECUTE {name} " + executes[0].split(
                " ", 2)[2]])
        # The same statement answers a missing document and an unknown job.
        assert client.get(f"/download/txt/{job_id}", headers=user_headers).status_code == 404
        assert client.get(f"/download/word/{uuid.uuid4()}", headers=user_headers
                          ).status_code == 404
        with engine.connect() as conn:  # the one pooled connection
            conn.exec_driver_sql("DEALLOCATE ALL")
            conn.commit()
        _prepare_and_execute(log)
        again = client.get(download, headers=user_headers)
        assert again.status_code == 200 and again.data == b"PK"
        prepared, executes = _prepare_and_execute(log)
        assert [p.split()[1] for p in prepared] == [name]
        assert len(executes) == 2  # the one the server no longer knew, and the retry
        # The pool forgot what the server still has (a pooler's connection): PREPARE says it
        # exists already (42P05), and the statement runs.
        with engine.connect() as conn:
            conn.info[database._PREPARED].clear()
        assert client.get(download, headers=user_headers).data == b"PK"
        prepared, executes = _prepare_and_execute(log)
        assert [p.split()[1] for p in prepared] == [name] and len(executes) == 1
    finally:
        log.close()


def test_a_prepared_read_follows_a_changed_column_type(app, client, user, user_headers):
    """A migration that changes the type of a column a prepared read returns makes its
    EXECUTE fail ("cached plan must not change result type"): it is prepared again."""
    job_id = _jobs(app, user.id, 1)[0]
    with app.app_context():
        engine = db.engine
        engine.dispose()
    download = f"/download/word/{job_id}"
    assert client.get(download, headers=user_headers).data == b"PK"
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool,
                          isolation_level="AUTOCOMMIT")
    log = StatementLog(app)
    try:
        with other.connect() as conn:
            conn.execute(text("ALTER TABLE transcriptions ALTER COLUMN audio_file_name "
                              "TYPE varchar(2000)"))
        answer = client.get(download, headers=user_headers)
        assert answer.status_code == 200 and answer.data == b"PK"
        assert "talk 0" in answer.headers["Content-Disposition"]
        statements = [statement.split(" ", 2)[:2] for statement, _ in log.take()]
        assert statements[0][0] == "EXECUTE" and ["DEALLOCATE", statements[0][1]] in statements
        assert len(log.prepared) == 1
    finally:
        log.close()
        with other.connect() as conn:
            conn.execute(text("ALTER TABLE transcriptions ALTER COLUMN audio_file_name TYPE text"))
        other.dispose()


def test_a_prepared_read_refuses_a_missing_parameter(app):
    """A parameter left out is an error, as with the statement itself, never a silent NULL."""
    import pytest
    from sqlalchemy import bindparam, select
    from sqlalchemy.exc import StatementError

    from models import User as UserModel
    read = database.PreparedRead(select(UserModel.id).where(UserModel.id == bindparam("user_id")))
    with app.test_request_context("/transcriptions", method="GET"):  # a hot read's route
        try:
            assert database.request_connection() is not None
            with pytest.raises(StatementError, match="user_id"):
                read.execute({})
            assert read.execute({"user_id": -1}).first() is None
        finally:
            database.close_request_connection()


def test_prepared_reads_can_be_turned_off_with_the_same_answers(make_app, make_user):
    answers = {}
    for prepared in (True, False):
        app = make_app(DATABASE_PREPARED_STATEMENTS=prepared)
        client = app.test_client()
        someone = make_user(f"someone-{prepared}".lower())
        job_id = _jobs(app, someone.id, 1)[0]
        headers = bearer(login(client, someone.username))
        log = StatementLog(app)
        try:
            seen = []
            for path in (f"/download/word/{job_id}", f"/download/md/{job_id}",
                         f"/download/word/{uuid.uuid4()}", "/transcriptions"):
                response = client.get(path, headers=headers)
                seen.append((response.status_code, response.data if response.status_code == 200
                             and path != "/transcriptions" else response.get_json()))
            statements = [statement for statement, _ in log.take()]
            assert bool(log.prepared) is prepared
            assert any(s.startswith("EXECUTE ") for s in statements) is prepared
        finally:
            log.close()
        answers[prepared] = [(status, body if isinstance(body, bytes) else
                              (len(body) if isinstance(body, list) else body))
                             for status, body in seen]
    assert answers[True] == answers[False]
    assert [status for status, _ in answers[True]] == [200, 404, 404, 200]


def _count_token_parses(monkeypatch) -> list[int]:
    """How many times PyJWT parses a token (each parse checks every character)."""
    from jwt.api_jws import PyJWS
    parses = [0]
    real_load = PyJWS._load

    def counting_load(self, token):
        parses[0] += 1
        return real_load(self, token)
    monkeypatch.setattr(PyJWS, "_load", counting_load)
    return parses


def test_a_verified_token_is_not_verified_again_but_still_checked_every_request(
        app, client, user, monkeypatch):
    """auth.JWTWithVerifiedTokens: a token verified once is remembered; revocation, the
    user and expiry still apply to the very next request."""
    parses = _count_token_parses(monkeypatch)
    token = login(client, user.username)
    path = "/transcriptions"
    parses[0] = 0
    assert client.get(path, headers=bearer(token)).status_code == 200
    first = parses[0]
    parses[0] = 0
    assert client.get(path, headers=bearer(token)).status_code == 200
    assert first >= 3 and parses[0] == 1  # only Flask-JWT-Extended's header read is left
    # A changed signature is another token: verified, and refused.
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = client.get(path, headers=bearer(forged))
    assert refused.status_code == 401 and "invalid" in refused.get_json()["error"]
    # Another secret: the remembered verdict was for the old one.
    secret = app.config["JWT_SECRET_KEY"]
    app.config["JWT_SECRET_KEY"] = secret + "-rotated"
    try:
        assert client.get(path, headers=bearer(token)).status_code == 401
    finally:
        app.config["JWT_SECRET_KEY"] = secret
    assert client.get(path, headers=bearer(token)).status_code == 200
    # Signing out revokes the remembered token at once.
    assert client.post("/logout", headers=bearer(token)).status_code == 200
    revoked = client.get(path, headers=bearer(token))
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]


def test_a_remembered_token_expires_on_time(app, client, user):
    from datetime import timedelta

    from flask_jwt_extended import create_access_token

    from auth import token_claims
    with app.app_context():
        # `exp` is written in whole seconds: this token lives 2 to 3 s.
        token = create_access_token(identity=user, additional_claims=token_claims(user),
                                    expires_delta=timedelta(seconds=3))
    assert client.get("/transcriptions", headers=bearer(token)).status_code == 200
    deadline = time.monotonic() + 8
    while True:
        expired = client.get("/transcriptions", headers=bearer(token))
        if expired.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert expired.status_code == 401
    assert expired.get_json() == {"error": "The access token has expired; please sign in again"}


def test_remembered_tokens_are_bounded():
    from auth import _VerifiedTokens
    remembered = _VerifiedTokens(3)
    for n in range(5):
        remembered.put((f"token-{n}", "secret"), {"exp": n})
    assert [remembered.get((f"token-{n}", "secret")) for n in range(5)] == [
        None, None, {"exp": 2}, {"exp": 3}, {"exp": 4}]
