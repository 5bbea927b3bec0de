"""Stored records that cannot be read, and how a store reports them.

One bad record (a hand-edited key file, a row written by a buggy tool, a half-restored
backup) must not take the service down: a store skips it, reports it by name in a
:class:`Scan`, and the services say so once in the log, in ``/readyz`` and in ``keys list``
or ``clients list``. Only what the service cannot do without (a usable signing key) stops
it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Generic
from typing import TypeVar

from authserver.errors import AuthServerError

T = TypeVar("T")


class UnreadableRecord(AuthServerError):
    """A stored record that cannot be decoded. *name* says where it is (a file name, a
    table and primary key); *reason* what is wrong, never the record's content (it may
    hold key material)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableRecord) and (self.name, self.reason) == (
            other.name,
            other.reason,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.reason))


@dataclass(frozen=True)
class Scan(Generic[T]):
    """Every record of a store: those that could be read, and those that could not."""

    records: list[T]
    unreadable: list[UnreadableRecord] = field(default_factory=list)


class ReportOnce:
    """Logs each unreadable record once per process: a bad record is read again whenever
    a cache is refilled, and the log must not repeat the same line for ever."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._seen: set[UnreadableRecord] = set()
        self._lock = threading.Lock()

    def __call__(self, unreadable: Iterable[UnreadableRecord]) -> None:
        for record in unreadable:
            with self._lock:
                if record in self._seen:
                    continue
                self._seen.add(record)
            self._log.error("skipping unreadable %s %s", self._what, record)
