"""In-memory stores, for unit tests only (they share nothing between processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.errors import Conflict
from authserver.errors import NotFound
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey


class InMemoryClientStore:
    def __init__(self) -> None:
        self._clients: dict[ClientId, Client] = {}
        self._version = 0

    def version(self) -> int:
        return self._version

    def add(self, client: Client) -> None:
        if client.client_id in self._clients:
            raise Conflict(f"client {client.client_id} already exists")
        self._clients[client.client_id] = client
        self._version += 1

    def get(self, client_id: ClientId) -> Client | None:
        return self._clients.get(client_id)

    def list(self) -> list[Client]:
        return sorted(self._clients.values(), key=lambda c: (c.created_at, c.client_id))

    def update(self, client: Client) -> None:
        if client.client_id not in self._clients:
            raise NotFound(f"no client with id {client.client_id!r}")
        self._clients[client.client_id] = client
        self._version += 1

    def delete(self, client_id: ClientId) -> None:
        if self._clients.pop(client_id, None) is None:
            raise NotFound(f"no client with id {client_id!r}")
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
        return list(self._keys.values())

    def add(self, key: SigningKey) -> None:
        self._keys[key.kid] = key
        self._version += 1

    def update(self, key: SigningKey) -> None:
        if key.kid not in self._keys:
            raise NotFound(f"no signing key with kid {key.kid!r}")
        self._keys[key.kid] = key
        self._version += 1

    def delete(self, kid: Kid) -> None:
        self._keys.pop(kid, None)
        self._version += 1

    def version(self) -> str:
        return str(self._version)
