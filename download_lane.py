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
id, a request with a body, a database error, a range it cannot serve, and any setup without
prepared statements on psycopg2 (SQLite, DATABASE_PREPARED_STATEMENTS=false).
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
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_accept_header
from werkzeug.utils import send_file
from werkzeug.wrappers import Response

import metrics
from auth import remembered_claims, token_check_params
from database import db, prepared_reads_enabled, switch_to_autocommit
from errors import APIError
from i18n import message_catalog, preferred_language, remember_default_language
from logging_setup import REQUEST_ID_HEADER, request_id_from, request_id_var
from security_headers import add_security_headers
from serializers import FILE_TYPES
from user_routes import MIME_TYPES, document_source, download_with_token_check

log = logging.getLogger("ezra.download_lane")

# The two routes as Flask matches them (its default converter takes anything but a slash);
# the latency metric is labelled with their rules, as the route's hook labels it.
_DOWNLOAD_PATH = re.compile(
    rf"/download/({'|'.join(map(re.escape, FILE_TYPES))})/([^/]+)(/[^/]+)?")
_RULES = ("/download/<file_type>/<transcription_id>",
          "/download/<file_type>/<transcription_id>/<file_name>")
_BEARER = "Bearer "


# What the lane assumes of the route; with anything else configured it stays off.
_JWT_SETTINGS = {"JWT_TOKEN_LOCATION": ["headers"], "JWT_HEADER_NAME": "Authorization",
                 "JWT_HEADER_TYPE": "Bearer"}
_ENDPOINTS = {_RULES[0]: "user.download", _RULES[1]: "user.download_named"}
# After a failed connect the route alone answers for a while: one connect attempt per
# request (and one timeout to wait out), not two.
_PAUSE_AFTER_CONNECT_FAILURE_S = 5.0


class DownloadLane:
    """WSGI middleware around the Flask app's `wsgi_app` (see the module's docstring)."""

    def __init__(self, app: Flask, flask_wsgi_app):
        self.app = app
        self.flask_wsgi_app = flask_wsgi_app
        with app.app_context():
            self.engine = db.engine
        routes = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
        self.fits_the_route = (all(routes.get(rule) == endpoint
                                   for rule, endpoint in _ENDPOINTS.items())
                               and all(app.config.get(key) == value
                                       for key, value in _JWT_SETTINGS.items()))
        self._paused_until = 0.0

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        try:
            answered = self._answer(environ)
        except Exception as error:  # noqa: BLE001 - the route answers (and logs) instead
            # A range it cannot satisfy (416), a legacy file gone or unreadable: the route
            # gives its JSON answer. Anything else is a bug here, logged under the id the
            # route's answer will carry.
            if not isinstance(error, (HTTPException, OSError)):
                request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
                environ["HTTP_X_REQUEST_ID"] = request_id
                token = request_id_var.set(request_id)
                try:
                    log.exception("download lane failed on %s; the route answers",
                                  environ.get("PATH_INFO"))
                finally:
                    request_id_var.reset(token)
            answered = None
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
        path = _DOWNLOAD_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if (path is None or environ.get("REQUEST_METHOD") != "GET"
                or environ.get("CONTENT_LENGTH", "") not in ("", "0")
                or "HTTP_TRANSFER_ENCODING" in environ
                or environ.get("CONTENT_TYPE", "")[:10].lower() == "multipart/"):
            return None  # not a download; HEAD; a body the route's hooks look at (body_limits)
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if (not authorization.startswith(_BEARER) or not self.fits_the_route
                or not prepared_reads_enabled(self.app, self.engine.dialect)
                or time.monotonic() < self._paused_until):
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
        # The route's token rules: revoked (auth._is_revoked), the user gone or its tokens
        # ended by a password reset (auth._load_user). It answers those 401s itself.
        if row is None or row.revoked or row.token_version != claims.get("tv"):
            return None  # (None also when the read failed: the route reads again)
        rule = _RULES[path[3] is not None]
        try:
            if row.job_id is None:
                raise APIError(404, "Transcription not found")
            source, name = document_source(row, kind, self.app.config)
        except APIError as refusal:
            return self._error(environ, refusal, row.default_language), rule
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
            self._paused_until = time.monotonic() + _PAUSE_AFTER_CONNECT_FAILURE_S
            return None
        try:
            switch_to_autocommit(pooled)
            return download_with_token_check(kind).first_row_on(pooled, self.engine.dialect,
                                                                params)
        except Exception as error:  # noqa: BLE001 - the route answers instead
            dbapi = pooled.dbapi_connection
            if dbapi is None or dbapi.closed or self.engine.dialect.is_disconnect(
                    error, dbapi, None):
                pooled.invalidate()  # the pool connects anew
            elif isinstance(error, self.engine.dialect.dbapi.Error):
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                log.warning("download lane: the read failed (%s); the route answers",
                            first_line)
            else:
                raise
            return None
        except BaseException:  # interrupted mid-read: never back into the pool like this
            pooled.invalidate()
            raise
        finally:
            pooled.close()

    def _error(self, environ, refusal: APIError, default_language: str | None) -> Response:
        """The route's answer to `refusal` (errors.error_response): `{"error": ...}` in the
        reader's language, else in the admins' `default_language` (read with the row)."""
        accepted = parse_accept_header(environ.get("HTTP_ACCEPT_LANGUAGE"), LanguageAccept)
        language = (preferred_language(accepted)
                    or remember_default_language(self.app, default_language))
        catalog = message_catalog(language)
        response = self.app.json.response(
            error=catalog.translate(refusal.message) if catalog else refusal.message)
        response.status_code = refusal.status
        response.headers.update(refusal.headers)
        return response

    def _max_age(self, _path) -> int | None:
        # Flask's get_send_file_max_age, which reads the config through an app context.
        value = self.app.config["SEND_FILE_MAX_AGE_DEFAULT"]
        return int(value.total_seconds()) if isinstance(value, timedelta) else value
