"""Issue 8 (low): security headers on every answer; text downloads name their charset once."""
from __future__ import annotations

import uuid

import pytest

from database import db
from models import Document, Transcription

EXPECTED = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY"}


@pytest.mark.parametrize("method, path", [("GET", "/openapi.json"), ("GET", "/nowhere"),
                                          ("POST", "/login"), ("GET", "/transcriptions")])
def test_every_answer_has_the_security_headers(client, method, path):
    response = client.open(path, method=method, json={} if method == "POST" else None)
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, path)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_docs_keeps_its_own_policy(client):
    policy = client.get("/docs").headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in policy and "frame-ancestors 'none'" in policy


@pytest.mark.parametrize("file_type, content_type", [("txt", "text/plain; charset=utf-8"),
                                                     ("md", "text/markdown; charset=utf-8")])
def test_text_downloads_send_the_charset_once(app, client, user, user_headers, file_type,
                                              content_type):
    job_id = uuid.uuid4()
    with app.app_context():
        db.session.add(Transcription(id=job_id, user_id=user.id, status="completed"))
        db.session.flush()
        db.session.add(Document(transcription_id=job_id, kind=file_type, content="שלום".encode()))
        db.session.commit()
    response = client.get(f"/download/{file_type}/{job_id}", headers=user_headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
