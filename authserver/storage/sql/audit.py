"""SqlAuditStore."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import or_
from sqlalchemy import select

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.store import KEY_EVENTS
from authserver.audit.store import key_record
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import unbounded_statements
from authserver.storage.sql.tables import AUDIT_EVENTS

#: The ``locks`` row that serialises :meth:`SqlAuditStore.add_key_events_once`.
KEY_RECORDS_LOCK = "key_records"


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
        row costs no more Python than the driver needs (no SQLAlchemy statement)."""
        if events:
            sql = self._db.driver_sql(_INSERT)
            self._db.connection().exec_driver_sql(sql, [_row(e) for e in events])

    def key_events(self) -> list[AuditEvent]:
        stmt = select(AUDIT_EVENTS).where(AUDIT_EVENTS.c.action.in_(list(KEY_EVENTS)))
        return [_event(r) for r in self._db.connection().execute(stmt)]

    def add_key_events_once(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        conn = self._db.connection()
        # The row lock (PostgreSQL) or the write lock (SQLite) until the unit of work ends;
        # the read below is a statement after it, so it sees what a process that held it
        # before committed (READ COMMITTED; SQLite's write transaction starts here).
        bump_counter(conn, KEY_RECORDS_LOCK)
        recorded = {key_record(e) for e in self.key_events()}
        added = [e for e in events if key_record(e) not in recorded]
        self.add_many(added)
        return added

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        c = AUDIT_EVENTS.c
        stmt = select(AUDIT_EVENTS)
        if query.client_id is not None:
            stmt = stmt.where(c.client_id == query.client_id)
        if query.sub is not None:
            stmt = stmt.where(c.sub == query.sub)
        if query.action is not None:
            stmt = stmt.where(c.action == query.action)
        if query.since is not None:
            stmt = stmt.where(c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(c.at < query.until)
        if query.before is not None:
            # After the cursor event in the listing's order (at, id descending); none when
            # it is gone (purged: so is every event listed after it).
            # The redundant ``at <= cursor`` is what the index on ``at`` can seek to: under
            # the OR alone both databases scanned every newer event first, so each page
            # cost as much as all the pages before it (a second a page 900,000 deep).
            cursor = select(AUDIT_EVENTS.c.at).where(c.id == query.before).scalar_subquery()
            stmt = stmt.where(
                c.at <= cursor, or_(c.at < cursor, and_(c.at == cursor, c.id < query.before))
            )
        stmt = stmt.order_by(c.at.desc(), c.id.desc()).limit(query.limit)
        return [_event(r) for r in self._db.connection().execute(stmt)]

    def purge(self, before: float, limit: int | None = None) -> int:
        c = AUDIT_EVENTS.c
        stmt = delete(AUDIT_EVENTS)
        if limit is None:
            stmt = stmt.where(c.at < before)
        else:
            # The oldest first, by the index on ``at``: a batch's transaction is short, so
            # on SQLite the write lock it holds is too.
            oldest = select(c.id).where(c.at < before).order_by(c.at).limit(limit)
            stmt = stmt.where(c.id.in_(oldest.scalar_subquery()))
        conn = self._db.connection()
        unbounded_statements(conn)  # housekeeping, never a request
        return int(conn.execute(stmt).rowcount or 0)


def _event(r: Any) -> AuditEvent:
    return AuditEvent(
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


#: The columns of ``audit_events`` that a new event fills (``id`` is generated).
_INSERT = (
    "INSERT INTO audit_events (at, actor, action, client_id, sub, aud, jti, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row(event: AuditEvent) -> tuple[Any, ...]:
    # ``detail`` as the JSON column stores it (SQLAlchemy's JSON type: json.dumps), so
    # rows written here and rows written through the table's JSON type read back alike.
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
