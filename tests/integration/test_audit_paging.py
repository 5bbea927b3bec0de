"""Paging the audit trail by ``before`` (the id of a page's last event) on a real
database: a page deep in the trail is found through the index on ``at``, not by reading
every newer event first (which made each page cost as much as all the pages before it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy import text

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.container import Services

pytestmark = pytest.mark.integration

EVENTS = 20_000
DEEP = 15_000  # the cursor: this many events are newer


def _plan_rows_skipped(node: dict[str, Any]) -> int:
    """Rows a PostgreSQL plan (EXPLAIN ANALYZE, JSON) read and threw away, at every node."""
    skipped = int(node.get("Rows Removed by Filter", 0))
    return skipped + sum(_plan_rows_skipped(child) for child in node.get("Plans", []))


def test_a_page_deep_in_the_trail_is_sought_not_scanned(services: Services) -> None:
    store = services.audit._store
    with services.unit_of_work():
        store.add_many(
            [
                AuditEvent(at=1_700_000_000.0 + n * 0.01, actor="client:c", action="token.issued")
                for n in range(EVENTS)
            ]
        )
        if services.db.engine.dialect.name == "postgresql":
            services.db.connection().execute(text("ANALYZE audit_events"))
    with services.unit_of_work():
        listed = store.query(AuditQuery(limit=DEEP + 100))
    cursor = listed[DEEP - 1].id
    assert cursor is not None
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(services.db.engine, "before_cursor_execute", capture)
    try:
        with services.unit_of_work():
            page = store.query(AuditQuery(before=cursor, limit=100))
    finally:
        event.remove(services.db.engine, "before_cursor_execute", capture)
    assert [e.id for e in page] == [e.id for e in listed[DEEP : DEEP + 100]]
    [(statement, params)] = seen
    with services.db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            details = [row[-1] for row in plan]
            assert any("ix_audit_events_at (at<" in d for d in details), details
        else:
            explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}"
            [(raw,)] = conn.exec_driver_sql(explain, params).fetchall()
            plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
            assert _plan_rows_skipped(plan) < 1_000, plan
