"""The audit retention purge (``scheduler.housekeeping``) on a real database: every event
older than the retention goes, none younger, in bounded batches of one transaction each,
so that no purge holds a lock (on SQLite: every writer's) for long."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.service import AuditService
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.scheduler import housekeeping
from authserver.settings import Settings
from tests.conftest import make_services

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


@pytest.fixture
def services_at_now(settings: Settings) -> Iterator[Services]:
    svc = make_services(settings, clock=FixedClock(NOW))
    yield svc
    svc.close()


def events(ats: list[float]) -> list[AuditEvent]:
    return [
        AuditEvent(at=at, actor="client:c", action="token.issued", client_id="c", jti=f"j{n}")
        for n, at in enumerate(ats)
    ]


def test_housekeeping_purges_what_is_past_retention_in_bounded_batches(
    services_at_now: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services_at_now
    monkeypatch.setattr(AuditService, "PURGE_BATCH", 100)
    cut = NOW - svc.audit.retention
    # 350 events past the retention, newest last; then the cut itself and younger ones.
    old = [cut - 1 - n * 0.5 for n in range(350)]
    young = [cut, cut + 0.001, cut + 60, NOW - 1]
    with svc.unit_of_work():
        svc.audit._store.add_many(events(old + young))
    deleted: list[int] = []

    def count(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM AUDIT_EVENTS"):
            deleted.append(cursor.rowcount)

    event.listen(svc.db.engine, "after_cursor_execute", count)
    try:
        housekeeping(svc)
    finally:
        event.remove(svc.db.engine, "after_cursor_execute", count)
    assert sum(deleted) == 350
    assert max(deleted) <= 100, deleted  # one transaction per batch (its unit of work)
    with svc.unit_of_work():
        left = svc.audit.query(AuditQuery(action="token.issued", limit=1000))
    assert sorted(e.at for e in left) == young
    # Nothing more to do: a second run deletes nothing.
    assert housekeeping(svc) == 0
