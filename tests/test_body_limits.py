"""Issue 8, item 1: every route has its own body cap, checked before the body is read; only
the routes that take a file accept multipart, and nothing reaches the disk elsewhere."""
from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from conftest import bearer, login


def _incoming(tmp_path):
    folder = tmp_path / "storage" / "incoming"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_login_refuses_a_large_json_body_from_its_content_length(client, tmp_path):
    response = client.post("/login", data=b'{"username": "' + b"a" * 200_000 + b'"}',
                           content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"error": "The request body is too large; the limit is 16 KB"}


def test_a_multipart_body_to_login_is_refused_and_never_written(client, tmp_path):
    response = client.post("/login", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"\0" * (3 * 1024 * 1024)), "a.mp3")})
    assert response.status_code == 413
    small = client.post("/login", content_type="multipart/form-data",
                        data={"username": "a", "password": "b"})
    assert small.status_code == 415
    assert "JSON body" in small.get_json()["error"]
    assert _incoming(tmp_path) == []


def test_a_chunked_body_is_cut_at_the_cap(app):
    # A chunked body has no Content-Length; the WSGI server marks its end instead
    # (gunicorn sets wsgi.input_terminated). It is cut once 16 KB have been read.
    body = io.BytesIO(b"[" + b"1," * 500_000 + b"1]")
    environ = EnvironBuilder(path="/login", method="POST", input_stream=body,
                             content_type="application/json").get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    chunks, status, _headers = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413")
    assert "16 KB" in json.loads(b"".join(chunks))["error"]
    assert body.tell() < 100_000  # the rest was never read


def test_admin_json_routes_take_up_to_max_json_kb(make_app, make_user):
    app = make_app(MAX_JSON_KB=64)
    make_user("root", is_admin=True)
    client = app.test_client()
    headers = bearer(login(client, "root"))
    too_big = client.post("/admin/transcribe-prompts", headers=headers,
                          json={"version": "v", "prompt": "p" * 70_000})
    assert too_big.status_code == 413
    assert too_big.get_json()["error"].endswith("the limit is 64 KB")
    fits = client.post("/admin/transcribe-prompts", headers=headers,
                       json={"version": "v", "prompt": "p" * 60_000})
    assert fits.status_code == 201


@pytest.mark.parametrize("path", ["/transcriptions/00000000-0000-0000-0000-000000000000/retry",
                                  "/admin/settings"])
def test_authenticated_routes_without_files_refuse_uploads(app, client, user, admin, tmp_path,
                                                           path):
    headers = bearer(login(client, "root-admin"))
    response = client.post(path, headers=headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "a.mp3")})
    assert response.status_code == 413
    assert _incoming(tmp_path) == []


def test_process_still_takes_uploads_up_to_max_upload_mb(make_app, make_user, tmp_path):
    app = make_app(MAX_UPLOAD_MB=2)
    make_user("alice")
    client = app.test_client()
    response = client.post("/process", headers=bearer(login(client, "alice")),
                           content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"\0" * (1024 * 1024)), "talk.mp3")})
    assert response.status_code == 400  # read in full, then found not to be audio
    assert "cannot be used" in response.get_json()["error"]
