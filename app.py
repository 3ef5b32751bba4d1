"""The Flask application factory: config, extensions, blueprints, error handlers, CLI."""
from __future__ import annotations

import io
import logging
import tempfile
from typing import Any

import click
from flask import Flask, Request
from flask.cli import with_appcontext
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

import accounts
import body_limits
import i18n
import jobs
import ops_routes
import pipeline  # noqa: F401 (registers the job handler)
import scratch
import security_headers
import web_page
from auth import init_jwt
from config import BASE_DIR, load_config
from database import close_request_connection, db, migrate
from errors import APIError, register_error_handlers
from logging_setup import configure_logging, init_request_id
from models import User
from serializers import FastJSONProvider
from storage import upload_tmp_dir

log = logging.getLogger("ezra")


class EzraRequest(Request):
    # Uploads stream straight into the storage folder (never into memory, never a second
    # copy): the job later takes the temporary file over by hard link.
    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        if not body_limits.takes_file():  # nothing reaches the disk for a route without files
            return io.BytesIO()
        return tempfile.NamedTemporaryFile("wb+", dir=upload_tmp_dir(), prefix="upload-")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=str(BASE_DIR / "instance"))
    app.request_class = EzraRequest
    app.config.update(load_config(test_config))
    app.config.setdefault("PIPELINE_ENABLED", True)
    app.json = FastJSONProvider(app)
    app.json.sort_keys = False
    configure_logging(app.config["LOG_FORMAT"])
    init_request_id(app)  # first, so every later hook and log line has the id

    if app.config.get("TRUSTED_PROXY_COUNT"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXY_COUNT"],
                                x_proto=1, x_host=1)

    db.init_app(app)
    app.teardown_appcontext(_remove_session_quietly)  # runs before Flask-SQLAlchemy's own
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"))
    init_jwt(app)
    register_error_handlers(app)
    i18n.init_app(app)
    body_limits.init_app(app)
    security_headers.init_app(app)
    jobs.init_app(app)
    scratch.init_app(app)
    ops_routes.init_app(app)

    from admin_routes import bp as admin_bp
    from auth_routes import bp as auth_bp
    from openapi import bp as openapi_bp
    from user_routes import bp as user_bp
    import webhook_routes  # noqa: F401 (adds its routes to the user and admin blueprints)
    app.register_blueprint(auth_bp)
    app.register_blueprint(user_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(ops_routes.bp)
    web_page.init_app(app)
    # The frontend's most frequent request, answered in front of Flask (download_lane.py).
    from download_lane import DownloadLane
    app.wsgi_app = DownloadLane(app, app.wsgi_app)

    app.cli.add_command(create_admin_command)
    if app.config["EMBEDDED_DATABASE"] and not app.testing:
        with app.app_context():
            _first_start_hint()
    return app


def _remove_session_quietly(_exc: BaseException | None) -> None:
    # After the view answered, the database may have gone away: rolling back the dead
    # connection must not turn the answer the client already has into gunicorn's HTML 500.
    for close in (close_request_connection, db.session.remove):
        try:
            close()
        except Exception:
            log.warning("closing the database connection or session failed", exc_info=True)


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    # SQLite ignores ON DELETE CASCADE unless asked; PostgreSQL always obeys it.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _first_start_hint() -> None:
    if not inspect(db.engine).has_table("users"):
        log.warning("The embedded database has no schema yet: run `flask --app app db upgrade`")
        return
    if db.session.execute(select(User.id).limit(1)).first() is None:
        log.warning("No users yet. Create the first admin with: "
                    "flask --app app create-admin <username>")


@click.command("create-admin")
@click.argument("username")
@with_appcontext
@click.option("--password", help="The password; asked for (hidden) when left out.")
def create_admin_command(username: str, password: str | None) -> None:
    """Create an admin user, or make an existing user an admin and set their password.
    New names follow the admin route's rules, with its messages (accounts.py)."""
    try:
        username = username.strip()
        # An existing user (perhaps from the earlier backend, whose names had no rules) is
        # found by name; only a new name must pass the rules.
        user = db.session.execute(
            select(User).where(User.username == username)).scalar_one_or_none()
        if user is None:
            username = accounts.new_username({"username": username})
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        password = accounts.new_password({"password": password})
        if user is None:
            accounts.create_user(username, password, is_admin=True)
            click.echo(f"Created admin {username}")
            return
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    accounts.set_password(user, password)
    user.is_admin = True
    db.session.commit()
    click.echo(f"Updated {username}: admin, new password")


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=5000)
