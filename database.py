"""The database handle: SQLAlchemy with a constraint naming convention, and Alembic."""
from __future__ import annotations

import collections
import itertools
import re
import select
import threading

import flask_sqlalchemy.session
from flask import current_app, g, has_request_context, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, MetaData, Result, Select, bindparam, column, event, text
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
    switch_to_autocommit(connection.connection)


def switch_to_autocommit(pooled) -> None:
    """Switch a pooled DBAPI connection to autocommit until it is checked in again.
    psycopg2's own flag is switched (nothing is sent yet at this point); SQLAlchemy's
    isolation_level option would send SET default_transaction_isolation on the way back."""
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


class PreparedRead:
    """A hot read that PostgreSQL parses and plans once per pooled connection (PREPARE), then
    only runs (EXECUTE) on every request. Planning the token check joined with a download
    costs the server about 0.15 ms, running it 0.03 ms: planning was most of the database's
    share of a download (bench/README). On the request's Core connection only (autocommit:
    a failed PREPARE cannot abort a transaction) through psycopg2, or straight on a pooled
    connection (`first_row_on`, the download lane); elsewhere, on SQLite, and with
    DATABASE_PREPARED_STATEMENTS=false the statement runs as it is. Behind a pooler in
    transaction mode (PgBouncer) the setting must be false: it hands each statement to any
    server connection, which may not have the PREPARE."""

    _names = itertools.count(1)

    def __init__(self, statement: Select):
        self.statement = statement
        self.name = f"ezra_read_{next(self._names)}"
        self._lock = threading.Lock()
        self._prepare_sql: str | None = None
        self._execute = None  # the EXECUTE text, typed like the statement's binds and columns

    def execute(self, params: dict) -> Result:
        """Run on this request's reader (see `reader()`) with `params`."""
        connection = request_connection()
        if connection is None or not prepared_reads_enabled(current_app, connection.dialect):
            return reader().execute(self.statement, params)
        if self._execute is None:
            self._build(connection.dialect)
        return self._run(connection.info, connection.exec_driver_sql,
                         lambda: connection.execute(self._execute, params))

    def first_row_on(self, pooled, dialect, params: dict) -> tuple | None:
        """The first row, run straight on a pooled psycopg2 connection in autocommit (the
        download lane's read): no SQLAlchemy execution layer, so no type processing either.
        `params` must be values psycopg2 sends as they are (a UUID as its text), and so must
        the statement's literal values (checked); the row is a named tuple of psycopg2's
        values (bytea as memoryview; uuid as uuid.UUID, which SQLAlchemy's dialect registers
        on its connections)."""
        if self._execute is None:
            self._build(dialect)
        if not self._plain_defaults:
            raise ValueError(f"{self.name}: a literal value needs SQLAlchemy's type processing")
        values = {name: params[name] if required or name in params else default
                  for name, required, default in self._driver_binds}
        cursor = pooled.cursor()

        def execute() -> tuple | None:
            cursor.execute(self._execute_driver_sql, values)
            return cursor.fetchone()
        try:
            # {}: psycopg2 then formats the PREPARE, turning `%%` into `%` (see _build).
            row = self._run(pooled.info, lambda sql: cursor.execute(sql, {}), execute)
        finally:
            cursor.close()
        return None if row is None else self._row_type._make(row)

    def _run(self, connection_info: dict, run_sql, execute):
        """`execute()` the EXECUTE, with the PREPARE sent first on a connection that has not
        had it (`run_sql(sql)` sends one statement); prepared again when the server no longer
        has it, after a DEALLOCATE when a migration changed a column it reads."""
        prepared = connection_info.setdefault(_PREPARED, set())
        if self.name not in prepared:
            self._prepare(run_sql)
            prepared.add(self.name)
        try:
            return execute()
        except Exception as error:
            code = _pgcode(error)
            if code not in (_NOT_PREPARED, _RESULT_TYPE_CHANGED):
                raise
            if code == _RESULT_TYPE_CHANGED:
                run_sql(f"DEALLOCATE {self.name}")
            self._prepare(run_sql)
            return execute()

    def _prepare(self, run_sql) -> None:
        try:
            run_sql(self._prepare_sql)
        except Exception as error:
            if _pgcode(error) != _ALREADY_PREPARED:
                raise

    def _build(self, dialect) -> None:
        with self._lock:
            if self._execute is not None:
                return
            compiled = self.statement.compile(dialect=dialect)
            if "POSTCOMPILE" in compiled.string or compiled.escaped_bind_names:
                raise ValueError(f"{self.name}: expanding or escaped binds cannot be prepared")
            names: list[str] = []

            def positional(match: re.Match) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            # `%%` stays: psycopg2 formats the PREPARE too (SQLAlchemy passes it no parameters
            # but an empty mapping), turning it back into `%`.
            body = _PYFORMAT_BIND.sub(positional, compiled.string)
            self._prepare_sql = f"PREPARE {self.name} AS {body}"
            binds = []
            for name in names:
                source = compiled.binds[name]
                # A parameter stays required; a value written into the statement (a literal
                # compared with) is passed along as its default.
                binds.append(bindparam(name, type_=source.type, required=True) if source.required
                             else bindparam(name, value=source.value, type_=source.type))
            execute = text(f"EXECUTE {self.name} ({', '.join(':' + n for n in names)})") \
                .bindparams(*binds) \
                .columns(*(column(c.name, c.type) for c in self.statement.selected_columns))
            # first_row_on's form: the EXECUTE exactly as SQLAlchemy sends it (casts included).
            self._execute_driver_sql = str(execute.compile(dialect=dialect))
            self._driver_binds = [(bind.key, bind.required, bind.value) for bind in binds]
            self._plain_defaults = all(isinstance(bind.value, (str, int, float, type(None)))
                                       for bind in binds if not bind.required)
            self._row_type = collections.namedtuple(
                "PreparedRow", [c.name for c in self.statement.selected_columns], rename=True)
            self._execute = execute  # last: its presence says the rest is built


# PostgreSQL's SQLSTATEs: no such prepared statement (DEALLOCATE or DISCARD ALL ran), one of
# that name exists already, and "cached plan must not change result type".
_NOT_PREPARED, _ALREADY_PREPARED, _RESULT_TYPE_CHANGED = "26000", "42P05", "0A000"


def _pgcode(error: Exception) -> str | None:
    """PostgreSQL's SQLSTATE of a psycopg2 error, raised as it is or wrapped by SQLAlchemy."""
    return getattr(getattr(error, "orig", error), "pgcode", None)


_PYFORMAT_BIND = re.compile(r"%\((\w+)\)s")
_PREPARED = "ezra_prepared_reads"  # names prepared on a DBAPI connection (its pool info)


def prepared_reads_enabled(app, dialect) -> bool:
    return dialect.driver == "psycopg2" and app.config.get("DATABASE_PREPARED_STATEMENTS", True)


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
