"""``authserver db copy``: everything authserver keeps in one database, copied into another
(SQLite to PostgreSQL, back, or between two servers of either).

The tables are the metadata's (``tables.py``), in dependency order, so a table added later
is copied without a change here. The source is read in one snapshot, in batches of
:data:`BATCH_ROWS` rows (never a whole table in memory); the target is written in one
transaction, so it ends with all of it or none of it. Values go through the tables' own
types, which both dialects store exactly (float seconds as ``Double``, bytes, booleans,
JSON); a JSON ``null`` and an SQL NULL are told apart on the way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Connection
from sqlalchemy import Row
from sqlalchemy import String
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import type_coerce
from sqlalchemy.types import NullType

from authserver.errors import ConfigError
from authserver.settings import redact_url
from authserver.storage.sql import migrate
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import sqlite_file
from authserver.storage.sql.engine import storage_errors
from authserver.storage.sql.engine import unbounded_statements
from authserver.storage.sql.tables import LOCKS
from authserver.storage.sql.tables import metadata

#: Rows read from the source and written to the target at a time.
BATCH_ROWS = 500

#: Tables whose rows the migrations write themselves (0001 seeds a ``locks`` counter): an
#: empty target has them, and the source's replace them.
SCHEMA_ROWS = frozenset({LOCKS.name})

#: The option naming the target, in every message about it.
TARGET = "--to"

#: The label of a JSON column's "is SQL NULL" flag in the source query, and the name of
#: its value's parameter in the INSERT (a column's own name is reserved there).
_NULL_FLAG = "sql_null_{}"
_JSON_PARAM = "json_{}"


@dataclass(frozen=True)
class CopyResult:
    source: str  #: the source's URL, password masked
    target: str  #: the target's URL, password masked
    revision: str  #: the schema revision of both
    created: bool  #: the target's schema was created (or upgraded) for the copy
    rows: dict[str, int]  #: rows copied per table, in the order they were written


def copy_database(source: Database, target_url: str, *, batch_rows: int = BATCH_ROWS) -> CopyResult:
    """Copy every authserver table of *source* into the database at *target_url*.

    *source* must be at this version's schema revision (it is never migrated or written);
    the target is brought to it (created when empty) and must hold no authserver rows;
    the same database as both is refused.

    :raises ConfigError: for a refusal (its message says which database and why, the
        password masked).
    :raises StorageError: when either database fails; the target then holds none of the
        rows (its schema may have been created).
    """
    _check_source(source)
    target = _open_target(target_url)
    try:
        _check_not_same_file(source.url, target_url)
        _check_not_same_database(source, target)
        before = _check_target_before_migrating(target)
        _, after = _target_call(migrate.upgrade_to_head, target)
        rows = _copy(source, target, batch_rows)
    finally:
        target.dispose()
    return CopyResult(
        source=redact_url(source.url),
        target=redact_url(target_url),
        revision=str(after),
        created=before != after,
        rows=rows,
    )


def _check_source(source: Database) -> None:
    if migrate.database_missing(source):
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: no database at {sqlite_file(source.url)}: nothing to "
            "copy; point --database-url / AUTHSERVER_DATABASE_URL / --config at yours"
        )
    current = migrate.current_revision(source)
    head = migrate.head_revision()
    if current is None:
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: the database at {redact_url(source.url)} is empty (no "
            "authserver schema): nothing to copy"
        )
    if current not in migrate.known_revisions():
        raise migrate.unknown_revision(current, source.url)
    if current != head:
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: the schema of the database at {redact_url(source.url)} "
            f"is at revision {current}, this version needs {head}; run 'authserver db "
            "upgrade' first, then copy"
        )


def _open_target(url: str) -> Database:
    try:
        return Database(url)
    except ConfigError as exc:
        # make_engine names the setting it is usually given; here the URL is --to's.
        raise ConfigError(_as_target(str(exc))) from None


def _as_target(message: str) -> str:
    return message.replace("AUTHSERVER_DATABASE_URL:", f"{TARGET}:", 1)


def _target_call(function: Any, target: Database) -> Any:
    try:
        return function(target)
    except ConfigError as exc:
        raise ConfigError(_as_target(str(exc))) from None


def _check_not_same_file(source_url: str, target_url: str) -> None:
    source_path, target_path = sqlite_file(source_url), sqlite_file(target_url)
    if source_path is None or target_path is None:
        return
    try:
        same = os.path.samefile(source_path, target_path)
    except OSError:  # the target file does not exist yet
        same = os.path.realpath(source_path) == os.path.realpath(target_path)
    if same:
        raise _same_database(target_url)


def _same_database(target_url: str) -> ConfigError:
    return ConfigError(
        f"{TARGET}: {redact_url(target_url)} is the database being copied (the source); "
        "name another, empty one"
    )


def _identity(db: Database) -> tuple[Any, ...] | None:
    """What tells one PostgreSQL database apart from another whatever its URL says: the
    server (its start time), the database and the schema the connection works in."""
    if db.engine.dialect.name != "postgresql":
        return None
    with storage_errors(db.url), db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT pg_postmaster_start_time(), current_database(), current_schema()")
        ).one()
    return tuple(row)


def _check_not_same_database(source: Database, target: Database) -> None:
    if source.engine.dialect.name != target.engine.dialect.name:
        return
    ident = _identity(target)
    if ident is not None and ident == _identity(source):
        raise _same_database(target.url)


def _check_target_before_migrating(target: Database) -> str | None:
    """The target's revision; refused when a newer version migrated it or it holds rows
    (looked at before migrating, so a refused target is not touched)."""
    revision: str | None = _target_call(migrate.current_revision, target)
    if revision is not None and revision not in migrate.known_revisions():
        raise ConfigError(_as_target(str(migrate.unknown_revision(revision, target.url))))
    if revision is not None:
        with storage_errors(target.url), target.engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            _refuse_rows(conn, target.url, [t for t in metadata.sorted_tables if t.name in present])
    return revision


def _refuse_rows(conn: Connection, url: str, tables: list[Table]) -> None:
    held = []
    for table in tables:
        if table.name in SCHEMA_ROWS:
            continue
        count = conn.execute(select(func.count()).select_from(table)).scalar_one()
        if count:
            held.append(f"{count} in {table.name}")
    if held:
        raise ConfigError(
            f"{TARGET}: the database at {redact_url(url)} already holds authserver rows "
            f"({', '.join(held)}); db copy never merges or overwrites: name an empty database"
        )


def _copy(source: Database, target: Database, batch_rows: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with storage_errors(target.url), target.engine.connect() as out:
        if out.dialect.name == "sqlite":
            out.exec_driver_sql("BEGIN IMMEDIATE")  # no other writer until the commit
        else:
            # Millions of audit events are written in one transaction, and read (below)
            # through one cursor: as long as they take. The lock waits keep their bound.
            unbounded_statements(out)
            names = ", ".join(out.dialect.identifier_preparer.quote(t.name) for t in _tables())
            out.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
        # Again, under the lock: a process may have written since the first look.
        _refuse_rows(out, target.url, _tables())
        with storage_errors(source.url), source.engine.connect() as conn:
            # One snapshot of the source for every table and batch: rows committed
            # meanwhile are not half copied.
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                unbounded_statements(conn)
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")
            for table in _tables():
                if table.name in SCHEMA_ROWS:
                    with storage_errors(target.url):
                        out.execute(delete(table))
                statement = _insert(table)
                counts[table.name] = 0
                # Closed at once when a write fails: PostgreSQL's server-side cursor with it.
                to_postgresql = out.dialect.name == "postgresql"
                with closing(_read(conn, table, batch_rows, to_postgresql)) as batches:
                    for batch in batches:
                        with storage_errors(target.url):
                            out.execute(statement, batch)
                        counts[table.name] += len(batch)
        _move_sequences(out)
        out.commit()
    return counts


def _tables() -> list[Table]:
    return list(metadata.sorted_tables)


def _json_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if isinstance(c.type, JSON)]


def _read(
    conn: Connection, table: Table, batch_rows: int, to_postgresql: bool
) -> Generator[list[dict[str, Any]]]:
    """*table*'s rows in primary-key order, *batch_rows* at a time (a server-side cursor
    on PostgreSQL), each a dict of parameters for :func:`_insert`.

    JSON columns are read as the driver returns them and decoded here, row by row
    (SQLAlchemy's JSON type decodes inside the result, where a value that is not JSON
    fails the whole read with no row to name): a SQLite file holds JSON as text, which
    may have been damaged; PostgreSQL validates JSON as it stores it, and psycopg returns
    it decoded. For a PostgreSQL target, text it would refuse (:func:`_unstorable`) is
    named here too, rather than as the driver's error for the whole batch."""
    json_columns = _json_columns(table)
    columns = [
        type_coerce(column, NullType()).label(column.name)
        if column.name in json_columns
        else column
        for column in table.columns
    ]
    flags = [table.c[name].is_(None).label(_NULL_FLAG.format(name)) for name in json_columns]
    query = select(*columns, *flags).order_by(*table.primary_key.columns)
    decode = conn.dialect.name != "postgresql"
    with conn.execution_options(yield_per=batch_rows).execute(query) as result:
        for batch in _batches(result.partitions(batch_rows), table, json_columns, decode=decode):
            if to_postgresql:
                _check_text_for_postgresql(table, batch)
            yield batch


