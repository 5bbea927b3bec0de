"""What the key schedule logs when a tick fails: a database outage (an expected failure,
whose message names the database without its password) is one line without a
traceback when it begins and one when it ends, however many ticks it lasts; a bug keeps
its traceback."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from authserver import scheduler
from authserver.errors import StorageUnavailable

OUTAGE = "database error at postgresql+psycopg://app:***@db:5432/auth (OperationalError)"


def _run_ticks(monkeypatch: pytest.MonkeyPatch, outcomes: list[BaseException | None]) -> None:
    """Run the scheduler's loop until it has ticked once per outcome (raising it, or
    succeeding for ``None``)."""
    pending = list(outcomes)
    done = threading.Event()

    def tick(_services: Any) -> list[str]:
        outcome = pending.pop(0) if pending else None
        if not pending:
            done.set()
        if outcome is not None:
            raise outcome
        return []

    monkeypatch.setattr(scheduler, "run_once", tick)
    keys = scheduler.KeyScheduler(services=None, interval=0.001)  # type: ignore[arg-type]
    keys.start()
    try:
        assert done.wait(10)
    finally:
        keys.stop()
        keys._thread.join(10)


def test_a_database_outage_is_one_line_when_it_begins_and_one_when_it_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authserver.scheduler")
    _run_ticks(monkeypatch, [StorageUnavailable(OUTAGE)] * 5 + [None, None])
    records = [r for r in caplog.records if r.name == "authserver.scheduler"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", f"key schedule tick failed: {OUTAGE}; retrying at the next tick"),
        ("INFO", "key schedule tick succeeded again"),
    ]
    assert all(r.exc_info is None for r in records)


def test_an_unexpected_failure_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authserver.scheduler")
    _run_ticks(monkeypatch, [RuntimeError("bug"), RuntimeError("bug")])
    records = [r for r in caplog.records if r.name == "authserver.scheduler"]
    assert len(records) == 2
    assert all(r.levelname == "ERROR" and r.exc_info is not None for r in records)
