"""Ezra's own page at `/`, for deployments without the separate frontend: plain HTML, CSS and
JavaScript files in `web/` (no build step, nothing from another site). The page uses only
the public REST routes; it is not part of the API, so openapi.py leaves these endpoints out.

Its content policy lets it load its own script and style files and call this server, and
nothing else (the API's answers keep security_headers' policy, which loads nothing).
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, send_from_directory

from errors import APIError

WEB_DIR = Path(__file__).resolve().parent / "web"
# The files the page is made of; anything else under /web/ is a 404.
FILES = frozenset({"app.js", "app.css"})

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")

bp = Blueprint("web", __name__)


def _send(name: str) -> Response:
    response = send_from_directory(WEB_DIR, name, max_age=0)  # revalidated (ETag) each load
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@bp.get("/")
def page() -> Response:
    return _send("index.html")


@bp.get("/web/<name>")
def asset(name: str) -> Response:
    if name not in FILES:
        raise APIError(404, "Not found")
    return _send(name)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
