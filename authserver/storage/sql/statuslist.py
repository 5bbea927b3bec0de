"""SqlStatusListStore: leases and revoked entries of the Token Status Lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import insert_many_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.engine import unbounded_statements
from authserver.storage.sql.horizons import SeenHorizon
from authserver.storage.sql.horizons import purge_expired
from authserver.storage.sql.horizons import raise_horizon
from authserver.storage.sql.tables import AUDIT_EVENTS
from authserver.storage.sql.tables import STATUS_BLOCKS
from authserver.storage.sql.tables import STATUS_REVOCATIONS
from authserver.tokens.statuslist import BLOCK_SIZE
from authserver.tokens.statuslist import BLOCKS_PER_LIST
from authserver.tokens.statuslist import Block
from authserver.tokens.statuslist import StatusEntry

#: The ``locks`` row that serialises leases (and whose counter nobody caches).
LEASE_LOCK = "status_leases"
#: The ``locks`` counter that versions the published lists.
VERSION = "status_version"
#: The ``purge_horizons`` row of ``status_revocations`` (its purges and the new leases
#: that clear a block's bits).
HORIZON = "status"


@maps_storage_errors
class SqlStatusListStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._horizon = SeenHorizon()

    def lease_block(
        self, now: float, hold_until: float, release: tuple[Block, float] | None
    ) -> Block:
        # Its own connection and transaction, committed here: the caller (a token request)
        # may roll back, and indices from a lease that was never committed could be leased
        # again by another process. On SQLite this needs the one write lock, so the
        # caller's unit of work must not hold it: it would wait for itself until the busy
        # timeout. No token path writes before it allocates: a private_key_jwt
        # assertion's jti commits in its own transaction (revocations.py) and the
        # token.issued audit record comes after the token
        # (tests/integration/test_statuslist_lease_sqlite.py).
        blocks, revoked = STATUS_BLOCKS.c, STATUS_REVOCATIONS.c
        with self._db.engine.begin() as conn:
            # Serialise leases across processes and instances (row lock on PostgreSQL,
            # the write lock on SQLite) so two never take the same free block.
            bump_counter(conn, LEASE_LOCK)
            if release is not None:
                old, until = release
                conn.execute(
                    update(STATUS_BLOCKS)
                    .where(blocks.list_id == old.list_id, blocks.block == old.block)
                    .where(blocks.held_until > until)
                    .values(held_until=until)
                )
            free = conn.execute(
                select(blocks.list_id, blocks.block)
                .where(blocks.held_until < now)
                .order_by(blocks.list_id, blocks.block)
                .limit(1)
            ).first()
            if free is not None:
                block = Block(int(free[0]), int(free[1]))
                conn.execute(
                    update(STATUS_BLOCKS)
                    .where(blocks.list_id == block.list_id, blocks.block == block.block)
                    .values(leased_at=now, held_until=hold_until)
                )
                # Every token that held an index here has expired: its bit goes back to 0.
                # By this clock: one stepped back reads those tokens as live again, so
                # the horizon says which may have lost their bit.
                in_block = (
                    revoked.list_id == block.list_id,
                    revoked.idx >= block.first,
                    revoked.idx < block.first + BLOCK_SIZE,
                )
                latest = conn.scalar(select(func.max(revoked.expires_at)).where(*in_block))
                if latest is not None:
                    conn.execute(delete(STATUS_REVOCATIONS).where(*in_block))
                    raise_horizon(conn, HORIZON, float(latest))
                return block
            last = conn.execute(
                select(blocks.list_id, blocks.block)
                .order_by(blocks.list_id.desc(), blocks.block.desc())
                .limit(1)
            ).first()
            if last is None:
                block = Block(1, 0)
            elif last[1] + 1 < BLOCKS_PER_LIST:
                block = Block(int(last[0]), int(last[1]) + 1)
            else:
                block = Block(int(last[0]) + 1, 0)
            conn.execute(
                insert(STATUS_BLOCKS).values(
                    list_id=block.list_id, block=block.block, leased_at=now, held_until=hold_until
                )
            )
            if block.block == 0:
                bump_counter(conn, VERSION)  # a new list: servers' list of lists changes
            return block

    def revoke(self, entries: Iterable[StatusEntry], now: float) -> int:
        conn = self._db.connection()
        # One row per (list, idx), as the table's key keeps them, with the latest expiry
        # named for it (its bit stays published at least that long); written a batch of
        # rows per statement, not one per round trip: "every live token" of a user or a
        # client may be thousands.
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        for entry in entries:
            row = rows.setdefault(
                (entry.list_id, entry.idx),
                {"list_id": entry.list_id, "idx": entry.idx, "revoked_at": now, "expires_at": 0},
            )
            row["expires_at"] = max(row["expires_at"], entry.expires_at)
        # In key order: an INSERT waits for a row another transaction has just written with
        # the same key, so two revocations writing shared rows in different orders (a
        # user's tokens and a client's, gathered from the audit trail in whatever order
        # the plan reads it) waited each for the other until PostgreSQL aborted one
        # ("deadlock detected", a 503). Taken in one order, one waits for the other.
        added = insert_many_or_ignore(conn, STATUS_REVOCATIONS, [rows[k] for k in sorted(rows)])
        if added:
            bump_counter(conn, VERSION)
        return added

    def revoked_indices(self, list_id: int, *, live_at: float | None = None) -> list[int]:
        c = STATUS_REVOCATIONS.c
        stmt = select(c.idx).where(c.list_id == list_id)
        if live_at is not None:
            stmt = stmt.where(c.expires_at >= live_at)
        with self._db.unit_of_work():
            return [int(i) for i in self._db.connection().scalars(stmt)]

    def is_revoked(self, list_id: int, idx: int, expires_at: float | None = None) -> bool:
        if expires_at is not None and expires_at <= self._horizon.value:
            return True
        # The bit and the horizon in one statement, one snapshot: a purge or a new lease
        # clears the one and raises the other in one commit.
        row = self._db.read_one(
            "SELECT (SELECT 1 FROM status_revocations WHERE list_id = ? AND idx = ?),"
            " (SELECT horizon FROM purge_horizons WHERE name = ?)",
            list_id,
            idx,
            HORIZON,
        )
        found, stored = row if row is not None else (None, None)
        horizon = self._horizon.see(stored)
        return found is not None or (expires_at is not None and expires_at <= horizon)

    def list_ids(self) -> list[int]:
        c = STATUS_BLOCKS.c
        stmt = select(c.list_id).distinct().order_by(c.list_id)
        with self._db.unit_of_work():
            return [int(i) for i in self._db.connection().scalars(stmt)]

    def version(self) -> int:
        return self._db.read_counter(VERSION)

    def issued(
        self,
        *,
        since: float,
        sub: str | None = None,
        client_id: str | None = None,
        until: float | None = None,
    ) -> list[StatusEntry]:
        c = AUDIT_EVENTS.c
        conditions = [c.action == "token.issued", c.at >= since]
        if until is not None:
            conditions.append(c.at <= until)
        if sub is not None:
            conditions.append(c.sub == sub)
        if client_id is not None:
            conditions.append(c.client_id == client_id)
        stmt = select(c.detail).where(and_(*conditions))
        conn = self._db.connection()
        # Only an operator's revocation of every live token of a user or a client, and the
        # schedule's catch-up, read this, never a request: a client issuing thousands of
        # tokens a second has millions of records in a token lifetime, and the disable of a
        # compromised client must not end in a statement timeout. For the rest of its
        # transaction, so the revocation rows it leads to are written whole too.
        unbounded_statements(conn)
        entries = []
        for detail in conn.scalars(stmt):
            if not isinstance(detail, dict):
                continue
            list_id, idx, exp = (
                detail.get("status_list"),
                detail.get("status_idx"),
                detail.get("exp"),
            )
            if type(list_id) is int and type(idx) is int and isinstance(exp, int | float):
                entries.append(StatusEntry(list_id, idx, float(exp)))
        return entries

    def purge(self, now: float) -> int:
        conn = self._db.connection()
        unbounded_statements(conn)  # housekeeping, never a request
        return purge_expired(conn, STATUS_REVOCATIONS, HORIZON, now)
