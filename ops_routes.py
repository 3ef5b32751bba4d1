"""Operations: liveness, readiness and metrics (no token; meant for the load balancer and
Prometheus, so keep them off the public internet in nginx if that matters to you).

- `GET /healthz`: the process answers (touches nothing else, not even the database).
- `GET /readyz`: every dependency a job needs, one JSON entry per check; 503 when one fails.
- `GET /metrics`: Prometheus text (metrics.py), summed over all gunicorn workers.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from typing import Any, Callable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import text

import local_whisper
import metrics
from database import db
from openapi import documented, json_response, ref, string

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@documented("Liveness: the process answers (touches nothing, not even the database)",
            auth=False, database=False, response=json_response(ref("Health")))
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@documented("Readiness: database, storage writable, ffmpeg, pandoc, transcription engine",
            auth=False, database=False,
            description="One entry per check; 503 (same shape) when any check fails.",
            response=json_response(ref("Readiness")),
            extra_responses={503: json_response(ref("Readiness"), "a check failed")})
def readyz():
    checks = {name: _run_check(check) for name, check in READINESS_CHECKS.items()}
    ready = all(entry["ok"] for entry in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


@bp.get("/metrics")
@documented("Prometheus metrics of every worker process", auth=False,
            response={"description": "Prometheus text exposition format 0.0.4",
                      "content": {"text/plain": {"schema": string()}}})
def metrics_text():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


# Readiness checks: each returns a short detail or raises with what is wrong ------------------

def _check_database() -> str:
    db.session.execute(text("SELECT 1"))
    db.session.commit()
    return "reachable"


def _check_storage() -> str:
    root = current_app.config["STORAGE_DIR"]
    os.makedirs(root, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix=".readyz-") as probe:
        probe.write(b"ok")
        probe.flush()
    return "writable"


def _executable(path: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"{path} is not an executable file")
    return path


def _check_ffmpeg() -> str:
    from audio_service import ffmpeg_exe
    return _executable(ffmpeg_exe())


def _check_pandoc() -> str:
    from pandoc_service import pandoc_exe
    return _executable(pandoc_exe())


def _check_engine() -> str:
    config = current_app.config
    name = config["TRANSCRIBE_ENGINE"]
    if name == "remote":
        missing = [key for key in ("TRANSCRIBE_API_URL", "GET_RESULT_TRANSCRIBE_API_URL")
                   if not config[key]]
        if missing:
            raise RuntimeError(f"TRANSCRIBE_ENGINE=remote needs {' and '.join(missing)}")
    elif name == "openai":
        if not (config["OPENAI_TRANSCRIBE_API_KEY"] or config["OPENAI_TRANSCRIBE_BASE_URL"]):
            raise RuntimeError("TRANSCRIBE_ENGINE=openai needs OPENAI_TRANSCRIBE_API_KEY "
                               "(or OPENAI_TRANSCRIBE_BASE_URL for a keyless server)")
    else:
        if importlib.util.find_spec("faster_whisper") is None:
            raise RuntimeError("TRANSCRIBE_ENGINE=local needs `pip install faster-whisper`")
        choice = local_whisper.model_choice(config)
        choice.check_installed()  # ModelError names the missing file; the model is not loaded
        return f"local: {choice.describe()['model']}"
    return f"{name} configured"


READINESS_CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "storage": _check_storage,
    "ffmpeg": _check_ffmpeg,
    "pandoc": _check_pandoc,
    "engine": _check_engine,
}


def _run_check(check: Callable[[], str]) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": check()}
    except Exception as exc:
        db.session.rollback()
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return {"ok": False, "detail": f"{type(exc).__name__}: {detail}".rstrip(": ")}


# HTTP latency by route ----------------------------------------------------------------------

def init_app(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe_latency(response: Response) -> Response:
        started = g.get("request_started")
        if started is not None:
            # The route pattern, never the raw path: ids would explode the label set.
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.HTTP_SECONDS.labels(method=request.method, route=route,
                                        status=str(response.status_code)).observe(
                time.perf_counter() - started)
        return response
