"""In-memory stores, for tests only (they share nothing between processes): unit tests,
and the reference implementation the store contract suites run beside the SQL stores."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
from collections.abc import Hashable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.store import KEY_EVENTS
from authserver.audit.store import key_record
from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import listing_order
from authserver.errors import Conflict
from authserver.errors import not_found
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.records import Scan


class InMemoryClientStore:
    def __init__(self) -> None:
        self._clients: dict[ClientId, Client] = {}
        self._version = 0
        self._lock = threading.RLock()

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def version(self) -> int:
        return self._version

    def add(self, client: Client) -> None:
        if client.client_id in self._clients:
            raise Conflict(f"client {client.client_id} already exists")
        self._clients[client.client_id] = client
        self._version += 1

    def get(self, client_id: ClientId) -> Client | None:
        return self._clients.get(client_id)

    def get_by_secret_hash(self, secret_hash: str) -> Client | None:
        for client in self._clients.values():
            if secret_hash in (client.secret_hash, client.previous_secret_hash):
                return client
        return None

    def list(self) -> list[Client]:
        return sorted(self._clients.values(), key=listing_order)

    def scan(self) -> Scan[Client]:
        return Scan(self.list())

    def update(self, client: Client) -> None:
        if client.client_id not in self._clients:
            raise not_found("client", "id", client.client_id)
        self._clients[client.client_id] = client
        self._version += 1

    def delete(self, client_id: ClientId) -> None:
        if self._clients.pop(client_id, None) is None:
            raise not_found("client", "id", client_id)
        self._version += 1


class InMemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[Kid, SigningKey] = {}
        self._lock = threading.RLock()
        self._version = 0

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def list(self) -> list[SigningKey]:
        # Under the lock: a change of several writes made under it is seen whole.
        with self._lock:
            return list(self._keys.values())

    def scan(self) -> Scan[SigningKey]:
        return Scan(self.list())

    def add(self, key: SigningKey) -> None:
        self._keys[key.kid] = key
        self._version += 1

    def update(self, key: SigningKey) -> None:
        if key.kid not in self._keys:
            raise not_found("signing key", "kid", key.kid)
        self._keys[key.kid] = key
        self._version += 1

    def delete(self, kid: Kid) -> None:
        self._keys.pop(kid, None)
        self._version += 1

    def version(self) -> str:
        return str(self._version)

    def stamp(self) -> Hashable:
        return self._version


class InMemoryRevocationStore:
    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self._assertions: dict[tuple[str, str], float] = {}
        self._horizon = 0.0
        self._lock = threading.Lock()

    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        with self._lock:
            # First revocation wins, as with the SQL store's INSERT ... ON CONFLICT DO NOTHING.
            self._revoked.setdefault(jti, expires_at)

    def is_revoked(self, jti: str, expires_at: float | None = None) -> bool:
        with self._lock:
            forgotten = expires_at is not None and expires_at <= self._horizon
            return forgotten or jti in self._revoked

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        with self._lock:
            if (client_id, jti) in self._assertions:
                return False
            self._assertions[(client_id, jti)] = expires_at
            return expires_at > self._horizon

    def horizon(self) -> float:
        return self._horizon

    def purge(self, now: float) -> int:
        with self._lock:
            revoked = [j for j, exp in self._revoked.items() if exp < now]
            used = [k for k, exp in self._assertions.items() if exp < now]
            forgotten = [self._revoked[j] for j in revoked] + [self._assertions[k] for k in used]
            for jti in revoked:
                del self._revoked[jti]
            for key in used:
                del self._assertions[key]
            self._horizon = max([self._horizon, *forgotten])
            return len(revoked) + len(used)


class InMemoryAuditStore:
    def __init__(self) -> None:
        self._events: list[AuditEvent] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, event: AuditEvent) -> None:
        self.add_many([event])

    def add_many(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self._append(events)

    def _append(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            # A deep copy of detail, as a database would keep: changing the caller's
            # dict afterwards must not change the record.
            detail = copy.deepcopy(event.detail or {})
            self._events.append(dataclasses.replace(event, id=next(self._ids), detail=detail))

    def key_events(self) -> list[AuditEvent]:
        with self._lock:
            return [copy.deepcopy(e) for e in self._events if e.action in KEY_EVENTS]

    def add_key_events_once(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        with self._lock:
            recorded = {key_record(e) for e in self._events if e.action in KEY_EVENTS}
            added = [e for e in events if key_record(e) not in recorded]
            self._append(added)
            return added

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        def matches(e: AuditEvent) -> bool:
            return (
                (query.client_id is None or e.client_id == query.client_id)
                and (query.sub is None or e.sub == query.sub)
                and (query.action is None or e.action == query.action)
                and (query.since is None or e.at >= query.since)
                and (query.until is None or e.at < query.until)
            )

        found = sorted(filter(matches, self._events), key=lambda e: (e.at, e.id), reverse=True)
        if query.before is not None:
            cursor = [(e.at, e.id) for e in self._events if e.id == query.before]
            found = [e for e in found if cursor and (e.at, e.id) < cursor[0]]
        return [copy.deepcopy(e) for e in found[: query.limit]]

    def purge(self, before: float, limit: int | None = None) -> int:
        with self._lock:
            old = sorted((e for e in self._events if e.at < before), key=lambda e: (e.at, e.id))
            gone = {id(e) for e in old[:limit]}
            self._events = [e for e in self._events if id(e) not in gone]
            return len(gone)
