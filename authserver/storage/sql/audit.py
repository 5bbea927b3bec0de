"""SqlAuditStore."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.tables import AuditEventRow


@maps_storage_errors
class SqlAuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, event: AuditEvent) -> None:
        self.add_many([event])

    def add_many(self, events: Sequence[AuditEvent]) -> None:
        """One ``executemany`` on the unit of work's connection, with the rows as the
        driver takes them: a batch holds up to a quarter second of every token a worker
        issued, written by a thread that shares the GIL with the request threads, so each
        row costs no more Python than the driver needs (no ORM bulk insert)."""
        if events:
            session = self._db.session()
            sql = self._db.driver_sql(_INSERT)
            session.connection().exec_driver_sql(sql, [_row(e) for e in events])

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        stmt = select(AuditEventRow)
        if query.client_id is not None:
            stmt = stmt.where(AuditEventRow.client_id == query.client_id)
        if query.sub is not None:
            stmt = stmt.where(AuditEventRow.sub == query.sub)
        if query.action is not None:
            stmt = stmt.where(AuditEventRow.action == query.action)
        if query.since is not None:
            stmt = stmt.where(AuditEventRow.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(AuditEventRow.at < query.until)
        stmt = stmt.order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc()).limit(query.limit)
        return [
            AuditEvent(
                at=r.at,
                actor=r.actor,
                action=r.action,
                client_id=r.client_id,
                sub=r.sub,
                aud=r.aud,
                jti=r.jti,
                detail=r.detail or {},
                id=r.id,
            )
            for r in self._db.session().scalars(stmt)
        ]

    def purge(self, before: float) -> int:
        result = self._db.session().execute(delete(AuditEventRow).where(AuditEventRow.at < before))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


#: The columns of ``AuditEventRow`` that a new event fills (``id`` is generated).
_INSERT = (
    "INSERT INTO audit_events (at, actor, action, client_id, sub, aud, jti, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row(event: AuditEvent) -> tuple[Any, ...]:
    # ``detail`` as the JSON column stores it (SQLAlchemy's JSON type: json.dumps), so
    # rows written here and rows written through the ORM read back alike.
    detail = json.dumps(event.detail) if event.detail else None
    return (
        event.at,
        event.actor,
        event.action,
        event.client_id,
        event.sub,
        event.aud,
        event.jti,
        detail,
    )
