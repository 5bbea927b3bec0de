"""PostgreSQL ``LISTEN/NOTIFY``: the change feed that spares the token path a round trip.

Every change to a versioned table (``bump_counter`` in ``engine.py``: clients, signing keys,
status lists) also runs ``pg_notify('authserver_changes', <name>)`` in its transaction;
PostgreSQL delivers it at commit to every session listening on the channel. Each worker
process holds one listening connection (:class:`PostgresChangeFeed`, a daemon thread) and
calls the subscribers of the name, which drop their cached view.

Correctness never depends on it: :meth:`PostgresChangeFeed.live` is true only while the
connection is known to work (a heartbeat query every :data:`HEARTBEAT` seconds succeeded
within :data:`STALE_AFTER` seconds, so even a connection that died silently stops counting
within that bound), and callers fall back to reading the store's version on every request
while it is false. After every (re)connection, once ``LISTEN`` is in place, every
subscriber is called, since announcements made while the feed was down were missed. The
connection is re-established with exponential backoff (:data:`BACKOFF`), which starts from
its first delay again at each new disconnection, logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

#: The notification channel (one per database; names are the ``locks`` counter names).
CHANNEL = "authserver_changes"
#: The listening connection's ``application_name`` (how an operator spots it in
#: ``pg_stat_activity``).
APPLICATION_NAME = "authserver-change-feed"
#: Seconds between heartbeat queries on the listening connection.
HEARTBEAT = 0.2
#: The heartbeat query. It runs on the listening connection, so a notification can arrive
#: while it does: psycopg 3.2.4 and later (the floor in pyproject.toml) keep it for the
#: next ``notifies()``; earlier versions drop it, and the worker would go on serving a
#: disabled client, or a rotated secret, until the next change.
HEARTBEAT_QUERY = "SELECT 1"
#: The feed is not live when the last successful heartbeat is older than this (seconds).
STALE_AFTER = 0.6
#: Reconnection delays (seconds), the last one repeated.
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def libpq_url(url: str) -> str:
    """The libpq connection URI for a SQLAlchemy ``postgresql[+driver]://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresChangeFeed:
    """One listening connection per process, in a daemon thread (see the module docstring)."""

    def __init__(self, url: str, connect_args: dict[str, Any] | None = None) -> None:
        self._url = libpq_url(url)
        self._connect_args = connect_args or {}
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._last_ok = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the ChangeFeed protocol ---------------------------------------------------------

    def live(self) -> bool:
        return time.monotonic() - self._last_ok < STALE_AFTER

    def subscribe(self, name: str, callback: Callable[[], None]) -> None:
        self._subscribers.setdefault(name, []).append(callback)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="authserver-change-feed", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: the thread leaves within one heartbeat and closes its connection."""
        self._stop.set()
        self._last_ok = float("-inf")
        if self._thread is not None:
            self._thread.join(timeout=2)

    def wait_live(self, timeout: float) -> bool:
        """Wait until the feed is live (for start-up and tests); True if it became live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.live():
                return True
            time.sleep(0.02)
        return self.live()

    # -- the listening thread ------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:
                if self._last_ok > float("-inf"):
                    # It was listening: a new disconnection, retried at the first delay
                    # and logged, not one more failure of the last outage.
                    failures = 0
                self._last_ok = float("-inf")
                if self._stop.is_set():
                    return
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                if failures == 0:
                    # The type only: a driver message can carry the connection string.
                    log.warning(
                        "change feed disconnected (%s); caches check the database on every "
                        "request until it is back",
                        type(exc).__name__,
                    )
                failures += 1
                self._stop.wait(delay)

    def _listen(self) -> None:
        # Start-up: a worker on SQLite never loads psycopg (about 9 MiB per process).
        import psycopg

        with psycopg.connect(
            self._url, autocommit=True, application_name=APPLICATION_NAME, **self._connect_args
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            # Anything announced while we were not listening is lost: start afresh.
            self._announce_all()
            self._last_ok = time.monotonic()
            log.info("change feed listening")
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=HEARTBEAT):
                    self._announce(notify.payload)
                conn.execute(HEARTBEAT_QUERY)
                self._last_ok = time.monotonic()

    def _announce(self, name: str) -> None:
        for callback in self._subscribers.get(name, ()):
            self._call(callback)

    def _announce_all(self) -> None:
        for callbacks in list(self._subscribers.values()):
            for callback in callbacks:
                self._call(callback)

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("change feed: a subscriber failed")
