"""SqlClientStore: clients in the ``clients`` table (row <-> model mapping lives here only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select

from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.errors import Conflict
from authserver.errors import NotFound
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.tables import ClientRow


def _to_model(row: ClientRow) -> Client:
    return _client({name: getattr(row, name) for name in _COLUMNS})


def _fill(row: ClientRow, client: Client) -> None:
    row.name = client.name
    row.secret_hash = client.secret_hash
    row.audiences = list(client.policy.audiences)
    row.scopes = list(client.policy.scopes)
    row.allowed_claims = list(client.policy.allowed_claims)
    row.token_ttl = client.policy.token_ttl
    row.require_sub = client.policy.require_sub
    row.enabled = client.enabled
    row.jwks = client.jwks
    row.jwks_uri = client.jwks_uri
    row.created_at = client.created_at
    row.updated_at = client.updated_at
    row.profile = client.policy.profile
    row.fixed_claims = dict(client.policy.fixed_claims) or None
    row.previous_secret_hash = client.previous_secret_hash
    row.previous_secret_expires_at = client.previous_secret_expires_at


#: The columns of a client row, in the order of ``_GET``. A raw read (below) and an ORM
#: row (``_to_model``) both become a mapping of these names for ``_client``.
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
    psycopg on PostgreSQL (and always by the ORM)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _client(values: Mapping[str, Any]) -> Client:
    """The model from a client row's column values, decoded or raw: JSON columns, the
    boolean (an integer on SQLite) and the timestamps are normalised as the column types do."""
    return Client(
        client_id=ClientId(values["client_id"]),
        name=values["name"],
        policy=ClientPolicy(
            audiences=tuple(_json(values["audiences"]) or ()),
            scopes=tuple(_json(values["scopes"]) or ()),
            allowed_claims=tuple(_json(values["allowed_claims"]) or ()),
            token_ttl=values["token_ttl"],
            require_sub=bool(values["require_sub"]),
            profile=values["profile"] or "oauth2",
            fixed_claims=_json(values["fixed_claims"]) or {},
        ),
        enabled=bool(values["enabled"]),
        created_at=float(values["created_at"]),
        updated_at=float(values["updated_at"]),
        secret_hash=values["secret_hash"],
        jwks=_json(values["jwks"]),
        jwks_uri=values["jwks_uri"],
        previous_secret_hash=values["previous_secret_hash"],
        previous_secret_expires_at=(
            None
            if values["previous_secret_expires_at"] is None
            else float(values["previous_secret_expires_at"])
        ),
    )


#: The ``locks`` row whose counter changes with every client change (cache validation).
VERSION_NAME = "clients"


class SqlClientStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def version(self) -> int:
        return self._db.read_counter(VERSION_NAME)

    def _changed(self) -> None:
        bump_counter(self._db.session(), VERSION_NAME)

    def add(self, client: Client) -> None:
        row = ClientRow(client_id=str(client.client_id))
        _fill(row, client)
        values = {c.key: getattr(row, c.key) for c in ClientRow.__table__.columns}
        # INSERT … ON CONFLICT DO NOTHING: a duplicate id leaves the unit of work usable
        # (a failed flush would roll back everything else it holds).
        if not insert_or_ignore(self._db.session(), ClientRow, values):
            raise Conflict(f"client {client.client_id} already exists")
        self._changed()

    def get(self, client_id: ClientId) -> Client | None:
        # A raw read (Database.read_one): on a token request's cache miss this needs no
        # ORM session and no transaction.
        row = self._db.read_one(_GET, str(client_id))
        return _client(dict(zip(_COLUMNS, row, strict=True))) if row is not None else None

    def get_by_secret_hash(self, secret_hash: str) -> Client | None:
        row = self._db.read_one(_GET_BY_SECRET, secret_hash, secret_hash)
        return _client(dict(zip(_COLUMNS, row, strict=True))) if row is not None else None

    def list(self) -> list[Client]:
        rows = self._db.session().scalars(
            select(ClientRow).order_by(ClientRow.created_at, ClientRow.client_id)
        )
        return [_to_model(row) for row in rows]

    def update(self, client: Client) -> None:
        session = self._db.session()
        row = session.get(ClientRow, str(client.client_id))
        if row is None:
            raise NotFound(f"no client with id {client.client_id!r}")
        _fill(row, client)
        session.flush()
        self._changed()

    def delete(self, client_id: ClientId) -> None:
        session = self._db.session()
        result = session.execute(delete(ClientRow).where(ClientRow.client_id == str(client_id)))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"no client with id {client_id!r}")
        self._changed()
