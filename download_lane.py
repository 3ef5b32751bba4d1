"""The download lane: the frontend's most frequent request, answered in front of Flask.

The list page prefetches the Word document of every listed job (11-13
`GET /download/word/<id>/<name>` a view). Under load such a download spent most of its CPU
around its one database read: Flask's request context and hooks, Flask-JWT-Extended and
SQLAlchemy's execution layer (bench/README). This WSGI middleware answers the common case
itself, with the route's own read and the route's own answer:

- a GET of `/download/<txt|md|word|docx>/<id>` or of its named link, without a body;
- `Authorization: Bearer <token>` with an access token this process has already verified (the
  route did, on an earlier request) and that has not expired since;
- the same prepared statement as the route's, run on a pooled connection: the user, the
  revocation and the token version read fresh on every request, with the job and its document.

It gives what the route gives: the document through Werkzeug's `send_file` (conditional and
range requests behave the same), or the route's 404 in the reader's language, with the same
headers (security headers, X-Request-ID) and the same latency metric. Everything else goes to
Flask untouched, which then answers as it always did: a token not verified in this process
yet, every token problem (revoked, expired, user gone, password reset), subtitles, HEAD, a bad
id, a request with a body, a database error, a default language not read for a while, and
any setup without prepared statements on psycopg2 (SQLite, DATABASE_PREPARED_STATEMENTS=false).
tests/test_download_lane.py holds the lane's answers against the route's.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import timedelta

from flask import Flask
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header
from werkzeug.utils import send_file
from werkzeug.wrappers import Response

import metrics
from auth import remembered_claims, token_check_params
from database import db, prepared_reads_enabled, reads_in_autocommit
from errors import APIError
from i18n import message_catalog, preferred_language, remembered_default_language
from logging_setup import REQUEST_ID_HEADER, request_id_from
from security_headers import add_security_headers
from serializers import FILE_TYPES
from user_routes import MIME_TYPES, document_source, download_with_token_check

log = logging.getLogger("ezra.download_lane")

# The two routes as Flask matches them (its default converter takes anything but a slash);
# the latency metric is labelled with their rules, as the route's hook labels it.
_DOWNLOAD_PATH = re.compile(r"/download/(txt|md|word|docx)/([^/]+)(/[^/]+)?")
_RULES = ("/download/<file_type>/<transcription_id>",
          "/download/<file_type>/<transcription_id>/<file_name>")
_BEARER = "Bearer "


class DownloadLane:
    """WSGI middleware around the Flask app's `wsgi_app` (see the module's docstring)."""

    def __init__(self, app: Flask, flask_wsgi_app):
        self.app = app
        self.flask_wsgi_app = flask_wsgi_app
        with app.app_context():
            self.engine = db.engine

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        answered = self._answer(environ)
        if answered is None:
            return self.flask_wsgi_app(environ, start_response)
        response, rule = answered
        add_security_headers(response)
        response.headers[REQUEST_ID_HEADER] = request_id_from(
            environ.get("HTTP_X_REQUEST_ID", ""))
        metrics.HTTP_SECONDS.labels(method="GET", route=rule,
                                    status=str(response.status_code)).observe(
            time.perf_counter() - started)
        return response(environ, start_response)

    def _answer(self, environ) -> tuple[Response, str] | None:
        """The answer and the route's rule, or None: Flask answers."""
        if (environ.get("REQUEST_METHOD") != "GET" or environ.get("CONTENT_TYPE")
                or environ.get("CONTENT_LENGTH", "") not in ("", "0")
                or "HTTP_TRANSFER_ENCODING" in environ):
            return None  # HEAD, or a body the route's hooks would look at
        path = _DOWNLOAD_PATH.fullmatch(environ.get("PATH_INFO", ""))
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if (path is None or not authorization.startswith(_BEARER)
                or not prepared_reads_enabled(self.app, self.engine.dialect)):
            return None
        claims = remembered_claims(self.app, authorization[len(_BEARER):])
        params = token_check_params(claims) if claims and claims.get("type") == "access" else None
        if params is None:
            return None
        try:
            params["job_id"] = str(uuid.UUID(path[2]))
        except ValueError:
            return None  # the route's 400
        kind = FILE_TYPES[path[1]]
        row = self._read(kind, params)
        if row is None or row.revoked or row.token_version != claims.get("tv"):
            return None  # no such user, a token problem, or the database: the route answers
        rule = _RULES[path[3] is not None]
        try:
            if row.job_id is None:
                raise APIError(404, "Transcription not found")
            source, name = document_source(row, kind, self.app.config)
        except APIError as refusal:
            error = self._error(environ, refusal.status, refusal.message)
            return None if error is None else (error, rule)
        return send_file(source, environ, mimetype=MIME_TYPES[kind], as_attachment=True,
                         download_name=name, max_age=self._max_age,
                         use_x_sendfile=self.app.config["USE_X_SENDFILE"],
                         response_class=self.app.response_class,
                         _root_path=self.app.root_path), rule

    def _read(self, kind: str, params: dict):
        """The route's statement on a pooled connection; None when it gives no row or fails
        (the route then reads again and answers: 503 when the database is away)."""
        try:
            pooled = self.engine.raw_connection()
        except Exception:  # noqa: BLE001 - the database is away: the route answers 503
            return None
        try:
            reads_in_autocommit(pooled)
            return download_with_token_check(kind).first_row_on(pooled, self.engine.dialect,
                                                                params)
        except Exception as error:  # noqa: BLE001 - the route answers instead
            pooled.invalidate()  # never reused half-broken; the pool connects anew
            if not isinstance(error, self.engine.dialect.dbapi.Error):
                log.exception("download lane: the read failed; the route answers")
            return None
        finally:
            pooled.close()

    def _error(self, environ, status: int, message: str) -> Response | None:
        """The route's `{"error": ...}` in the reader's language (errors.error_response), or
        None when that language needs the settings read again (the route reads them)."""
        accepted = parse_accept_header(environ.get("HTTP_ACCEPT_LANGUAGE"), LanguageAccept)
        language = preferred_language(accepted) or remembered_default_language(self.app)
        if language is None:
            return None
        catalog = message_catalog(language)
        response = self.app.json.response(error=catalog.translate(message) if catalog
                                          else message)
        response.status_code = status
        return response

    def _max_age(self, _path) -> int | None:
        # Flask's get_send_file_max_age, which reads the config through an app context.
        value = self.app.config["SEND_FILE_MAX_AGE_DEFAULT"]
        return int(value.total_seconds()) if isinstance(value, timedelta) else value
