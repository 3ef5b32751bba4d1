"""Error types (one for views, domain refusals, outside-world failures) and the handlers that
turn every failure into contract JSON."""
from __future__ import annotations

import errno
import logging

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from database import db

log = logging.getLogger("ezra.errors")


class APIError(Exception):
    """Raised by views and services; becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ServiceError(Exception):
    """An outside world failed: a download, FFmpeg, pandoc, the transcription or the
    proofreading service. str() is a short message a person can act on; `detail` keeps the
    upstream text for the error log. Each service raises its own subclass."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message


class DomainError(Exception):
    """A refusal by the domain (the job module, services): str() is the user's message. The
    domain code knows no HTTP; the handler below gives each kind its status."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """What was sent cannot be used (400)."""


class Conflict(DomainError):
    """The current state does not allow it: cancel a finished job, retry a running one (409)."""


class StorageUnavailable(DomainError):
    """The server cannot store it right now: disk full, quota, read-only (507)."""


_DOMAIN_STATUS = ((InvalidInput, 400), (Conflict, 409), (StorageUnavailable, 507))


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    """The contract's `{"error": message}`, in the reader's language (i18n.py)."""
    from i18n import translate_message
    response = jsonify(error=translate_message(message))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


# Short, actionable texts for the HTTP errors Flask/Werkzeug raise on their own.
_HTTP_MESSAGES = {
    400: "The request could not be understood",
    404: "Not found",
    405: "Method not allowed",
    413: "The request body is too large",
    415: "Unsupported media type",
}


def _is_disconnect(exc: SQLAlchemyError) -> bool:
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def handle_api_error(exc: APIError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.errorhandler(DomainError)
    def handle_domain_error(exc: DomainError):
        status = next((code for kind, code in _DOMAIN_STATUS if isinstance(exc, kind)), 400)
        return error_response(status, exc.message)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        status = exc.code or 500
        message = _HTTP_MESSAGES.get(status, exc.name)
        if status == 404:
            message = f"Not found: no route {request.method} {request.path}"
        elif status == 405:
            allowed = ", ".join(sorted(m for m in (exc.valid_methods or []) if m != "OPTIONS"))
            message = f"Method {request.method} is not allowed here" + (
                f"; use {allowed}" if allowed else "")
        elif status == 413:
            from body_limits import body_cap, describe
            message = f"The request body is too large; the limit is {describe(body_cap())}"
        headers = {}
        if status == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(status, message, headers)

    @app.errorhandler(SQLAlchemyError)
    def handle_database_error(exc: SQLAlchemyError):
        db.session.rollback()
        g.ezra_database_trouble = True  # the message's language is not read from it now
        if _is_disconnect(exc):
            log.warning("database unavailable: %s", exc.__class__.__name__)
            return error_response(503, "The database is unavailable; try again in a moment",
                                  {"Retry-After": "5"})
        log.exception("database error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error")

    @app.errorhandler(OSError)
    def handle_storage_error(exc: OSError):
        # Disk full, quota, read-only or unwritable storage, e.g. while an upload streams in.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            log.error("storage error on %s %s: %s", request.method, request.path, exc)
            db.session.rollback()
            return error_response(507, "The server cannot store this right now (storage full "
                                       "or unavailable); please try again later")
        return handle_unexpected(exc)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return error_response(500, "Internal server error")
