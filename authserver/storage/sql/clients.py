"""SqlClientStore: clients in the ``clients`` table (row <-> model mapping lives here only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import type_coerce
from sqlalchemy import update
from sqlalchemy.types import NullType

from authserver.clients.model import DEFAULT_PROFILE
from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.clients.model import listing_order
from authserver.errors import Conflict
from authserver.errors import not_found
from authserver.records import Scan
from authserver.records import UnreadableRecord
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import storage_errors
from authserver.storage.sql.tables import CLIENTS


def _values(client: Client) -> dict[str, Any]:
    """The column values of *client*'s row, but its id."""
    return {
        "name": client.name,
        "secret_hash": client.secret_hash,
        "audiences": list(client.policy.audiences),
        "scopes": list(client.policy.scopes),
        "allowed_claims": list(client.policy.allowed_claims),
        "token_ttl": client.policy.token_ttl,
        "require_sub": client.policy.require_sub,
        "enabled": client.enabled,
        "jwks": client.jwks,
        "jwks_uri": client.jwks_uri,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
        "profile": client.policy.profile,
        "fixed_claims": dict(client.policy.fixed_claims) or None,
        "previous_secret_hash": client.previous_secret_hash,
        "previous_secret_expires_at": client.previous_secret_expires_at,
    }


#: The columns of a client row, in the order of ``_GET``. The DB-API read of one row
#: (``get``) and the raw Core read of all rows (``scan``) both become a mapping of these
#: names for ``_client``.
_COLUMNS = (
    "client_id",
    "name",
    "secret_hash",
    "audiences",
    "scopes",
    "allowed_claims",
    "token_ttl",
    "require_sub",
    "enabled",
    "jwks",
    "jwks_uri",
    "created_at",
    "updated_at",
    "profile",
    "fixed_claims",
    "previous_secret_hash",
    "previous_secret_expires_at",
)
#: One client row by id, read on the DB-API connection (Database.read_one): on a
#: client-cache miss (many clients in use) this runs per token request, and SQLAlchemy's
#: statement execution costs several times the query.
_GET = f"SELECT {', '.join(_COLUMNS)} FROM clients WHERE client_id = ?"  # noqa: S608 - constant
#: One client row by secret digest, current or previous (Bearer authentication of
#: ``stream`` clients); both columns are indexed.
_GET_BY_SECRET = (
    f"SELECT {', '.join(_COLUMNS)} FROM clients "  # noqa: S608 - constant
    "WHERE secret_hash = ? OR previous_secret_hash = ?"
)


