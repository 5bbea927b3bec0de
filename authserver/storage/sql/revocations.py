"""SqlRevocationStore."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.tables import RevokedTokenRow
from authserver.storage.sql.tables import UsedAssertionRow


@maps_storage_errors
class SqlRevocationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        # A second revocation of the same jti (concurrent or later) changes nothing.
        insert_or_ignore(
            self._db.session(),
            RevokedTokenRow,
            {"jti": jti, "client_id": client_id, "revoked_at": now, "expires_at": expires_at},
        )

    def is_revoked(self, jti: str) -> bool:
        stmt = select(RevokedTokenRow.jti).where(RevokedTokenRow.jti == jti)
        return self._db.session().scalar(stmt) is not None

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        # Its own transaction, committed here, not the request's: an assertion is used
        # once it has authenticated (RFC 7523 §3 item 7), whatever becomes of the request
        # afterwards (a refused scope, a rollback). And on SQLite the request transaction
        # then holds no write lock when the token is issued, so the status list's block
        # lease (its own transaction too) does not wait on it until "database is locked".
        with Session(self._db.engine) as session, session.begin():
            return insert_or_ignore(
                session,
                UsedAssertionRow,
                {"client_id": client_id, "jti": jti, "expires_at": expires_at},
            )

    def purge(self, now: float) -> int:
        session = self._db.session()
        a = session.execute(delete(RevokedTokenRow).where(RevokedTokenRow.expires_at < now))
        b = session.execute(delete(UsedAssertionRow).where(UsedAssertionRow.expires_at < now))
        return int(a.rowcount or 0) + int(b.rowcount or 0)  # type: ignore[attr-defined]
