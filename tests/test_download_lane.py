"""The download lane (download_lane.py): the downloads it answers in front of Flask are the
route's answers, byte for byte, and everything else goes to the route."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest
from flask import request_started
from prometheus_client import REGISTRY
from sqlalchemy import text

from conftest import TEST_PASSWORD, bearer, login
from database import db
from download_lane import DownloadLane
from models import Document, Transcription, User

# Headers that differ between any two answers (a new id per request unless the client sent
# one; the clock).
_PER_REQUEST = {"Date", "X-Request-ID"}


@contextmanager
def flask_dispatches(app):
    """Paths of the requests Flask itself dispatched (the lane's answers are not among them)."""
    seen: list[str] = []

    def started(_sender, **_extra):
        from flask import request
        seen.append(request.path)
    request_started.connect(started, app)
    try:
        yield seen
    finally:
        request_started.disconnect(started, app)


def _lane(app) -> DownloadLane:
    lane = app.wsgi_app
    assert isinstance(lane, DownloadLane)
    return lane


def _answer(client, path, headers):
    response = client.get(path, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in _PER_REQUEST}
    return response.status_code, response.data, kept, response.headers.get("X-Request-ID")


def _through_the_route(app, monkeypatch, client, path, headers):
    with monkeypatch.context() as patch:
        patch.setattr(app, "wsgi_app", _lane(app).flask_wsgi_app)
        return _answer(client, path, headers)


def _job(app, user_id, *, docs=(), **columns) -> uuid.UUID:
    with app.app_context():
        columns.setdefault("status", "completed")
        job = Transcription(id=uuid.uuid4(), user_id=user_id, **columns)
        db.session.add(job)
        db.session.flush()
        for kind, content in docs:
            db.session.add(Document(transcription_id=job.id, kind=kind, content=content))
        db.session.commit()
        return job.id


@pytest.fixture
def warm(client, user_headers):
    """Headers with a token the route has verified once, as in a worker serving a while."""
    assert client.get(f"/download/word/{uuid.uuid4()}", headers=user_headers).status_code == 404
    return user_headers


def test_the_lane_answers_downloads_exactly_as_the_route(app, client, user, make_user, warm,
                                                         monkeypatch, tmp_path):
    stored = _job(app, user.id, audio_file_name="Khotbah Minggu – Kasih",
                  docs=[("docx", b"PK\x03\x04 word"), ("txt", "Selamat pagi".encode()),
                        ("md", b"# Judul")])
    not_ready = _job(app, user.id, audio_file_name="talk.mp3", status="error")
    relative = f"user-files/word/alice/{uuid.uuid4()}/transcript.docx"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_bytes(b"PK legacy word file")
    legacy = _job(app, user.id, audio_file_name="legacy talk", word_document_path=relative)
    outside = _job(app, user.id, word_document_path="/etc/passwd")  # never served
    theirs = _job(app, make_user("bob").id, docs=[("docx", b"PK")])
    etag = client.get(f"/download/word/{legacy}", headers=warm).headers["ETag"]
    indonesian = {"Accept-Language": "id-ID,id;q=0.9,en;q=0.8"}
    cases = [
        (f"/download/word/{stored}", {}, 200),
        (f"/download/docx/{stored}/Khotbah%20Minggu.docx", {}, 200),  # the lists' link
        (f"/download/txt/{stored}", {}, 200),
        (f"/download/md/{stored}", {"X-Request-ID": "trace-42"}, 200),
        (f"/download/word/{legacy}", {}, 200),
        (f"/download/word/{legacy}", {"If-None-Match": etag}, 304),
        (f"/download/word/{legacy}", {"Range": "bytes=0-1"}, 206),
        (f"/download/txt/{stored}", {"Content-Type": "application/json"}, 200),  # no body
        (f"/download/word/{outside}", {}, 404),
        (f"/download/word/{not_ready}", {}, 404),
        (f"/download/word/{not_ready}", indonesian, 404),
        (f"/download/word/{theirs}", {}, 404),  # another user's job: as if there were none
        (f"/download/word/{uuid.uuid4()}", indonesian, 404),
        (f"/download/word/{str(stored).upper()}", {}, 200),
    ]
    for path, extra, status in cases:
        headers = warm | extra
        with flask_dispatches(app) as dispatched:
            lane = _answer(client, path, headers)
        assert dispatched == [], f"{path} {extra}: the route answered, not the lane"
        route = _through_the_route(app, monkeypatch, client, path, headers)
        assert lane[0] == status, (path, extra, lane[1][:200])
        assert lane[:3] == route[:3], (path, extra)
        if "X-Request-ID" in extra:
            assert lane[3] == route[3] == extra["X-Request-ID"]
        else:
            assert len(lane[3]) == 32 and lane[3] != route[3]
    # What the answers say, beyond being the route's.
    body = client.get(f"/download/word/{not_ready}", headers=warm | indonesian).get_json()
    assert body == {"error": "Dokumen docx untuk transkripsi ini belum siap"}
    word = client.get(f"/download/word/{stored}", headers=warm)
    assert word.data == b"PK\x03\x04 word"
    assert "filename*=UTF-8''Khotbah%20Minggu%20%E2%80%93%20Kasih.docx" in \
        word.headers["Content-Disposition"]
    assert word.headers["X-Frame-Options"] == "DENY"


def test_what_the_lane_leaves_to_the_route(app, client, user, user_headers, admin_headers):
    """Each of these goes to Flask, which answers as it always did."""
    job = _job(app, user.id, docs=[("docx", b"PK")], audio_file_name="talk")
    fresh = bearer(login(client, user.username))
    refresh = client.post("/login", json={"username": user.username,
                                          "password": TEST_PASSWORD}).get_json()["refresh_token"]
    # A token this process has not verified yet: the route verifies (and remembers) it.
    with flask_dispatches(app) as dispatched:
        assert client.get(f"/download/word/{job}", headers=fresh).status_code == 200
    assert dispatched == [f"/download/word/{job}"]
    cases = [
        ("HEAD", f"/download/word/{job}", fresh, None, 200),
        ("GET", f"/download/srt/{job}", fresh, None, 404),  # subtitles: no timestamps here
        ("GET", "/download/word/not-a-uuid", fresh, None, 400),
        ("GET", f"/download/pdf/{job}", fresh, None, 400),
        ("GET", f"/download/word/{job}", fresh, b"{}", 200),  # a body: the route's hooks
        ("GET", f"/download/word/{job}", fresh | {"Content-Type": "multipart/form-data"}, None,
         415),
        ("GET", f"/download/word/{job}", fresh | {"Range": "bytes=999-"}, None, 416),
        ("GET", f"/download/word/{job}", fresh | {"Range": "bytes=5-1"}, None, 416),
        ("GET", f"/download/word/{job}", bearer(refresh), None, 401),  # not an access token
        ("GET", f"/download/word/{job}", {"Authorization": "Basic YWxpY2U6eA=="}, None, 401),
        ("GET", f"/download/word/{job}", {}, None, 401),
    ]
    for method, path, headers, body, status in cases:
        client.get(f"/download/word/{job}", headers=headers)  # remembered, where it can be
        with flask_dispatches(app) as dispatched:
            response = client.open(path, method=method, headers=headers, data=body,
                                   content_type="application/json" if body else None)
        assert response.status_code == status, (method, path, headers, body)
        assert dispatched == [path], (method, path, headers, body)
    # The same token is the lane's once the route has verified it.
    with flask_dispatches(app) as dispatched:
        assert client.get(f"/download/word/{job}", headers=fresh).status_code == 200
    assert dispatched == []


def test_revocation_reset_and_deletion_apply_to_the_next_download(app, client, make_user,
                                                                  admin_headers):
    """Read fresh on every request, as on the route: the lane sees the token problem and
    leaves the 401 to the route."""
    for change, message in (("logout", "revoked"), ("reset", "session has ended"),
                            ("delete", "session has ended")):
        someone = make_user(f"someone-{change}")
        job = _job(app, someone.id, docs=[("docx", b"PK")])
        headers = bearer(login(client, someone.username))
        assert client.get(f"/download/word/{job}", headers=headers).status_code == 200
        with flask_dispatches(app) as dispatched:
            assert client.get(f"/download/word/{job}", headers=headers).status_code == 200
        assert dispatched == []  # the lane's
        if change == "logout":
            assert client.post("/logout", headers=headers).status_code == 200
        elif change == "reset":
            assert client.patch(f"/admin/users/{someone.id}", headers=admin_headers,
                                json={"password": "a brand new password"}).status_code == 200
        else:
            assert client.delete(f"/admin/users/{someone.id}",
                                 headers=admin_headers).status_code == 200
        with flask_dispatches(app) as dispatched:
            refused = client.get(f"/download/word/{job}", headers=headers)
        assert refused.status_code == 401 and message in refused.get_json()["error"], change
        assert dispatched == [f"/download/word/{job}"], change


def test_the_lane_is_off_without_prepared_statements(make_app, make_user):
    app = make_app(DATABASE_PREPARED_STATEMENTS=False)
    client = app.test_client()
    someone = make_user("someone")
    job = _job(app, someone.id, docs=[("docx", b"PK")])
    headers = bearer(login(client, someone.username))
    with flask_dispatches(app) as dispatched:
        for _ in range(2):
            assert client.get(f"/download/word/{job}", headers=headers).data == b"PK"
    assert len(dispatched) == 2


def test_a_connection_the_server_ended_is_replaced_and_the_answer_is_the_same(
        app, client, user, warm):
    """A pooled connection whose backend was terminated (a database restart, an idle
    timeout): the lane's read fails or the checkout notices; the download is still a 200."""
    job = _job(app, user.id, docs=[("docx", b"PK")])
    assert client.get(f"/download/word/{job}", headers=warm).status_code == 200
    with app.app_context():
        killer = db.engine.connect()
    try:
        # Every other backend of this database: the pooled ones the lane takes.
        killer.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        killer.commit()
        for _ in range(3):
            response = client.get(f"/download/word/{job}", headers=warm)
            assert response.status_code == 200 and response.data == b"PK"
        with flask_dispatches(app) as dispatched:
            assert client.get(f"/download/word/{job}", headers=warm).status_code == 200
        assert dispatched == []  # the lane again, on a new connection
    finally:
        killer.close()


def test_the_database_away_is_the_routes_503(make_app):
    from flask_jwt_extended import create_access_token

    from auth import SignedInUser, token_claims
    app = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/test")
    with app.app_context():
        someone = SignedInUser(1, "someone", False, 0)
        token = create_access_token(identity=someone, additional_claims=token_claims(someone))
    client = app.test_client()
    for _ in range(2):  # the second with the token remembered: the lane tries, the route answers
        with flask_dispatches(app) as dispatched:
            response = client.get(f"/download/word/{uuid.uuid4()}", headers=bearer(token))
        assert response.status_code == 503
        assert response.get_json() == {
            "error": "The database is unavailable; try again in a moment"}
        assert len(dispatched) == 1


def test_the_lanes_answers_are_in_the_latency_metric(app, client, user, warm):
    job = _job(app, user.id, docs=[("docx", b"PK")])
    labels = {"method": "GET", "route": "/download/<file_type>/<transcription_id>/<file_name>",
              "status": "200"}
    before = REGISTRY.get_sample_value("ezra_http_request_seconds_count", labels) or 0
    with flask_dispatches(app) as dispatched:
        for _ in range(3):
            assert client.get(f"/download/word/{job}/talk.docx", headers=warm).status_code == 200
    assert dispatched == []
    assert REGISTRY.get_sample_value("ezra_http_request_seconds_count", labels) == before + 3


def test_a_user_row_without_the_token_version_claim_is_the_routes(app, client, user, warm):
    """A token whose `tv` no longer matches (a reset in another process, say): the route."""
    job = _job(app, user.id, docs=[("docx", b"PK")])
    with app.app_context():
        db.session.execute(text("UPDATE users SET token_version = token_version + 1 "
                                "WHERE id = :id"), {"id": user.id})
        db.session.commit()
        assert db.session.get(User, user.id).token_version >= 1
    with flask_dispatches(app) as dispatched:
        response = client.get(f"/download/word/{job}", headers=warm)
    assert response.status_code == 401 and dispatched == [f"/download/word/{job}"]


def test_the_admins_default_language_applies_at_once(app, client, user, warm, admin_headers):
    """A 404 without an Accept-Language of ours is written in the `default_language`
    setting, which a download reads with its token check: a change applies to the next one,
    in the lane as on the route."""
    job = _job(app, user.id, status="error")
    path = f"/download/word/{job}"
    assert client.get(path, headers=warm).get_json() == {
        "error": "The docx document of this transcription is not ready"}
    created = client.post("/admin/settings", headers=admin_headers,
                          json={"setting_key": "default_language", "setting_value": "id"})
    assert created.status_code in (200, 201), created.get_json()
    with flask_dispatches(app) as dispatched:
        assert client.get(path, headers=warm).get_json() == {
            "error": "Dokumen docx untuk transkripsi ini belum siap"}
    assert dispatched == []
    # The reader's own language still comes first.
    assert "not ready" in client.get(path, headers=warm | {"Accept-Language": "en-GB"}
                                     ).get_json()["error"]


def test_the_lane_stands_in_for_every_hook_the_route_runs(app):
    """The lane gives what these hooks give a download (security headers, the request id,
    the latency metric) or leaves the request to the route (body limits); translating a
    success message and forgetting the default language concern other answers. A hook
    added to the app must be weighed for download_lane.py, then listed here."""
    def names(funcs_by_blueprint):
        return sorted(f"{key}:{getattr(f, '__qualname__', f)}"
                      for key, funcs in funcs_by_blueprint.items() if key in (None, "user")
                      for f in funcs)
    assert names(app.before_request_funcs) == [
        "None:_limit_body", "None:init_app.<locals>.start_timer",
        "None:init_request_id.<locals>.take_request_id"]
    assert names(app.after_request_funcs) == [
        "None:add_security_headers", "None:init_app.<locals>._settings_changed",
        "None:init_app.<locals>._translate_success_message",
        "None:init_app.<locals>.observe_latency", "None:init_request_id.<locals>.give_request_id"]
    assert names(app.url_value_preprocessors) == []
    assert _lane(app).fits_the_route
