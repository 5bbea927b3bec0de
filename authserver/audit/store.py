"""The storage interface for audit events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery

#: The events that record a new signing key, each naming it by ``kid`` in its detail.
KEY_CREATION_ACTIONS: tuple[str, ...] = ("key.created", "key.rotated")


class AuditStore(Protocol):
    def add(self, event: AuditEvent) -> None: ...

    def add_many(self, events: Sequence[AuditEvent]) -> None:
        """Add *events* in one statement where the store can (the batched token.issued
        records: one executemany instead of one statement per event)."""

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        """Matching events, newest first, at most ``query.limit``."""

    def purge(self, before: float, limit: int | None = None) -> int:
        """Delete events older than *before*, the oldest first and at most *limit* of them
        (all when ``None``); returns how many."""

    def key_events(self) -> list[AuditEvent]:
        """Every :data:`KEY_CREATION_ACTIONS` event, in no particular order: a few a
        month, found through the index on ``action`` (never a scan of the token records)."""

    def add_key_events_once(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Add each of *events* (key creation records) whose ``detail["kid"]`` no
        :data:`KEY_CREATION_ACTIONS` event names yet, checked after taking a lock that
        every call takes (to the end of the unit of work), so that processes adding the
        same key's record at once add it once. Returns the events added."""
