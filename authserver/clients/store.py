"""The storage interface for clients. Implementations live in ``authserver.storage``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.records import Scan


class ClientStore(Protocol):
    """Persistence of clients. Methods run inside the caller's unit of work."""

    def add(self, client: Client) -> None:
        """Insert *client*; raises ``Conflict`` if the id exists."""

    def get(self, client_id: ClientId) -> Client | None:
        """Return the client or ``None``; raises ``UnreadableRecord`` when its stored
        record cannot be decoded."""

    def get_by_secret_hash(self, secret_hash: str) -> Client | None:
        """Return the client whose current or previous (grace-period) secret has this
        stored digest, or ``None`` (secrets are unique 256-bit values, so the digest
        identifies one client). Whether a previous secret is still valid is the caller's
        check. Raises ``UnreadableRecord`` when the stored record cannot be decoded."""

    def list(self) -> list[Client]:
        """Return every client that can be read, oldest first."""

    def scan(self) -> Scan[Client]:
        """Every client that can be read, oldest first, and every record that cannot (by
        name). An unreadable record never makes this raise."""

    def update(self, client: Client) -> None:
        """Replace the stored client with the same id; raises ``NotFound`` if absent."""

    def delete(self, client_id: ClientId) -> None:
        """Remove the client; raises ``NotFound`` if absent."""

    def lock(self) -> AbstractContextManager[None]:
        """Hold the lock that serialises changes to clients, across processes and hosts
        sharing the store, until the caller's unit of work ends (SQL) or the block exits
        (in memory). A change that reads a client and writes it back reads it under this
        lock, so two changes at once (a disable and a secret rotation) never write back a
        copy that predates the other one."""

    def version(self) -> int:
        """A number that changes with every add, update and delete, in every process
        sharing the store (one cheap read: it validates per-worker caches)."""
