"""SqlRevocationStore."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy import select

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.tables import REVOKED_TOKENS
from authserver.storage.sql.tables import USED_ASSERTIONS


@maps_storage_errors
class SqlRevocationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        # A second revocation of the same jti (concurrent or later) changes nothing.
        insert_or_ignore(
            self._db.connection(),
            REVOKED_TOKENS,
            {"jti": jti, "client_id": client_id, "revoked_at": now, "expires_at": expires_at},
        )

    def is_revoked(self, jti: str) -> bool:
        stmt = select(REVOKED_TOKENS.c.jti).where(REVOKED_TOKENS.c.jti == jti)
        return self._db.connection().scalar(stmt) is not None

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        # Its own transaction, committed here, not the request's: an assertion is used
        # once it has authenticated (RFC 7523 §3 item 7), whatever becomes of the request
        # afterwards (a refused scope, a rollback). And on SQLite the request transaction
        # then holds no write lock when the token is issued, so the status list's block
        # lease (its own transaction too) does not wait on it until "database is locked".
        with self._db.engine.begin() as conn:
            return insert_or_ignore(
                conn,
                USED_ASSERTIONS,
                {"client_id": client_id, "jti": jti, "expires_at": expires_at},
            )

    def purge(self, now: float) -> int:
        conn = self._db.connection()
        a = conn.execute(delete(REVOKED_TOKENS).where(REVOKED_TOKENS.c.expires_at < now))
        b = conn.execute(delete(USED_ASSERTIONS).where(USED_ASSERTIONS.c.expires_at < now))
        return int(a.rowcount or 0) + int(b.rowcount or 0)
