"""Logging: plain text or one JSON object a line (LOG_FORMAT), and the request id.

The request id comes from the client's `X-Request-ID` (when it is a sane token) or is made
here; it goes back in the answer's `X-Request-ID`, into every log line written while the
request (or the job it submitted) runs, and into error-log rows (`error_logs.request_id`).
It lives in a context variable, so threads that set it (a job runner) carry their own.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
from datetime import datetime, timezone

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
# Accepted from the client as is: what proxies and tracing tools send (uuids, hex, dotted).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                            default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def request_id_from(given: str) -> str:
    """The client's X-Request-ID when it is safe to log and echo, else a new one."""
    return given if _SAFE_REQUEST_ID.match(given) else new_request_id()


def new_request_id() -> str:
    # 32 hex digits, as uuid4().hex gave, at a sixth of its cost.
    return secrets.token_hex(16)


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record ("-" outside a request or job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or "-",
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(log_format: str) -> None:
    """One handler on the root logger, formatted as asked; an existing handler (pytest's,
    gunicorn's) keeps its place but gets the request-id filter."""
    root = logging.getLogger()
    if not any(isinstance(h, _EzraHandler) for h in root.handlers):
        if not root.handlers or log_format == "json":
            handler = _EzraHandler()
            root.addHandler(handler)
            if root.level in (logging.NOTSET, logging.WARNING):
                root.setLevel(logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        if isinstance(handler, _EzraHandler):
            handler.setFormatter(JsonFormatter() if log_format == "json"
                                 else logging.Formatter(TEXT_FORMAT))


class _EzraHandler(logging.StreamHandler):
    """The handler this module installs (to find it again on the next create_app)."""


def init_request_id(app: Flask) -> None:
    @app.before_request
    def take_request_id() -> None:
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
        g.request_id_token = request_id_var.set(g.request_id)

    @app.after_request
    def give_request_id(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # set in another context (streamed response); just clear it
                request_id_var.set(None)
