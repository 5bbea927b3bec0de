"""The key schedule, run inside every server worker: no cron needed.

Each worker ticks on its own; :meth:`KeyService.tick` re-checks under the key store lock,
so however many workers and instances tick at once, each rotation happens once. The
promotion of a next key to current needs no tick at all (states follow from timestamps);
the tick only creates the next key ``publish_ahead`` before it is needed and cleans up.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from authserver.audit.service import acting_as
from authserver.container import Services
from authserver.errors import KeyStoreError
from authserver.errors import StorageUnavailable

#: Failures a tick meets in normal operation (the database away, the key store unreadable):
#: their message says what and where (the URL without its password), so they are logged
#: in one line, without a traceback, once when they begin; anything else is a bug, logged
#: with its traceback every time.
EXPECTED_FAILURES = (StorageUnavailable, KeyStoreError)

#: Expired revocations and old audit events are purged this often (seconds).
HOUSEKEEPING_INTERVAL = 3600
#: Seconds between two batches of an audit purge (housekeeping).
PURGE_PAUSE = 0.05

log = logging.getLogger(__name__)


def tick_interval(publish_ahead: int) -> float:
    """Often enough that a key due for publication is published well within its window."""
    return float(max(1.0, min(60.0, publish_ahead / 10)))


def run_once(services: Services) -> list[str]:
    """One scheduler pass: a cheap unlocked check, then the locked work if any is due."""
    with acting_as("scheduler"):
        done: list[str] = []
        with services.unit_of_work():
            due = services.keys.due()
        if due:
            with services.unit_of_work():
                done = services.keys.tick()
        # After the keys, so that a failure here never holds up a rotation: withdrawals
        # (revoke a user's or client's tokens) again, for tokens whose audit record
        # arrived late (tokens/statuslist.py, reconcile).
        with services.unit_of_work():
            services.status_lists.reconcile()
        # Its own unit of work, with no key store lock held (keys/service.py).
        services.recover_key_records()
        return done


def housekeeping(services: Services, stop: threading.Event | None = None) -> int:
    """Forget expired revocations (by jti and in the status lists) and assertion ids, and
    audit events past retention. A backlog of audit events (a lowered retention, a first
    start after days down) takes one batch after another for as long as it lasts: *stop*,
    when set, ends that between two batches (the rest waits for the next run)."""
    with services.unit_of_work():
        # Kept the clock-skew leeway past their expiry, as status-list revocations are:
        # the horizon a purge records (tokens/revocations.py) then refuses nothing that an
        # instance behind the purging one by less than that issues or accepts.
        cutoff = services.clock.now() - services.settings.key_retention_leeway
        purged = services.revocations.purge(cutoff) + services.status_lists.purge()
    # The audit trail in bounded batches, each its own transaction: the events that crossed
    # the retention in an hour are an hour of issued tokens, and one DELETE of them all
    # held SQLite's write lock (every token request's and command's) for seconds.
    cut = services.clock.now() - services.audit.retention
    while True:
        with services.unit_of_work():
            batch = services.audit.purge(cut)
        purged += batch
        if batch < services.audit.PURGE_BATCH:
            return purged
        # Let the writers that waited for this batch go first.
        if (stop or threading.Event()).wait(PURGE_PAUSE):
            return purged


class KeyScheduler:
    def __init__(self, services: Services, interval: float | None = None) -> None:
        self._services = services
        self._interval = interval or tick_interval(services.settings.key_publish_ahead)
        self._stop = threading.Event()
        #: The expected failure being reported, per task, so an outage is one line (and
        #: one when it ends), not a traceback on every tick of every worker.
        self._failing: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="authserver-keys", daemon=True)
        # A thread of its own: an audit purge works through a backlog batch after batch
        # (hours of them after a lowered retention), and on the key schedule's thread no
        # key tick (rotation, repair, status-list withdrawal) ran until it was done.
        self._housekeeping = threading.Thread(
            target=self._run_housekeeping, name="authserver-housekeeping", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._housekeeping.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # Jitter spreads the workers' ticks so they rarely contend for the lock.
        while not self._stop.wait(self._interval * random.uniform(0.5, 1.0)):  # noqa: S311
            self._attempt("key schedule tick", lambda: run_once(self._services))

    def _run_housekeeping(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_INTERVAL):
            self._attempt("housekeeping", lambda: housekeeping(self._services, self._stop))

    def _attempt(self, task: str, work: Callable[[], object]) -> None:
        """Run *work*; report an expected failure in one line when it begins (and when it
        ends), an unexpected one with its traceback."""
        try:
            work()
        except EXPECTED_FAILURES as exc:
            reason = str(exc) or type(exc).__name__
            if self._failing.get(task) != reason:
                self._failing[task] = reason
                log.warning("%s failed: %s; retrying at the next tick", task, reason)
            return
        except Exception:
            self._failing.pop(task, None)
            log.exception("%s failed; retrying at the next tick", task)
            return
        if self._failing.pop(task, None) is not None:
            log.info("%s succeeded again", task)
