"""SqlRevocationStore."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy import select

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import unbounded_statements
from authserver.storage.sql.horizons import SeenHorizon
from authserver.storage.sql.horizons import horizon_of
from authserver.storage.sql.horizons import purge_expired
from authserver.storage.sql.tables import REVOKED_TOKENS
from authserver.storage.sql.tables import USED_ASSERTIONS

#: The ``purge_horizons`` row of both tables (purged together).
HORIZON = "revocations"

#: Whether ``:jti`` is revoked, and the horizon: the record and the horizon in one
#: statement, one snapshot (a purge deletes the one and raises the other in one commit, so
#: a revocation is never missed between). Built once: on every ``/introspect``, building
#: and compiling this statement each time cost more than running it.
_REVOKED_AND_HORIZON = select(
    select(REVOKED_TOKENS.c.jti)
    .where(REVOKED_TOKENS.c.jti == bindparam("jti"))
    .scalar_subquery()
    .label("jti"),
    horizon_of(HORIZON).label("h"),
)
#: The horizon alone, read after a use of an assertion is recorded (private_key_jwt).
_HORIZON = select(horizon_of(HORIZON))


@maps_storage_errors
class SqlRevocationStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._horizon = SeenHorizon()

    def horizon(self) -> float:
        return self._horizon.value

    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        # A second revocation of the same jti (concurrent or later) changes nothing.
        insert_or_ignore(
            self._db.connection(),
            REVOKED_TOKENS,
            {"jti": jti, "client_id": client_id, "revoked_at": now, "expires_at": expires_at},
        )

    def is_revoked(self, jti: str, expires_at: float | None = None) -> bool:
        if expires_at is not None and expires_at <= self._horizon.value:
            return True
        found, stored = self._db.connection().execute(_REVOKED_AND_HORIZON, {"jti": jti}).one()
        horizon = self._horizon.see(stored)
        return found is not None or (expires_at is not None and expires_at <= horizon)

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        # Its own transaction, committed here, not the request's: an assertion is used
        # once it has authenticated (RFC 7523 §3 item 7), whatever becomes of the request
        # afterwards (a refused scope, a rollback). And on SQLite the request transaction
        # then holds no write lock when the token is issued, so the status list's block
        # lease (its own transaction too) does not wait on it until "database is locked".
        if expires_at <= self._horizon.value:
            return False
        with self._db.engine.begin() as conn:
            first = insert_or_ignore(
                conn,
                USED_ASSERTIONS,
                {"client_id": client_id, "jti": jti, "expires_at": expires_at},
            )
            if not first:
                return False
            # Read after the insert: if it succeeded because a purge had deleted an
            # earlier use, that purge committed first, and its raised horizon with it.
            return expires_at > self._horizon.see(conn.scalar(_HORIZON))

    def purge(self, now: float) -> int:
        conn = self._db.connection()
        # Housekeeping, never a request: a backlog of expired rows takes what it takes.
        unbounded_statements(conn)
        revoked = purge_expired(conn, REVOKED_TOKENS, HORIZON, now)
        return revoked + purge_expired(conn, USED_ASSERTIONS, HORIZON, now)
