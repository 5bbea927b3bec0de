"""Record and read the audit trail."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.store import AuditStore
from authserver.clock import Clock

#: Detail keys that must never be recorded, whatever a caller passes.
_FORBIDDEN = frozenset(
    {
        "client_secret",
        "secret",
        "token",
        "access_token",
        "private_key",
        "passphrase",
        "password",
        "assertion",
        "client_assertion",
    }
)


#: Who is acting, set by each boundary (CLI command, admin API request, scheduler tick,
#: token request), so services record the right actor without being told at every call.
_actor: contextvars.ContextVar[str] = contextvars.ContextVar("authserver_actor", default="system")


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str:
    return _actor.get()


class AuditService:
    def __init__(self, store: AuditStore, clock: Clock, *, retention: int) -> None:
        self._store = store
        self._clock = clock
        self.retention = retention

    def record(
        self,
        actor: str | None,
        action: str,
        *,
        client_id: str | None = None,
        sub: str | None = None,
        aud: str | list[str] | None = None,
        jti: str | None = None,
        **detail: Any,
    ) -> None:
        if isinstance(aud, list):
            aud = " ".join(aud)
        clean = {k: v for k, v in detail.items() if k not in _FORBIDDEN and v is not None}
        self._store.add(
            AuditEvent(
                at=self._clock.now(),
                actor=actor or current_actor(),
                action=action,
                client_id=client_id,
                sub=sub,
                aud=aud,
                jti=jti,
                detail=clean,
            )
        )

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        return self._store.query(query)

    def purge(self) -> int:
        """Delete events older than the retention period."""
        return self._store.purge(self._clock.now() - self.retention)
