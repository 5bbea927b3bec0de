"""A database outage answers 503 on every request; the error log says so once, then once per
ten seconds with how many lines it left out, instead of one ERROR line per request."""

from __future__ import annotations

import logging

import pytest

from authserver.errors import KeyStoreError
from authserver.errors import StorageUnavailable
from authserver.web import errors


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == errors.log.name]


def test_an_outage_is_one_line_per_ten_seconds_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(errors, "_DATABASE_UNAVAILABLE", errors.Throttled(10.0, clock))
    monkeypatch.setattr(errors, "_KEYS_UNAVAILABLE", errors.Throttled(10.0, clock))
    caplog.set_level(logging.ERROR, logger=errors.log.name)
    where = "cannot use the database at postgresql+psycopg://authserver:***@db.example/authserver"
    outage = StorageUnavailable(f"{where}: connection refused (is the database server running?)")

    answers = [errors.render_exception(outage) for _ in range(50)]
    assert {a[0] for a in answers} == {503}  # every request is still answered
    # Which database and why, as the storage layer explains it (password masked there).
    assert _records(caplog) == [f"database unavailable: {outage}"]

    clock.now += 9.9
    errors.render_exception(outage)
    assert len(_records(caplog)) == 1
    clock.now += 0.1
    errors.render_exception(outage)
    later = f"database unavailable: {outage} (50 more since the last such line)"
    assert _records(caplog)[1:] == [later]

    # The signing keys' line is throttled on its own: a database outage does not hide it.
    errors.render_exception(KeyStoreError("no current signing key"))
    assert _records(caplog)[2:] == ["signing keys unavailable: no current signing key"]


def test_an_unexpected_error_is_logged_every_time_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger=errors.log.name)
    for _ in range(3):
        assert errors.render_exception(RuntimeError("bug"))[0] == 500
    bugs = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(bugs) == 3
    assert all(r.exc_info for r in bugs)
