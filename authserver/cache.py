"""A bounded, versioned in-process cache, and the change feed that invalidates caches.

:class:`BoundedCache` is a thread-safe map of at most ``size`` entries, least recently used
first out, whose entries belong to a *version*: reading with another version than the one
the cache holds empties it first, and a value read under an old version is never stored
under a newer one. The client cache (``clients/service.py``), the fetched client JWK sets
(``clients/jwks_fetch.py``, unversioned) and the prepared documents of the lean WSGI layer
(``web/wellknown.py``, ``web/statuslists.py``) are instances of it.

:class:`ChangeFeed` is what a store may offer so that caches need not ask it for its
version on every read: while :meth:`ChangeFeed.live` is true, every change made anywhere
is announced to the subscribers of its name within milliseconds (PostgreSQL
``LISTEN/NOTIFY``, ``storage/sql/notify.py``); while it is not, callers fall back to asking
the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Hashable
from typing import Generic
from typing import Protocol
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class BoundedCache(Generic[K, V]):
    """At most *size* entries of one version; least recently used evicted first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a cache holds at least one entry")
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._version: Hashable = _MISSING
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K, version: Hashable = None) -> tuple[bool, V | None]:
        """``(True, value)`` when *key* is cached under *version*, else ``(False, None)``
        (and, when *version* is new, the cache is emptied and takes it)."""
        with self._lock:
            if version != self._version:
                self._items.clear()
                self._version = version
                return False, None
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                return False, None
            self._items.move_to_end(key)
            return True, value  # type: ignore[return-value]

    def put(self, key: K, value: V, version: Hashable = None) -> None:
        """Store *value* if the cache still holds *version* (a value read under an older
        version is dropped: it may predate the change that moved the version on)."""
        with self._lock:
            if version != self._version:
                return
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get_or_build(self, key: K, build: Callable[[], V], version: Hashable = None) -> V:
        found, value = self.get(key, version)
        if found:
            return value  # type: ignore[return-value]
        value = build()
        self.put(key, value, version)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._version = _MISSING


class ChangeFeed(Protocol):
    """Announcements of changes made anywhere (every process, every instance)."""

    def live(self) -> bool:
        """True while announcements are known to arrive: a cache may then skip asking
        the store for its version. False while disconnected (or unsure)."""
        ...

    def subscribe(self, name: str, callback: Callable[[], None]) -> None:
        """Call *callback* when *name* changes, and whenever announcements may have been
        missed (after every (re)connection)."""
        ...
