"""The raw DB-API reads of the hot path, in one place.

A token request reads at most a version counter and, on a client-cache miss, one client
row. Through SQLAlchemy Core on the same autocommit engine that costs several times the
read itself (statement cache lookups, result-type processing, the Connection wrapper;
bench/RESULTS.md has the measurement), so these reads go to the driver directly:
:func:`read_one` on a pooled DB-API connection, and :class:`SqliteCounters` on SQLite
files. Values come back as the driver returns them; the stores decode them
(``storage/sql/clients.py``). What this module must keep true is pinned by
``tests/integration/contracts/test_raw_reads.py`` on SQLite and PostgreSQL: the same values
as SQLAlchemy's typed reads, the unit of work's own writes visible, other connections'
commits seen at once, and a dead pooled connection retried once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

#: One ``locks`` counter by name (cache versions): the read on every token request.
COUNTER_SQL = "SELECT counter FROM locks WHERE name = ?"

#: SQLite waits this long for another writer before "database is locked" (the engines'
#: ``timeout`` connect argument is the same value).
BUSY_TIMEOUT_S = 15


def driver_sql(engine: Engine, sql: str) -> str:
    """*sql*, written with ``?`` placeholders, in *engine*'s driver paramstyle (psycopg
    takes ``%s``). The statements are this package's constants, never built from input."""
    if engine.dialect.paramstyle in ("format", "pyformat"):
        return sql.replace("?", "%s")
    return sql


#: Where a pooled connection keeps its cursor for :func:`read_one`.
_CURSOR = "authserver.raw_cursor"


def _drop_cursor(connection: Any) -> None:
    cursor = connection.info.pop(_CURSOR, None)
    if cursor is not None:
        with contextlib.suppress(Exception):
            cursor.close()


def read_one(engine: Engine, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The first row of *sql*, a statement that returns at most one row, on a connection of
    *engine*'s pool (an autocommit engine: no transaction, no pre-ping). The cursor is
    kept with the connection; a statement with more rows would stay open on it (on
    SQLite, holding a read snapshot until the connection's next read).

    A pooled connection found dead (the server restarted) is invalidated with its whole
    pool and the read retried once on a fresh one: what pre-ping would have done, minus a
    round trip on every checkout. Failures raise SQLAlchemy's ``DBAPIError`` family, as a
    failed statement through SQLAlchemy would.
    """
    dialect = engine.dialect
    statement = driver_sql(engine, sql)
    for attempt in (1, 2):
        connection = None
        try:
            # Pool checkout outside SQLAlchemy's Connection: a failed connect raises the
            # driver's own exception here, wrapped below like every other failure.
            connection = engine.raw_connection()
            # One cursor per pooled connection, kept with it (the record's ``info`` lives
            # as long as the DB-API connection): creating and closing one per read is a
            # measurable share of a psycopg read.
            cursor = connection.info.get(_CURSOR)
            if cursor is None:
                cursor = connection.info[_CURSOR] = connection.cursor()
            cursor.execute(statement, params)
            row = cursor.fetchone()
            return tuple(row) if row is not None else None
        except dialect.loaded_dbapi.Error as exc:
            if connection is not None:
                _drop_cursor(connection)
            dead = connection is not None and dialect.is_disconnect(
                exc, connection.dbapi_connection, None
            )
            if dead:
                assert connection is not None
                connection.invalidate(exc)
                # The other pooled connections are as dead as this one (the server
                # restarted): start a fresh pool, as SQLAlchemy's Connection does by
                # invalidating the pool, so the retry does not draw another corpse.
                engine.dispose()
                if attempt == 1:
                    continue
            raise DBAPIError.instance(
                statement,
                params,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dead,
                dialect=dialect,
            ) from exc
        finally:
            if connection is not None:
                connection.close()
    raise AssertionError("unreachable")  # pragma: no cover


class SqliteCounters:
    """The ``locks`` counters of a SQLite file, read per thread on a private connection and
    kept while SQLite's ``PRAGMA data_version`` stays the same.

    That pragma changes, on a given connection, whenever any *other* connection (of this
    process or another) commits to the file; this connection never writes, so an unchanged
    value proves no counter changed. Checking it costs no pool checkout and no table read,
    which on SQLite is most of a token request's database cost; a changed value (any commit
    anywhere, an audit batch included) costs one indexed read. A counter read between the
    pragma and a concurrent commit is cached under the older value, so the next call reads
    again: never stale, only sometimes read twice.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()

    def read(self, name: str) -> int:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        try:
            if conn is None:
                # mode=rw: never create the file (a missing database is an error here,
                # and files authserver creates are made owner-only elsewhere).
                conn = sqlite3.connect(
                    f"file:{quote(self._path)}?mode=rw",
                    uri=True,
                    timeout=BUSY_TIMEOUT_S,
                    isolation_level=None,
                )
                local.conn, local.version, local.values = conn, None, {}
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            values: dict[str, int] = local.values
            if version != local.version:
                values.clear()
                local.version = version
            found = values.get(name)
            if found is None:
                row = conn.execute(COUNTER_SQL, (name,)).fetchone()
                found = values[name] = int(row[0]) if row else 0
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            local.conn = None
            # As Database.read_one raises it, so read_counter maps it (storage_error) to
            # the same StorageUnavailable as every other failed read.
            raise DBAPIError.instance(
                COUNTER_SQL, (name,), exc, sqlite3.Error, dialect=None
            ) from exc
        return found
