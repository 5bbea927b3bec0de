"""The storage of the failed-authentication limits (``AUTHSERVER_RATE_LIMIT_STORAGE``):
opened the same way by the web layer's limits (``web/limits.py``) and checked by ``serve``
at start, which therefore needs no web module for it."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from urllib.parse import unquote
from urllib.parse import urlsplit

from limits.storage import MemoryStorage
from limits.storage import Storage
from limits.storage import storage_from_string

from authserver.errors import ConfigError
from authserver.settings import Settings
from authserver.settings import redact_url

log = logging.getLogger(__name__)

#: Timeouts for the Redis client: a blackholed Redis must not stall the token endpoint.
REDIS_OPTIONS: dict[str, str | int] = {"socket_connect_timeout": 1, "socket_timeout": 1}
#: Seconds between two sweeps of the ``memory://`` storage for keys that count nothing.
MEMORY_SWEEP_INTERVAL = 10.0


class ForgetfulMemoryStorage(MemoryStorage):
    """``limits``' memory storage, forgetting the keys whose entries have all expired.

    ``MemoryStorage`` (limits 5) trims the expired entries of a moving window but keeps
    the key, with an empty list, for the life of the process. There is one key per
    presented ``client_id`` and per source address, and ids are free to invent, so every
    bogus id a worker was ever sent stayed in its memory. On a failure at most every
    :data:`MEMORY_SWEEP_INTERVAL` seconds, this drops the keys whose newest entry has
    left its window: memory stays bounded by the failures the windows still count.
    Redis expires its keys itself.

    The same sweep trims the expired entries of the keys it keeps, in place of
    ``MemoryStorage``'s own pass, which never runs here. That pass went over every key
    10 ms after each entry added: with many keys (a stranger sending made-up ids from many
    addresses) and failures still arriving, the passes ran back to back, most of a core
    holding the GIL the worker's requests need (60,000 keys: a failure cost 14 ms of the
    worker's CPU instead of 2 ms).
    """

    def __init__(self, uri: str | None = None) -> None:
        super().__init__(uri)
        self.timer.cancel()  # the pass MemoryStorage starts at once
        # acquire_entry adds to a key's list after setdefault(); a sweep must not drop the
        # key in between.
        self._sweep_lock = threading.Lock()
        self._next_sweep = time.monotonic() + MEMORY_SWEEP_INTERVAL

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        with self._sweep_lock:
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + MEMORY_SWEEP_INTERVAL
                self._sweep()
            return super().acquire_entry(key, limit, expiry, amount)

    # MemoryStorage's calls to its private self.__schedule_expiry() resolve to this name.
    def _MemoryStorage__schedule_expiry(self) -> None:
        """Never schedule ``MemoryStorage``'s pass over every key (see the class): the
        moving window reads only the entries within it, and :meth:`_sweep` trims the rest.
        """

    def _sweep(self) -> None:
        now = time.time()
        for key in list(self.events):
            # The per-key lock is the one acquire_entry holds while it adds.
            with self.locks[key]:
                entries = self.events.get(key)
                if entries is None:
                    continue
                # Newest first, one window per key: the entries still counted come first.
                alive = bisect.bisect_left(entries, -now, key=lambda entry: -entry.expiry)
                if alive:
                    # A new list, as MemoryStorage's pass made one: a test of the window
                    # reads the list without the lock, and must not see it shrink.
                    self.events[key] = entries[:alive]
                else:
                    del self.events[key]
                    self.locks.pop(key, None)


def open_storage(uri: str) -> Storage:
    """The ``limits`` storage for *uri*, with short timeouts for Redis."""
    if uri == "memory://":  # settings.py normalises every memory URL to this
        return ForgetfulMemoryStorage(uri)
    options = dict(REDIS_OPTIONS) if uri.startswith(("redis", "rediss")) else {}
    storage = storage_from_string(uri, **options)
    if not isinstance(storage, Storage):
        # An async+ scheme: settings.py accepts none, so this is a programming error.
        raise ConfigError(f"AUTHSERVER_RATE_LIMIT_STORAGE: {redact_url(uri)} is not supported")
    return storage


def check_storage(settings: Settings) -> None:
    """Refuse to start when the configured storage is unreachable (for ``serve``, in the
    master process, before any worker starts; at run time the limits fail open).

    :raises ConfigError: one line naming ``AUTHSERVER_RATE_LIMIT_STORAGE``.
    """
    if settings.auth_failures_per_client is None and settings.auth_failures_per_address is None:
        return
    uri = settings.rate_limit_storage
    try:
        storage = open_storage(uri)
        reachable = storage.check()
    except Exception as exc:
        # The type only: the message of a client library may repeat the URL and its password.
        raise ConfigError(
            f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot use {redact_url(uri)}: {type(exc).__name__}"
        ) from None
    if not reachable:
        raise ConfigError(
            f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot reach {redact_url(uri)}{_why(storage, uri)}"
        )
    if uri == "memory://" and settings.workers != 1:
        # Here, in serve's main process: once per start, not once per worker (and again
        # for each worker granian respawns).
        log.warning(
            "AUTHSERVER_RATE_LIMIT_STORAGE is memory://: each worker process counts "
            "failed authentications on its own; use Redis for one limit across workers"
        )


def _why(storage: Storage, uri: str) -> str:
    """Why *storage* failed its check, as ``": <type>: <message>"``, or nothing.

    ``Storage.check`` answers only yes or no; for a Redis storage the client's own ping
    says why ("DB index is out of range", "Connection refused", an authentication error),
    which is what the operator needs: the storage is often reachable and something else
    is wrong. The URL's password is masked wherever the message repeats it."""
    ping = getattr(getattr(storage, "storage", None), "ping", None)
    if not callable(ping):
        return ""
    try:
        ping()
    except Exception as exc:
        message = " ".join(str(exc).split())
        password = urlsplit(uri).password
        for secret in {password, unquote(password)} if password else ():
            message = message.replace(secret, "***")
        return f": {type(exc).__name__}: {message[:200]}"
    return ""
