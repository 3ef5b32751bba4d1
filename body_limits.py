"""A body cap per route, enforced before the body is read.

Only the routes that take a file accept multipart bodies of upload size; every other route
takes a small JSON body. A declared `Content-Length` over the cap is refused at once; a
chunked body is cut at the cap while it streams (Werkzeug's LimitedStream raises 413).
Routes that take no file never write their body to disk (see `takes_file`).
"""
from __future__ import annotations

from flask import Flask, current_app, g, request
from werkzeug.wsgi import LimitedStream

from errors import APIError

# Unauthenticated routes read only a name, a password or a token.
AUTH_ENDPOINTS = frozenset({"auth.login", "auth.refresh", "auth.logout"})
AUTH_BODY_BYTES = 16 * 1024
# Endpoint -> config key of its cap in bytes; the multipart routes.
FILE_ENDPOINTS = {"user.process": "MAX_CONTENT_LENGTH",
                  "admin.replace_reference_docx": "MAX_REFERENCE_DOCX_BODY"}


def takes_file() -> bool:
    return request.endpoint in FILE_ENDPOINTS


def body_cap() -> int:
    config = current_app.config
    endpoint = request.endpoint
    if endpoint in FILE_ENDPOINTS:
        return config[FILE_ENDPOINTS[endpoint]]
    if endpoint in AUTH_ENDPOINTS:
        return AUTH_BODY_BYTES
    return config["MAX_JSON_KB"] * 1024


def describe(cap: int) -> str:
    return f"{cap // (1024 * 1024)} MB" if cap >= 1024 * 1024 else f"{cap // 1024} KB"


def _limit_body() -> None:
    cap = body_cap()
    g.body_cap = cap
    request.max_content_length = cap  # also bounds chunked bodies while they stream
    if request.content_length is not None and request.content_length > cap:
        raise APIError(413, f"The request body is too large; the limit is {describe(cap)}")
    if not takes_file() and request.mimetype == "multipart/form-data":
        raise APIError(415, "This route takes a JSON body, not a form upload")


def refuse_if_cut() -> None:
    """After reading a chunked body: Werkzeug's stream stops quietly at the cap, so a body
    that filled it is one that went past it."""
    stream = request.stream
    if (request.content_length is None and isinstance(stream, LimitedStream)
            and stream.is_exhausted):
        raise APIError(413, f"The request body is too large; the limit is {describe(g.body_cap)}")


def init_app(app: Flask) -> None:
    # First of all before_request hooks: no other hook may read the body before the cap is set.
    app.before_request_funcs.setdefault(None, []).insert(0, _limit_body)
