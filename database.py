"""The database handle: SQLAlchemy with a constraint naming convention, and Alembic."""
from __future__ import annotations

import select

import flask_sqlalchemy.session
from flask import g, has_request_context, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool

# Named constraints let Alembic drop and recreate them by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@event.listens_for(Pool, "checkout")
def _drop_closed_connection(dbapi_connection, _record, _proxy) -> None:
    """A pooled connection the server has closed (restart, idle timeout, terminated backend)
    has data or EOF waiting on its socket; an idle live one has nothing to read. Polling the
    socket costs no round trip, unlike `pool_pre_ping`'s SELECT 1 on every checkout. Raising
    DisconnectionError makes the pool discard it and connect anew (up to three times)."""
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg2; SQLite has no socket
    if fileno is None or getattr(dbapi_connection, "closed", 0):
        if fileno is not None:
            raise DisconnectionError("connection already closed")
        return
    poller = select.poll()
    poller.register(fileno(), select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise DisconnectionError("the server closed this pooled connection")


db = SQLAlchemy(model_class=Base)
# render_as_batch: SQLite cannot ALTER constraints, so Alembic rebuilds tables there.
migrate = Migrate(render_as_batch=True, compare_type=True)


@event.listens_for(flask_sqlalchemy.session.Session, "after_begin")
def _reads_in_autocommit(_session, _transaction, connection) -> None:
    """GET and HEAD requests only read: their statements run in autocommit, so no
    transaction is opened and none needs a ROLLBACK round trip when the request ends. Each
    statement still sees committed data (PostgreSQL's READ COMMITTED takes a snapshot per
    statement anyway). Writing requests, the pipeline and the CLI keep one transaction."""
    if has_request_context() and request.method in ("GET", "HEAD"):
        _autocommit(connection)


def _autocommit(connection: Connection) -> None:
    """psycopg2's own flag is switched (nothing is sent yet at this point); SQLAlchemy's
    isolation_level option would send SET default_transaction_isolation on the way back."""
    pooled = connection.connection
    if getattr(pooled.dbapi_connection, "autocommit", None) is False:  # psycopg2 only
        pooled.dbapi_connection.autocommit = True
        pooled.info[_READING] = True


# Endpoints whose reads run on the request's Core connection (see request_connection).
_CORE_READ_ENDPOINTS: set[str] = set()


def reads_on_request_connection(*endpoints: str) -> None:
    """Mark hot GET routes that read plain rows through `request_connection()` only: their
    token check runs on that connection too, and the ORM session is never opened."""
    _CORE_READ_ENDPOINTS.update(endpoints)


def request_connection() -> Connection | None:
    """This request's Core connection (autocommit) when its route reads through one (a GET
    of a route marked with `reads_on_request_connection`), else None: use `db.session`.
    The ORM session's transaction bookkeeping, execution layer and close at teardown cost
    3-9% of a hot answer's CPU more than a Core connection (in-process, bench/README).
    Closed at teardown (`close_request_connection`)."""
    if not has_request_context():
        return None
    connection = g.get("ezra_connection")
    if connection is None:
        if request.method not in ("GET", "HEAD") or request.endpoint not in _CORE_READ_ENDPOINTS:
            return None
        connection = g.ezra_connection = db.engine.connect()
        _autocommit(connection)
    return connection


def reader():
    """What a hot read executes on: the request's Core connection, or the ORM session."""
    return request_connection() or db.session


def close_request_connection() -> None:
    connection = g.pop("ezra_connection", None)
    if connection is not None:
        connection.close()


_READING = "ezra_read_in_autocommit"


@event.listens_for(Pool, "checkin")
def _transactions_again(dbapi_connection, record) -> None:
    """Back in the pool, a connection switched for a read runs transactions again (and only
    such a one: an engine made with isolation_level=AUTOCOMMIT keeps its setting)."""
    if record.info.pop(_READING, False) and dbapi_connection is not None:
        dbapi_connection.autocommit = False
