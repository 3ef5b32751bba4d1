"""Operations: /healthz, /readyz, /metrics, request ids in answers, logs and error-log rows."""
from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from conftest import base_config
from database import db
from logging_setup import JsonFormatter, RequestIdFilter, request_id_var
from models import ErrorLog, Transcription
from test_pipeline import pipeline_config, setup, talk, wait_for  # noqa: F401 (fixtures)

ENGINE = {"TRANSCRIBE_API_URL": "http://127.0.0.1:9/submit",
          "GET_RESULT_TRANSCRIBE_API_URL": "http://127.0.0.1:9/result"}


def test_healthz_needs_no_token_and_no_database(make_app):
    app = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_every_check(make_app):
    app = make_app(**ENGINE)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "storage", "ffmpeg", "pandoc", "engine"}
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_on_embedded_defaults_checks_the_bundled_model_without_loading_it(make_app):
    import local_whisper
    app = make_app()  # no engine configured: the local engine with the bundled model
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"]["engine"] == {"ok": True,
                                                      "detail": "local: whisper-base (multilingual)"}
    # Readiness never loads the model (this app's choice: its own cache folder).
    assert local_whisper.model_choice(app.config) not in local_whisper._models


def test_readyz_is_503_and_names_the_missing_engine_setting(make_app):
    app = make_app(TRANSCRIBE_ENGINE="remote")  # no TRANSCRIBE_API_URL
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["engine"]["ok"] is False
    assert "TRANSCRIBE_API_URL" in checks["engine"]["detail"]
    assert checks["database"]["ok"] is True


def test_readyz_is_503_when_the_database_is_down(make_app):
    app = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **ENGINE)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["database"]["ok"] is False and checks["database"]["detail"]
    assert checks["storage"]["ok"] is True


def test_readyz_is_503_when_storage_is_not_writable(make_app, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app = make_app(STORAGE_DIR=str(blocker / "storage"), **ENGINE)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["storage"]["ok"] is False


def test_metrics_has_http_latency_jobs_and_slots(app, client, user):
    with app.app_context():
        db.session.add(Transcription(id=uuid.uuid4(), user_id=user.id, status="error"))
        db.session.commit()
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'ezra_http_request_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert 'ezra_jobs{status="error"} 1.0' in text
    assert "ezra_runner_slots_busy" in text
    assert "ezra_job_queue_wait_seconds" in text


def test_request_id_is_taken_or_made_and_returned(client):
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123.x"})
    assert given.headers["X-Request-ID"] == "abc-123.x"
    made = client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32
    # A hostile value (spaces, newlines, too long) is replaced, never echoed.
    hostile = client.get("/healthz", headers={"X-Request-ID": "a b" + "x" * 200})
    assert hostile.headers["X-Request-ID"] != "a b" + "x" * 200
    missing = client.get("/no-such-route", headers={"X-Request-ID": "r-404"})
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "r-404"


def test_request_id_in_log_lines_and_error_rows(app, client, user, caplog):
    @app.get("/boom-for-test")
    def boom():
        logging.getLogger("ezra.test").warning("inside the request")
        db.session.add(ErrorLog(user_id=user.id, error_message="x"))
        db.session.commit()
        return {"ok": True}

    with caplog.at_level(logging.INFO):
        for handler in logging.getLogger().handlers:
            handler.addFilter(RequestIdFilter())
        caplog.handler.addFilter(RequestIdFilter())
        response = client.get("/boom-for-test", headers={"X-Request-ID": "req-77"})
    assert response.status_code == 200
    records = [r for r in caplog.records if r.getMessage() == "inside the request"]
    assert records and records[0].request_id == "req-77"
    with app.app_context():
        row = db.session.query(ErrorLog).one()
        assert row.request_id == "req-77"
    assert request_id_var.get() is None  # nothing leaks into the next request


def test_json_log_lines(app):
    record = logging.LogRecord("ezra.x", logging.INFO, __file__, 1, "job=%s done", ("j1",), None)
    token = request_id_var.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job=j1 done"
    assert entry["request_id"] == "rid-1"
    assert entry["level"] == "INFO" and entry["logger"] == "ezra.x"


def test_bad_log_format_stops_start_up(tmp_path):
    from app import create_app
    from config import ConfigError
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        create_app(base_config(tmp_path, LOG_FORMAT="xml"))


def test_a_jobs_runner_logs_and_fails_under_the_submitting_request_id(setup, talk):
    app, client, headers = setup()
    data = {"file": (io.BytesIO(talk.read_bytes()), "talk.mp3"), "start_time": "10:00",
            "end_time": "11:00"}
    response = client.post("/process", headers={**headers, "X-Request-ID": "submit-42"},
                           data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    job = wait_for(client, headers, response.get_json()["transcription_id"])
    assert job["status"] == "error"
    with app.app_context():
        (row,) = db.session.query(ErrorLog).all()
        assert row.request_id == "submit-42"
        assert db.session.get(Transcription, uuid.UUID(job["id"])).request_id == "submit-42"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ezra_job_step_seconds_count{step="start"}' in text  # the first step was timed
