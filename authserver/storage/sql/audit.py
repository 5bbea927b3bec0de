"""SqlAuditStore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete
from sqlalchemy import insert
from sqlalchemy import select

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.storage.sql.engine import Database
from authserver.storage.sql.tables import AuditEventRow


class SqlAuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, event: AuditEvent) -> None:
        self.add_many([event])

    def add_many(self, events: Sequence[AuditEvent]) -> None:
        if events:
            # One Core INSERT with many parameter sets (executemany / insertmanyvalues).
            self._db.session().execute(insert(AuditEventRow), [_values(e) for e in events])

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


def _values(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "client_id": event.client_id,
        "sub": event.sub,
        "aud": event.aud,
        "jti": event.jti,
        "detail": event.detail or None,
    }
