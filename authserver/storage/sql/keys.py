"""SqlKeyStore: signing keys in the database, for instances that share no disk."""

from __future__ import annotations

import json
from collections.abc import Hashable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import type_coerce
from sqlalchemy import update
from sqlalchemy.types import NullType

from authserver.errors import not_found
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.model import check_stored
from authserver.records import Scan
from authserver.records import UnreadableRecord
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import lock_wait
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import storage_errors
from authserver.storage.sql.tables import SIGNING_KEYS

LOCK_NAME = "signing_keys"
#: PostgreSQL: how long :meth:`SqlKeyStore.lock` waits for another process holding it.
KEY_LOCK_WAIT_S = 60


#: Every column, read without SQLAlchemy's per-type decoding (``NullType``): a row whose
#: JSON does not parse would otherwise fail the whole result, not just that row.
_RAW_COLUMNS = [type_coerce(c, NullType()).label(c.key) for c in SIGNING_KEYS.c]


def _to_model(values: Mapping[Any, Any]) -> SigningKey:
    """The key of one raw row.

    :raises UnreadableRecord: naming the row by kid and saying what is wrong with it.
    """
    kid = values["kid"]
    name = f"signing_keys row {kid!r}"
    try:
        public_jwk = values["public_jwk"]
        if isinstance(public_jwk, str | bytes):
            # JSON is text on SQLite; psycopg has already decoded it on PostgreSQL.
            public_jwk = json.loads(public_jwk)
        pem = values["private_pem"]
        return check_stored(
            SigningKey(
                kid=Kid(kid),
                private_pem=bytes(pem) if isinstance(pem, memoryview) else pem,
                public_jwk=public_jwk,
                created_at=values["created_at"],
                activate_at=values["activate_at"],
                deactivate_at=values["deactivate_at"],
                retired_at=values["retired_at"],
                alg=values["alg"],
                retention=values["retention"],
            )
        )
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
        raise UnreadableRecord(name, str(exc)) from None


def _values(key: SigningKey) -> dict[str, Any]:
    """The column values of *key*'s row, but its kid."""
    return {
        "alg": key.alg,
        "private_pem": key.private_pem,
        "public_jwk": dict(key.public_jwk),
        "created_at": key.created_at,
        "activate_at": key.activate_at,
        "deactivate_at": key.deactivate_at,
        "retired_at": key.retired_at,
        "retention": key.retention,
    }


@maps_storage_errors
class SqlKeyStore:
    """Keys in ``signing_keys``; the lock is a row lock on ``locks`` (see ``LOCKS``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def lock(self) -> Iterator[None]:
        # Not covered by maps_storage_errors (it maps errors of the call, which only
        # builds this context manager): the lock's own statements map theirs here.
        with storage_errors(self._db.url):
            conn = self._db.connection()
            # The holder may be making an RSA key and encrypting it (seconds on a busy
            # host): wait for it longer than for a lock of anyone else, but not forever.
            with lock_wait(conn, KEY_LOCK_WAIT_S):
                bump_counter(conn, LOCK_NAME)
        # Held until the surrounding unit of work commits or rolls back.
        yield

    def list(self) -> list[SigningKey]:
        return self.scan().records

    def scan(self) -> Scan[SigningKey]:
        keys: list[SigningKey] = []
        unreadable: list[UnreadableRecord] = []
        for row in self._db.connection().execute(select(*_RAW_COLUMNS)).mappings():
            try:
                keys.append(_to_model(row))
            except UnreadableRecord as exc:
                unreadable.append(exc)
        return Scan(keys, unreadable)

    def add(self, key: SigningKey) -> None:
        conn = self._db.connection()
        conn.execute(insert(SIGNING_KEYS).values(kid=str(key.kid), **_values(key)))
        bump_counter(conn, LOCK_NAME)

    def update(self, key: SigningKey) -> None:
        conn = self._db.connection()
        stmt = update(SIGNING_KEYS).where(SIGNING_KEYS.c.kid == str(key.kid)).values(**_values(key))
        if not conn.execute(stmt).rowcount:
            raise not_found("signing key", "kid", key.kid)
        bump_counter(conn, LOCK_NAME)

    def delete(self, kid: Kid) -> None:
        conn = self._db.connection()
        conn.execute(delete(SIGNING_KEYS).where(SIGNING_KEYS.c.kid == str(kid)))
        bump_counter(conn, LOCK_NAME)

    def version(self) -> str:
        return str(self._db.read_counter(LOCK_NAME))

    def stamp(self) -> Hashable | None:
        # A SQLite file's counters are read through PRAGMA data_version (no table read
        # while nothing was committed): the version itself is cheap enough. Elsewhere it
        # is a round trip: the change feed or cache_seconds decide when to read it.
        return self.version() if self._db.has_local_counters else None
