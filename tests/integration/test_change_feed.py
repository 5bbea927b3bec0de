"""PostgreSQL LISTEN/NOTIFY (storage/sql/notify.py): with the feed live a cached client
costs no database read, a change made by another process is seen within 1 s, and while
the listening connection is gone every read checks the store again until it is back."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from authserver.container import Services
from authserver.settings import Settings
from authserver.storage.sql import notify
from authserver.storage.sql.notify import APPLICATION_NAME
from authserver.storage.sql.notify import libpq_url
from tests.conftest import make_services

pytestmark = pytest.mark.integration


@pytest.fixture
def db_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("the change feed is PostgreSQL's LISTEN/NOTIFY; SQLite checks versions")
    return db_url


@pytest.fixture
def feed_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """The application name of the feeds this test starts, its own: a cut by the product's
    name (pg_terminate_backend ... WHERE application_name) reaches every feed on the
    PostgreSQL server, and cut the feeds of other tests' servers running beside it (the
    multi-instance test counted an extra disconnection)."""
    name = f"{APPLICATION_NAME}-{secrets.token_hex(4)}"
    monkeypatch.setattr(notify, "APPLICATION_NAME", name)
    return name


@pytest.fixture
def two(settings: Settings, tmp_path: Path, feed_name: str) -> Iterator[tuple[Services, Services]]:
    """Two independent service graphs on one database, as two processes would have; the
    first listens (as *feed_name*)."""
    settings = settings.replace(key_store="sql")  # keys in the database, announced too
    listening = make_services(settings)
    other = make_services(settings)
    listening.start_change_feed()
    assert listening.changes is not None
    assert listening.changes.wait_live(5), "the change feed did not connect"
    yield listening, other
    listening.close()
    other.close()


class VersionReads:
    """Counts the client store's version reads (the per-request round trip the feed saves)."""

    def __init__(self, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        store: Any = services.clients._store
        real = store.version

        def counted() -> int:
            self.count += 1
            return int(real())

        monkeypatch.setattr(store, "version", counted)


def _until(predicate: Any, timeout: float) -> float:
    """Seconds until *predicate* held; fails after *timeout*."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_change_elsewhere_is_seen_within_a_second_without_reads_per_request(
    two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    listening, other = two
    reads = VersionReads(listening, monkeypatch)
    with other.unit_of_work():
        client, _ = other.clients.create(name="backend")
    cid = str(client.client_id)

    found = listening.clients.find(cid)
    assert found is not None
    assert found.enabled
    for _ in range(50):
        assert listening.clients.find(cid) is not None
    assert reads.count == 0  # live feed: no version read at all

    with other.unit_of_work():
        other.clients.set_enabled(cid, False)
    seen = _until(lambda: not listening.clients.find(cid).enabled, 1.0)  # type: ignore[union-attr]
    assert seen < 1.0
    assert reads.count == 0


def test_while_the_listener_is_gone_every_read_checks_the_store(
    two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch, feed_name: str
) -> None:
    listening, other = two
    feed = listening.changes
    assert feed is not None
    reads = VersionReads(listening, monkeypatch)
    with other.unit_of_work():
        client, _ = other.clients.create(name="backend")
    cid = str(client.client_id)
    assert listening.clients.find(cid) is not None

    # Cut the listening connection from the server side, as a restart or a network cut
    # would. Until the feed is back, a change must still be seen by the next read. The
    # first reconnection waits 2 s here, not 0.1 s: on a slow machine the feed was back
    # (and had dropped the caches) before the read below, which then read no version.
    monkeypatch.setattr(notify, "BACKOFF", (2.0,))
    with psycopg.connect(libpq_url(other.settings.database_url), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (feed_name,),
        )
    _until(lambda: not feed.live(), timeout=2.0)
    with other.unit_of_work():
        other.clients.set_enabled(cid, False)
    assert listening.clients.find(cid).enabled is False  # type: ignore[union-attr]
    assert reads.count >= 1

    # The feed reconnects on its own (backoff) and reads stop again.
    assert feed.wait_live(10)
    listening.clients.find(cid)
    settled = reads.count
    for _ in range(20):
        listening.clients.find(cid)
    assert reads.count == settled


def test_key_changes_are_announced_too(two: tuple[Services, Services]) -> None:
    listening, other = two

    def published() -> set[str]:
        with listening.unit_of_work():
            return {k["kid"] for k in listening.key_ring.published_jwks()["keys"]}

    before = published()
    with other.unit_of_work():
        kid = other.keys.rotate().key.kid
    assert kid not in before
    _until(lambda: kid in published(), 1.0)


def test_a_change_announced_during_the_heartbeat_is_not_lost(
    two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat query runs on the listening connection, and a change committed while
    it runs is announced then. It must still reach the cache: psycopg before 3.2.4 dropped
    such a notification, and every later find() trusted the live feed and returned the
    disabled client. The heartbeat is made long here so the commit surely lands in it."""
    listening, other = two
    feed = listening.changes
    assert feed is not None
    # Its own text, to find this feed's heartbeat (and no other's) in pg_stat_activity.
    monkeypatch.setattr(
        notify, "HEARTBEAT_QUERY", f"SELECT pg_sleep(0.4) /* {secrets.token_hex(4)} */"
    )
    # Live throughout, so that find() trusts the cache and shows what the feed delivered.
    monkeypatch.setattr(notify, "STALE_AFTER", 30.0)
    with other.unit_of_work():
        client, _ = other.clients.create(name="backend")
    cid = str(client.client_id)
    admin_url = libpq_url(other.settings.database_url)
    heartbeat = (
        "SELECT pid, query_start FROM pg_stat_activity WHERE application_name = %s "
        "AND state = 'active' AND query = %s"
    )
    landed = 0
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for enabled in (False, True, False, True, False, True):
            assert listening.clients.find(cid).enabled is not enabled  # type: ignore[union-attr]
            running: list[Any] = []

            def in_heartbeat(running: list[Any] = running) -> bool:
                running[:] = admin.execute(
                    heartbeat, (notify.APPLICATION_NAME, notify.HEARTBEAT_QUERY)
                ).fetchall()
                return bool(running)

            _until(in_heartbeat, timeout=3.0)
            with other.unit_of_work():
                other.clients.set_enabled(cid, enabled)
            # The commit (and so the notification) came while that heartbeat still ran.
            still = admin.execute(heartbeat, (notify.APPLICATION_NAME, notify.HEARTBEAT_QUERY))
            landed += bool(set(running) & set(still.fetchall()))
            _until(lambda enabled=enabled: listening.clients.find(cid).enabled is enabled, 1.0)  # type: ignore[union-attr]
    assert landed >= 3, "the changes did not land during heartbeats: the test shows nothing"


class _RecordedWaits(threading.Event):
    """The feed's stop event, recording every delay the feed waits between attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.delays.append(timeout)
        return super().wait(timeout)


def test_every_disconnection_is_retried_at_once_and_logged(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    feed_name: str,
) -> None:
    """The backoff is for one outage: once the feed listened again, the next cut (a
    restart of PostgreSQL days later, a pg_terminate_backend) starts again from the first
    delay and is logged. It used to go on from where the last outage left it, so every
    later cut kept the caches on per-request reads for the longest delay, unlogged.

    The delays the feed waited are recorded, not timed: under load a reconnection may
    itself fail and wait the second delay, which says nothing about the next cut."""
    name = feed_name  # its own, so the test cuts this feed's connection and no other's
    monkeypatch.setattr(notify, "BACKOFF", (0.05, 0.25))
    feed = notify.PostgresChangeFeed(db_url)
    waits = feed._stop = _RecordedWaits()
    # Every (re)connection announces everything once. Counted there, not by a subscriber:
    # the channel is the database's, so another test's client change (another worker, its
    # own schema) calls this feed's subscribers too, and was counted as a reconnection.
    connections: list[float] = []
    announce_all = feed._announce_all

    def reconnected() -> None:
        connections.append(time.monotonic())
        announce_all()

    monkeypatch.setattr(feed, "_announce_all", reconnected)
    caplog.set_level(logging.WARNING, logger=notify.__name__)
    feed.start()
    try:
        _until(lambda: len(connections) == 1, timeout=5.0)
        with psycopg.connect(libpq_url(db_url), autocommit=True) as admin:
            for cuts in (1, 2, 3):
                first_wait = len(waits.delays)
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchall()
                assert cut == [(True,)]
                _until(lambda cuts=cuts: len(connections) == 1 + cuts, timeout=30.0)
                assert feed.wait_live(1.0)
                # Each cut waited the first delay first, not the second of the last cut.
                assert waits.delays[first_wait] == 0.05, (cuts, waits.delays)
    finally:
        feed.stop()
    disconnected = [r for r in caplog.records if "change feed disconnected" in r.getMessage()]
    assert len(disconnected) == 3
