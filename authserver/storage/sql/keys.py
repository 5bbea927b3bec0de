"""SqlKeyStore: signing keys in the database, for instances that share no disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import type_coerce
from sqlalchemy.types import NullType

from authserver.errors import NotFound
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.model import check_stored
from authserver.records import Scan
from authserver.records import UnreadableRecord
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import storage_errors
from authserver.storage.sql.tables import SigningKeyRow

LOCK_NAME = "signing_keys"


#: Every column, read without SQLAlchemy's per-type decoding (``NullType``): a row whose
#: JSON does not parse would otherwise fail the whole result, not just that row.
_RAW_COLUMNS = [type_coerce(c, NullType()).label(c.key) for c in SigningKeyRow.__table__.c]


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


def _fill(row: SigningKeyRow, key: SigningKey) -> None:
    row.alg = key.alg
    row.private_pem = key.private_pem
    row.public_jwk = dict(key.public_jwk)
    row.created_at = key.created_at
    row.activate_at = key.activate_at
    row.deactivate_at = key.deactivate_at
    row.retired_at = key.retired_at
    row.retention = key.retention


@maps_storage_errors
class SqlKeyStore:
    """Keys in ``signing_keys``; the lock is a row lock on ``locks`` (see ``LockRow``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def lock(self) -> Iterator[None]:
        # Not covered by maps_storage_errors (it maps errors of the call, which only
        # builds this context manager): the lock's own statements map theirs here.
        with storage_errors(self._db.url):
            bump_counter(self._db.session(), LOCK_NAME)
        # Held until the surrounding unit of work commits or rolls back.
        yield
        with storage_errors(self._db.url):
            self._db.session().flush()

    def list(self) -> list[SigningKey]:
        return self.scan().records

    def scan(self) -> Scan[SigningKey]:
        keys: list[SigningKey] = []
        unreadable: list[UnreadableRecord] = []
        # A Core read: never an ORM object that could mask a newer row read under the lock.
        for row in self._db.session().execute(select(*_RAW_COLUMNS)).mappings():
            try:
                keys.append(_to_model(row))
            except UnreadableRecord as exc:
                unreadable.append(exc)
        return Scan(keys, unreadable)

    def add(self, key: SigningKey) -> None:
        session = self._db.session()
        row = SigningKeyRow(kid=str(key.kid))
        _fill(row, key)
        session.add(row)
        session.flush()
        bump_counter(session, LOCK_NAME)

    def update(self, key: SigningKey) -> None:
        session = self._db.session()
        row = session.get(SigningKeyRow, str(key.kid))
        if row is None:
            raise NotFound(f"no signing key with kid {key.kid!r}")
        _fill(row, key)
        session.flush()
        bump_counter(session, LOCK_NAME)

    def delete(self, kid: Kid) -> None:
        session = self._db.session()
        session.execute(delete(SigningKeyRow).where(SigningKeyRow.kid == str(kid)))
        bump_counter(session, LOCK_NAME)

    def version(self) -> str:
        return str(self._db.read_counter(LOCK_NAME))
