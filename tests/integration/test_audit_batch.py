"""The batched ``token.issued`` records of a serving worker (audit/service.py,
``AuditBatcher``) on a real database: an event the database refuses is dropped alone,
never holding up the events batched with it; a database that cannot be used keeps them all
for the next flush."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from sqlalchemy import text

from authserver.audit.model import AuditQuery
from authserver.audit.service import AuditBatcher
from authserver.container import Services
from authserver.errors import StorageUnavailable
from authserver.storage.sql.audit import SqlAuditStore

pytestmark = pytest.mark.integration

#: Values the database refuses. Lone surrogates are no UTF-8 (both drivers refuse to
#: encode them); PostgreSQL also refuses a NUL in text, a ``sub`` longer than its column
#: and a NaN in JSON, which SQLite stores.
POISONS: dict[str, list[dict[str, Any]]] = {
    "sqlite": [{"sub": "user-\ud800"}, {"aud": "\udfff"}],
    "postgresql": [
        {"sub": "user-\ud800"},
        {"sub": "u" * 256},
        {"aud": "https://a.example\x00"},
        {"exp": float("nan")},
    ],
}


def batcher(services: Services) -> AuditBatcher:
    # Not started: the test flushes, no thread does.
    return AuditBatcher(SqlAuditStore(services.db), services.unit_of_work, interval=3600)


def put(services: Services, batch: AuditBatcher, jti: str, **fields: Any) -> None:
    fields.setdefault("sub", f"user-{jti}")
    batch.put(
        services.audit._event(f"client:c_{jti}", "token.issued", client_id="c", jti=jti, **fields)
    )


def recorded(services: Services) -> list[str]:
    with services.unit_of_work():
        events = services.audit.query(AuditQuery(action="token.issued", limit=1000))
    return sorted(e.jti or "" for e in events)


def test_an_event_the_database_refuses_is_dropped_alone(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    poisons = POISONS[services.db.engine.dialect.name]
    batch = batcher(services)
    put(services, batch, "a")
    for n, poison in enumerate(poisons):
        put(services, batch, f"poison-{n}", **poison)
        put(services, batch, f"b{n}")
    with caplog.at_level(logging.ERROR, logger="authserver.audit.service"):
        assert batch.flush() == 1 + len(poisons)
    assert recorded(services) == sorted(["a", *(f"b{n}" for n in range(len(poisons)))])
    # Nothing left to retry: the next flush writes only what came since.
    put(services, batch, "c")
    assert batch.flush() == 1
    assert "c" in recorded(services)
    # One line per refused event, naming no value it held.
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(poisons)
    for line in refused:
        assert line.startswith("audit: dropped a token.issued event")
        assert "\n" not in line
        assert not any(value in line for value in ("user-", "uuu", "a.example"))


def test_a_database_that_cannot_be_used_keeps_the_whole_batch(services: Services) -> None:
    """A missing table (what an unreachable or locked database also reports as
    StorageUnavailable) is no fault of the data: nothing is dropped, the refused event
    included, until the database answers again."""
    poison = POISONS[services.db.engine.dialect.name][0]
    batch = batcher(services)
    put(services, batch, "a")
    put(services, batch, "poison", **poison)
    put(services, batch, "b")
    with services.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    try:
        for _ in range(2):
            with pytest.raises(StorageUnavailable):
                batch.flush()
    finally:
        with services.db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
    assert batch.flush() == 2
    assert recorded(services) == ["a", "b"]


def test_an_outage_is_reported_once_and_its_end_once(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch thread retries every interval; it says so when the writes start failing
    and when they work again, not at every retry."""
    batch = AuditBatcher(SqlAuditStore(services.db), services.unit_of_work, interval=0.05)
    put(services, batch, "a")
    with services.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    with caplog.at_level(logging.INFO, logger="authserver.audit.service"):
        batch._thread.start()
        try:
            time.sleep(1)  # some twenty retries
        finally:
            with services.db.engine.begin() as conn:
                conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        deadline = time.monotonic() + 10
        while recorded(services) != ["a"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
    assert recorded(services) == ["a"]
    lines = [r.getMessage() for r in caplog.records if r.name == "authserver.audit.service"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("audit: cannot write token.issued records (")
    assert "1 kept, retrying" in lines[0]
    assert lines[1] == "audit: token.issued records are written again"
