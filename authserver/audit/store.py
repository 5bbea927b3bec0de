"""The storage interface for audit events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery

#: The events of a signing key's life, each naming the key by ``kid`` in its detail, and
#: what each records: its creation (``key.created``, ``key.rotated``) or its retirement.
KEY_EVENTS: dict[str, str] = {
    "key.created": "created",
    "key.rotated": "created",
    "key.retired": "retired",
}


def key_record(event: AuditEvent) -> tuple[str, str | None]:
    """What a :data:`KEY_EVENTS` event records, of which key: ``("created", kid)``."""
    return KEY_EVENTS[event.action], event.detail.get("kid")


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
        """Every :data:`KEY_EVENTS` event, in no particular order: a few a month, found
        through the index on ``action`` (never a scan of the token records)."""

    def add_key_events_once(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Add each of *events* (:data:`KEY_EVENTS` events) unless a stored event records
        the same of the same key (:func:`key_record`), checked after taking a lock that
        every call takes (to the end of the unit of work), so that processes adding the
        same key's record at once add it once. Returns the events added."""
