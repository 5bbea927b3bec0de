"""The storage interface for audit events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery


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
