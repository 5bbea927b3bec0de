"""The storage interface for signing keys. Implementations: ``storage.files.keys``
(a directory, the default) and ``storage.sql.keys`` (the database)."""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AbstractContextManager
from typing import Protocol

from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.records import Scan


class KeyStore(Protocol):
    """Persistence of signing keys, shared by every worker and instance."""

    def lock(self) -> AbstractContextManager[None]:
        """Hold an exclusive lock across processes and hosts sharing the store.

        Every change to the key set happens inside it, and reads inside it see every
        change committed before it was taken. It is released when the context exits (for
        the SQL store: at the end of the surrounding transaction).
        """

    def list(self) -> list[SigningKey]:
        """Every stored key that can be read, in no particular order.

        Like :meth:`scan`, it never shows part of a change made under :meth:`lock`: a
        reader outside the lock sees the key set as it was before the change or after it.
        """

    def scan(self) -> Scan[SigningKey]:
        """Every stored key that can be read, and every record that cannot (by name).

        An unreadable record never makes this raise: it is skipped and reported.
        """

    def add(self, key: SigningKey) -> None:
        """Store a new key."""

    def update(self, key: SigningKey) -> None:
        """Replace the stored key with the same kid."""

    def delete(self, kid: Kid) -> None:
        """Forget a key entirely."""

    def version(self) -> str:
        """A cheap token that changes whenever the key set changes (for caches)."""

    def stamp(self) -> Hashable | None:
        """Cheaper than :meth:`version`, for a check on every request: a value equal to one
        returned before only if the key set has not changed since. ``None`` when the store
        has no such value (then caches check :meth:`version` every ``cache_seconds``, or
        follow the change feed). A value that can equal nothing (a fresh ``object()``) when
        the store cannot tell right now: the caller then reads :meth:`version`."""
