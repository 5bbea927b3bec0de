"""Two operator changes to one client at once, from two processes sharing the database
(two instances, or the CLI beside a server): neither undoes the other.

A change reads the client and writes it back whole. When the second change committed
between the first one's read and its write, the first wrote back the copy it had read:
a ``clients disable`` (the incident path) answered success while the client stayed
enabled, because a ``rotate-secret`` or an ``update`` ran at the same moment elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from authserver.clock import FixedClock
from authserver.container import Services
from authserver.settings import Settings
from tests.conftest import make_services

pytestmark = pytest.mark.integration


class PausingClock(FixedClock):
    """A clock whose next reading, once armed, waits until it is released: a change reads
    the time after it has read the client and before it writes it back, so the test can
    hold it there while the other process changes the client."""

    def __init__(self) -> None:
        super().__init__(time.time())
        self.armed = False
        self.reached = threading.Event()
        self.release = threading.Event()

    def now(self) -> float:
        if self.armed:
            self.armed = False
            self.reached.set()
            assert self.release.wait(10), "never released"
        return super().now()


@pytest.fixture
def two(settings: Settings) -> Iterator[tuple[Services, Services, PausingClock]]:
    """Two service graphs on one database, as two processes have; the first on a
    pausing clock."""
    clock = PausingClock()
    first = make_services(settings, clock=clock)
    second = make_services(settings)
    yield first, second, clock
    first.close()
    second.close()


def _rotate(services: Services, client_id: str) -> None:
    with services.unit_of_work():
        services.clients.rotate_secret(client_id, grace=3600)


def _rename(services: Services, client_id: str) -> None:
    with services.unit_of_work():
        services.clients.update(client_id, name="renamed")


@pytest.mark.parametrize("change", [_rotate, _rename], ids=["rotate-secret", "update"])
def test_a_disable_during_another_change_stays_disabled(
    two: tuple[Services, Services, PausingClock], change: Callable[[Services, str], None]
) -> None:
    first, second, clock = two
    with second.unit_of_work():
        client, _secret = second.clients.create(name="backend")
    client_id = str(client.client_id)

    def disable() -> None:
        with second.unit_of_work():
            second.clients.set_enabled(client_id, False)

    clock.armed = True
    with ThreadPoolExecutor(2) as pool:
        changing = pool.submit(change, first, client_id)
        assert clock.reached.wait(10), "the change never read the clock"
        disabling = pool.submit(disable)
        # Give the disable the time to commit, if nothing holds it back.
        time.sleep(0.5)
        clock.release.set()
        changing.result(timeout=30)
        disabling.result(timeout=30)

    with second.unit_of_work():
        stored = second.clients.get(client_id)
    assert not stored.enabled, "the disable was undone by the change made at the same time"
    if change is _rename:
        assert stored.name == "renamed"
    else:
        assert stored.secret_hash != client.secret_hash
