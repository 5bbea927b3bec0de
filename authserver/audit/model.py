"""An audit event. It never holds a secret, a token or key material: only identifiers."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any


@dataclass(frozen=True)
class AuditEvent:
    at: float
    #: ``client:<id>`` for token requests, ``cli`` or ``admin-api`` for operators,
    #: ``scheduler`` for the key schedule.
    actor: str
    #: e.g. ``token.issued``, ``client.created``, ``key.retired``.
    action: str
    client_id: str | None = None
    sub: str | None = None
    aud: str | None = None
    jti: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    client_id: str | None = None
    sub: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
