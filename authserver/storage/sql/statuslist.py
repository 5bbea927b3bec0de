"""SqlStatusListStore: leases and revoked entries of the Token Status Lists."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.engine import maps_storage_errors
from authserver.storage.sql.tables import AuditEventRow
from authserver.storage.sql.tables import StatusBlockRow
from authserver.storage.sql.tables import StatusRevocationRow
from authserver.tokens.statuslist import BLOCK_SIZE
from authserver.tokens.statuslist import BLOCKS_PER_LIST
from authserver.tokens.statuslist import Block
from authserver.tokens.statuslist import StatusEntry

#: The ``locks`` row that serialises leases (and whose counter nobody caches).
LEASE_LOCK = "status_leases"
#: The ``locks`` counter that versions the published lists.
VERSION = "status_version"


@maps_storage_errors
class SqlStatusListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def lease_block(
        self, now: float, hold_until: float, release: tuple[Block, float] | None
    ) -> Block:
        # Its own session and transaction, committed here: the caller (a token request)
        # may roll back, and indices from a lease that was never committed could be leased
        # again by another process. On SQLite this needs the one write lock, so the
        # caller's unit of work must not hold it: it would wait for itself until the busy
        # timeout. No token path writes before it allocates: a private_key_jwt
        # assertion's jti commits in its own transaction (revocations.py) and the
        # token.issued audit record comes after the token
        # (tests/integration/test_statuslist_lease_sqlite.py).
        with Session(self._db.engine) as session, session.begin():
            # Serialise leases across processes and instances (row lock on PostgreSQL,
            # the write lock on SQLite) so two never take the same free block.
            bump_counter(session, LEASE_LOCK)
            if release is not None:
                old, until = release
                session.execute(
                    update(StatusBlockRow)
                    .where(StatusBlockRow.list_id == old.list_id, StatusBlockRow.block == old.block)
                    .where(StatusBlockRow.held_until > until)
                    .values(held_until=until)
                )
            free = session.execute(
                select(StatusBlockRow.list_id, StatusBlockRow.block)
                .where(StatusBlockRow.held_until < now)
                .order_by(StatusBlockRow.list_id, StatusBlockRow.block)
                .limit(1)
            ).first()
            if free is not None:
                block = Block(int(free[0]), int(free[1]))
                session.execute(
                    update(StatusBlockRow)
                    .where(
                        StatusBlockRow.list_id == block.list_id, StatusBlockRow.block == block.block
                    )
                    .values(leased_at=now, held_until=hold_until)
                )
                # Every token that held an index here has expired: its bit goes back to 0.
                session.execute(
                    delete(StatusRevocationRow).where(
                        StatusRevocationRow.list_id == block.list_id,
                        StatusRevocationRow.idx >= block.first,
                        StatusRevocationRow.idx < block.first + BLOCK_SIZE,
                    )
                )
                return block
            last = session.execute(
                select(StatusBlockRow.list_id, StatusBlockRow.block)
                .order_by(StatusBlockRow.list_id.desc(), StatusBlockRow.block.desc())
                .limit(1)
            ).first()
            if last is None:
                block = Block(1, 0)
            elif last[1] + 1 < BLOCKS_PER_LIST:
                block = Block(int(last[0]), int(last[1]) + 1)
            else:
                block = Block(int(last[0]) + 1, 0)
            session.add(
                StatusBlockRow(
                    list_id=block.list_id, block=block.block, leased_at=now, held_until=hold_until
                )
            )
            if block.block == 0:
                bump_counter(session, VERSION)  # a new list: servers' list of lists changes
            return block

    def revoke(self, entries: Iterable[StatusEntry], now: float) -> int:
        session = self._db.session()
        added = 0
        for entry in entries:
            added += insert_or_ignore(
                session,
                StatusRevocationRow,
                {
                    "list_id": entry.list_id,
                    "idx": entry.idx,
                    "revoked_at": now,
                    "expires_at": entry.expires_at,
                },
            )
        if added:
            bump_counter(session, VERSION)
        return added

    def revoked_indices(self, list_id: int) -> list[int]:
        stmt = select(StatusRevocationRow.idx).where(StatusRevocationRow.list_id == list_id)
        with self._db.unit_of_work() as session:
            return [int(i) for i in session.scalars(stmt)]

    def is_revoked(self, list_id: int, idx: int) -> bool:
        row = self._db.read_one(
            "SELECT 1 FROM status_revocations WHERE list_id = ? AND idx = ?", list_id, idx
        )
        return row is not None

    def list_ids(self) -> list[int]:
        stmt = select(StatusBlockRow.list_id).distinct().order_by(StatusBlockRow.list_id)
        with self._db.unit_of_work() as session:
            return [int(i) for i in session.scalars(stmt)]

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
        conditions = [AuditEventRow.action == "token.issued", AuditEventRow.at >= since]
        if until is not None:
            conditions.append(AuditEventRow.at <= until)
        if sub is not None:
            conditions.append(AuditEventRow.sub == sub)
        if client_id is not None:
            conditions.append(AuditEventRow.client_id == client_id)
        stmt = select(AuditEventRow.detail).where(and_(*conditions))
        entries = []
        for detail in self._db.session().scalars(stmt):
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
        result = self._db.session().execute(
            delete(StatusRevocationRow).where(StatusRevocationRow.expires_at < now)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