def _json(value: Any) -> Any:
    """A JSON column as the driver returns it: text on SQLite, often already decoded by
    psycopg on PostgreSQL (and always by SQLAlchemy's JSON type)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class _BadColumn(ValueError):
    """One column of a client row does not have its type."""


def _strings(values: Mapping[Any, Any], column: str) -> tuple[str, ...]:
    value = _json(values[column])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadColumn(f"{column} is not a list of strings")
    return tuple(value)


def _typed(values: Mapping[Any, Any], column: str, *types: type) -> Any:
    value = values[column]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _BadColumn(f"{column} has the wrong type")
    return value


def _client(values: Mapping[Any, Any]) -> Client:
    """The model from a client row's column values, decoded or raw: JSON columns, the
    boolean (an integer on SQLite) and the timestamps are normalised as the column types do.

    :raises UnreadableRecord: naming the row by client id and the column that is wrong
        (never its value).
    """
    try:
        jwks = _json(values["jwks"])
        if jwks is not None and not isinstance(jwks, dict):
            raise _BadColumn("jwks is not a JSON object")
        fixed_claims = _json(values["fixed_claims"])
        if fixed_claims is not None and not isinstance(fixed_claims, dict):
            raise _BadColumn("fixed_claims is not a JSON object")
        expires_at = _typed(values, "previous_secret_expires_at", int, float, type(None))
        return Client(
            client_id=ClientId(_typed(values, "client_id", str)),
            name=_typed(values, "name", str),
            policy=ClientPolicy(
                audiences=_strings(values, "audiences"),
                scopes=_strings(values, "scopes"),
                allowed_claims=_strings(values, "allowed_claims"),
                token_ttl=_typed(values, "token_ttl", int, type(None)),
                require_sub=bool(_typed(values, "require_sub", bool, int)),
                profile=_typed(values, "profile", str, type(None)) or DEFAULT_PROFILE,
                fixed_claims=fixed_claims or {},
            ),
            enabled=bool(_typed(values, "enabled", bool, int)),
            created_at=float(_typed(values, "created_at", int, float)),
            updated_at=float(_typed(values, "updated_at", int, float)),
            secret_hash=_typed(values, "secret_hash", str, type(None)),
            jwks=jwks,
            jwks_uri=_typed(values, "jwks_uri", str, type(None)),
            previous_secret_hash=_typed(values, "previous_secret_hash", str, type(None)),
            previous_secret_expires_at=(None if expires_at is None else float(expires_at)),
        )
    except ValueError as exc:  # _BadColumn, json.JSONDecodeError, UnicodeDecodeError
        raise UnreadableRecord(f"clients row {values['client_id']!r}", str(exc)) from None


#: Every column, read without SQLAlchemy's per-type decoding (``NullType``): a row whose
#: JSON does not parse would otherwise fail the whole result, not just that row.
_RAW_COLUMNS = [type_coerce(CLIENTS.c[name], NullType()).label(name) for name in _COLUMNS]


#: The ``locks`` row whose counter changes with every client change (cache validation).
VERSION_NAME = "clients"
#: The ``locks`` row every client change locks first (:meth:`SqlClientStore.lock`): not
#: the version's, so a command that then changes nothing (an update to what a client
#: already is, a second disable) moves no version and empties no worker's cache.
LOCK_NAME = "clients_lock"


@maps_storage_errors
class SqlClientStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def version(self) -> int:
        return self._db.read_counter(VERSION_NAME)

    def _changed(self) -> None:
        conn = self._db.connection()
        # The lock's row before the version's, in every transaction that changes a
        # client (a create takes no lock of its own): two rows taken in one order by all
        # cannot deadlock.
        bump_counter(conn, LOCK_NAME, announce=False)
        bump_counter(conn, VERSION_NAME)

    @contextmanager
    def lock(self) -> Iterator[None]:
        # A row of its own (LOCK_NAME): a row lock on PostgreSQL, the write lock on
        # SQLite, held until the unit of work ends; reads after it (Database.read_one on
        # the open connection) see every change committed before it. A change then bumps
        # the version (_changed). Its own statements map their errors here
        # (maps_storage_errors only covers the call that builds this context manager).
        with storage_errors(self._db.url):
            bump_counter(self._db.connection(), LOCK_NAME, announce=False)
        yield

    def add(self, client: Client) -> None:
        values = {"client_id": str(client.client_id), **_values(client)}
        # INSERT … ON CONFLICT DO NOTHING: a duplicate id leaves the unit of work usable
        # (a failed INSERT would roll back everything else it holds).
        if not insert_or_ignore(self._db.connection(), CLIENTS, values):
            raise Conflict(f"client {client.client_id} already exists")
        self._changed()

    def get(self, client_id: ClientId) -> Client | None:
        # A raw read (Database.read_one): on a token request's cache miss this needs no
        # transaction.
        row = self._db.read_one(_GET, str(client_id))
        return _client(dict(zip(_COLUMNS, row, strict=True))) if row is not None else None

    def get_by_secret_hash(self, secret_hash: str) -> Client | None:
        row = self._db.read_one(_GET_BY_SECRET, secret_hash, secret_hash)
        return _client(dict(zip(_COLUMNS, row, strict=True))) if row is not None else None

    def list(self) -> list[Client]:
        return self.scan().records

    def scan(self) -> Scan[Client]:
        clients: list[Client] = []
        unreadable: list[UnreadableRecord] = []
        stmt = select(*_RAW_COLUMNS).order_by(CLIENTS.c.created_at, CLIENTS.c.client_id)
        for row in self._db.connection().execute(stmt).mappings():
            try:
                clients.append(_client(row))
            except UnreadableRecord as exc:
                unreadable.append(exc)
        # In the order every store lists clients, not the one the database's collation
        # gives ties in created_at (clients.model.listing_order).
        clients.sort(key=listing_order)
        return Scan(clients, unreadable)

    def update(self, client: Client) -> None:
        stmt = (
            update(CLIENTS)
            .where(CLIENTS.c.client_id == str(client.client_id))
            .values(**_values(client))
        )
        if not self._db.connection().execute(stmt).rowcount:
            raise not_found("client", "id", client.client_id)
        self._changed()

    def delete(self, client_id: ClientId) -> None:
        stmt = delete(CLIENTS).where(CLIENTS.c.client_id == str(client_id))
        if not self._db.connection().execute(stmt).rowcount:
            raise not_found("client", "id", client_id)
        self._changed()