def _batches(
    parts: Iterator[Sequence[Row[Any]]], table: Table, json_columns: list[str], *, decode: bool
) -> Iterator[list[dict[str, Any]]]:
    """Each part of rows as the parameters of :func:`_insert` (a JSON ``null`` as
    ``JSON.NULL``, an SQL NULL as None), JSON text decoded when *decode*.

    :raises ConfigError: naming the row (by primary key) and the column whose text is
        not JSON: nothing is copied until it is mended or deleted."""
    for part in parts:
        batch = []
        for row in part:
            values = dict(row._mapping)
            for name in json_columns:
                value = values.pop(name)
                if values.pop(_NULL_FLAG.format(name)):
                    value = None
                else:
                    if decode and isinstance(value, str | bytes):
                        try:
                            value = json.loads(value)
                        except ValueError:  # JSONDecodeError, UnicodeDecodeError
                            raise _not_json(table, values, name) from None
                    if value is None:
                        value = JSON.NULL
                values[_JSON_PARAM.format(name)] = value
            batch.append(values)
        yield batch


def _not_json(table: Table, values: dict[str, Any], column: str) -> ConfigError:
    return ConfigError(
        f"the {table.name} row {_key(table, values)} of the source holds {column} that is "
        "not JSON: nothing was copied; mend or delete that row first (an unreadable client: "
        "authserver clients delete ID)"
    )


