"""SqlKeyStore: signing keys in the database, for instances that share no disk."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete
from sqlalchemy import select

from authserver.errors import NotFound
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.tables import SigningKeyRow

LOCK_NAME = "signing_keys"


def _to_model(row: SigningKeyRow) -> SigningKey:
    return SigningKey(
        kid=Kid(row.kid),
        private_pem=row.private_pem,
        public_jwk=dict(row.public_jwk),
        created_at=row.created_at,
        activate_at=row.activate_at,
        deactivate_at=row.deactivate_at,
        retired_at=row.retired_at,
        alg=row.alg,
    )


def _fill(row: SigningKeyRow, key: SigningKey) -> None:
    row.alg = key.alg
    row.private_pem = key.private_pem
    row.public_jwk = dict(key.public_jwk)
    row.created_at = key.created_at
    row.activate_at = key.activate_at
    row.deactivate_at = key.deactivate_at
    row.retired_at = key.retired_at


class SqlKeyStore:
    """Keys in ``signing_keys``; the lock is a row lock on ``locks`` (see ``LockRow``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def lock(self) -> Iterator[None]:
        bump_counter(self._db.session(), LOCK_NAME)
        # Held until the surrounding unit of work commits or rolls back.
        yield
        self._db.session().flush()

    def list(self) -> list[SigningKey]:
        session = self._db.session()
        # populate_existing: rows read before the lock was taken must not mask newer values.
        stmt = select(SigningKeyRow).execution_options(populate_existing=True)
        return [_to_model(row) for row in session.scalars(stmt)]

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
