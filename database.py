"""The database handle: SQLAlchemy with a constraint naming convention, and Alembic."""
from __future__ import annotations

import select

import flask_sqlalchemy.session
from flask import has_request_context, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
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
    statement anyway). Writing requests, the pipeline and the CLI keep one transaction.

    psycopg2's own flag is switched (nothing is sent yet at this point); SQLAlchemy's
    isolation_level option would send SET default_transaction_isolation on the way back."""
    if has_request_context() and request.method in ("GET", "HEAD"):
        pooled = connection.connection
        if getattr(pooled.dbapi_connection, "autocommit", None) is False:  # psycopg2 only
            pooled.dbapi_connection.autocommit = True
            pooled.info[_READING] = True


_READING = "ezra_read_in_autocommit"


@event.listens_for(Pool, "checkin")
def _transactions_again(dbapi_connection, record) -> None:
    """Back in the pool, a connection switched for a read runs transactions again (and only
    such a one: an engine made with isolation_level=AUTOCOMMIT keeps its setting)."""
    if record.info.pop(_READING, False) and dbapi_connection is not None:
        dbapi_connection.autocommit = False
