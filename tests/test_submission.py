"""The submission service: the upload is stored and probed once, before the user's row is
locked; a refused submission leaves no file behind."""
from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

import pipeline
from config import normalize_database_url
from conftest import TEST_DATABASE_URL
from database import db
from models import Transcription
from test_pipeline import talk  # noqa: F401 (fixture)


def post_upload(client, headers, audio: Path):
    return client.post("/process", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(audio.read_bytes()), "talk.mp3")})


def stored_uploads(app) -> list[Path]:
    return list((Path(app.config["STORAGE_DIR"]) / "jobs").glob("*/source.upload"))


def test_the_upload_is_probed_before_the_users_row_is_locked(app, client, user, user_headers,
                                                            talk):
    engine = create_engine(normalize_database_url(TEST_DATABASE_URL))
    holder = engine.connect()
    transaction = holder.begin()
    holder.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": user.id})
    answers = []
    request = threading.Thread(target=lambda: answers.append(
        post_upload(client, user_headers, talk)))
    request.start()
    try:
        # While another transaction holds the user's row, the upload is already stored and
        # probed: only the count and the insert wait for the lock.
        deadline = time.monotonic() + 30
        while not stored_uploads(app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_uploads(app), "the upload was not stored while the row was locked"
        assert request.is_alive() and not answers  # and the request waits for the lock
    finally:
        transaction.rollback()
        holder.close()
        engine.dispose()
    request.join(timeout=30)
    assert answers and answers[0].status_code == 200, answers


def test_the_upload_is_probed_once(client, user_headers, talk, monkeypatch):
    calls = []
    real = pipeline.require_audio
    monkeypatch.setattr(pipeline, "require_audio", lambda path: calls.append(path) or real(path))
    assert post_upload(client, user_headers, talk).status_code == 200
    assert len(calls) == 1


def test_a_submission_over_the_limit_leaves_no_file(make_app, make_user, talk):
    from conftest import bearer, login
    app = make_app(MAX_UNFINISHED_JOBS_PER_USER=1)
    client = app.test_client()
    user = make_user("busy")
    headers = bearer(login(client, "busy"))
    with app.app_context():
        db.session.add(Transcription(id=uuid.uuid4(), user_id=user.id, status="transcribing"))
        db.session.commit()
    response = post_upload(client, headers, talk)
    assert response.status_code == 429
    assert "limit 1" in response.get_json()["error"]
    assert stored_uploads(app) == []
    with app.app_context():
        assert db.session.query(Transcription).count() == 1