def _key(table: Table, values: dict[str, Any]) -> str:
    return ", ".join(repr(values[c.name]) for c in table.primary_key.columns)


def _unstorable(value: str, length: int | None) -> str | None:
    """Why PostgreSQL would refuse *value* in a text column of *length* characters (SQLite
    enforces neither rule), or None."""
    if "\x00" in value:
        return "a NUL character, which PostgreSQL text cannot hold"
    if length is not None and len(value) > length:
        return f"more than the column's {length} characters"
    return None


def _check_text_for_postgresql(table: Table, batch: list[dict[str, Any]]) -> None:
    """Refuse, naming the row and column, a text value of *batch* a PostgreSQL target
    would refuse (a SQLite file may hold one written by hand or by an older version)."""
    lengths = {c.name: c.type.length for c in table.columns if isinstance(c.type, String)}
    for values in batch:
        for column, length in lengths.items():
            value = values.get(column)
            why = _unstorable(value, length) if isinstance(value, str) else None
            if why is not None:
                raise ConfigError(
                    f"the {table.name} row {_key(table, values)} of the source holds "
                    f"{column} with {why}: nothing was copied; mend or delete that row "
                    "first"
                )


def _insert(table: Table) -> Any:
    """An INSERT of every column of *table* in which a JSON column's None is SQL NULL and
    ``JSON.NULL`` a JSON ``null``, whatever the column's ``none_as_null``."""
    overrides = {
        name: bindparam(_JSON_PARAM.format(name), type_=JSON(none_as_null=True))
        for name in _json_columns(table)
    }
    return insert(table).values(overrides) if overrides else insert(table)


def _move_sequences(conn: Connection) -> None:
    """PostgreSQL: each sequence behind an integer primary key set past the copied ids, so
    the next insert that leaves the id to the database does not collide. (SQLite takes the
    next rowid from the rows themselves.)"""
    if conn.dialect.name != "postgresql":
        return
    for table in _tables():
        column = table.autoincrement_column
        if column is None:
            continue
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": column.name},
        ).scalar_one()
        if sequence is None:
            continue
        highest = conn.execute(select(func.max(column))).scalar_one()
        conn.execute(
            text("SELECT setval(:sequence, :value, :called)"),
            {"sequence": sequence, "value": highest or 1, "called": highest is not None},
        )
