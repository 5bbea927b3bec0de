"""The audit retention purge (``scheduler.housekeeping``) on a real database: every event
older than the retention goes, none younger, in bounded batches of one transaction each,
so that no purge holds a lock (on SQLite: every writer's) for long."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from authserver import scheduler
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


def test_a_long_purge_does_not_hold_up_the_key_schedule(
    services_at_now: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of audit events past the retention (a lowered retention, a start after
    days down) is purged batch after batch; the key schedule's ticks go on meanwhile (they
    ran on the same thread and waited for the whole purge), and a stop ends the purge
    between two batches."""
    svc = services_at_now
    monkeypatch.setattr(AuditService, "PURGE_BATCH", 1)
    monkeypatch.setattr(scheduler, "PURGE_PAUSE", 0.1)
    monkeypatch.setattr(scheduler, "HOUSEKEEPING_INTERVAL", 0.01)
    cut = NOW - svc.audit.retention
    with svc.unit_of_work():
        svc.audit._store.add_many(events([cut - 1 - n for n in range(100)]))  # 10 s of batches
    ticks: list[float] = []
    ticked = threading.Event()

    def tick(_services: Services) -> list[str]:
        ticks.append(time.monotonic())
        if len(ticks) >= 10:
            ticked.set()
        return []

    monkeypatch.setattr(scheduler, "run_once", tick)
    keys = scheduler.KeyScheduler(svc, interval=0.05)
    keys.start()
    try:
        assert ticked.wait(5), f"{len(ticks)} key ticks in 5 s while the purge ran"
        with svc.unit_of_work():
            left = svc.audit.query(AuditQuery(action="token.issued", limit=1000))
        assert left, "the purge had ended: the test shows nothing"
    finally:
        keys.stop()
        keys._thread.join(5)
        keys._housekeeping.join(5)
    assert not keys._housekeeping.is_alive()
