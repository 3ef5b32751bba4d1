"""The request hot paths (issue 9): what the speed-ups must not change, and the statements
they save. Speed itself is measured by bench/compare_refs.py, never here."""
from __future__ import annotations

import threading
import time
import uuid

from argon2 import PasswordHasher
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from conftest import TEST_PASSWORD, bearer, login
from database import db
from models import Document, Transcription, User
from password import hash_password, verify_password


class StatementLog:
    """Statements the app's engine sends, with whether the connection was in autocommit."""

    def __init__(self, app):
        with app.app_context():
            self.engine = db.engine
        self.entries: list[tuple[str, bool]] = []
        event.listen(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn, _cursor, statement, *_args):
        self.entries.append((statement, bool(conn.connection.dbapi_connection.autocommit)))

    def take(self) -> list[tuple[str, bool]]:
        entries, self.entries = self.entries, []
        return entries

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


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
        # An error answer reads the admins' `default_language` (its language) once, then
        # keeps it for a few seconds (i18n.py): one more statement, the first time only.
        assert client.get(f"/download/txt/{job_id}", headers=user_headers).status_code == 404
        assert len(log.take()) == 2
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


def test_revocation_and_demotion_apply_to_the_next_request(app, client, make_user):
    boss = make_user("boss", is_admin=True)
    make_user("second-admin", is_admin=True)
    token = login(client, "boss")
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
    with app.app_context():
        db.session.get(User, boss.id).is_admin = False
        db.session.commit()
    demoted = client.get("/admin/stats", headers=bearer(token))
    assert demoted.status_code == 403
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
