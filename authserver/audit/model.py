"""An audit event. It never holds a secret, a token or key material: only identifiers."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

#: Every action the audit trail records (``authserver audit --action`` accepts these).
ACTIONS: tuple[str, ...] = (
    "token.issued",
    "token.revoked",
    "tokens.revoked",
    "client.created",
    "client.updated",
    "client.secret_rotated",
    "client.enabled",
    "client.disabled",
    "client.deleted",
    "key.created",
    "key.rotated",
    "key.retired",
)


@dataclass(frozen=True)
class AuditEvent:
    at: float
    #: ``client:<id>`` for token requests, ``cli`` or ``admin-api`` for operators,
    #: ``scheduler`` for the key schedule.
    actor: str
    #: One of :data:`ACTIONS`.
    action: str
    client_id: str | None = None
    sub: str | None = None
    aud: str | None = None
    jti: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


#: The most events one query returns (``authserver audit --limit``, ``?limit=``).
MAX_QUERY_LIMIT = 10_000


@dataclass(frozen=True)
class AuditQuery:
    client_id: str | None = None
    sub: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    #: The ``id`` of the last event of the page before: only the events listed after it
    #: (older, or as old and written earlier), so pages neither skip nor repeat an event
    #: that shares its second, or its instant, with another.
    before: int | None = None
    limit: int = 100
