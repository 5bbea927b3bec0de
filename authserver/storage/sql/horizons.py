"""Purge horizons (``PURGE_HORIZONS``): per kind of record, the latest ``exp`` among the
records ever forgotten.

A record is forgotten once it expired by the clock of the process forgetting it (a purge,
a status-list block leased again). Another instance's clock, or this host's after NTP
stepped it back, may read earlier than that: a token or assertion whose record is gone
is then live again by ``exp``. The horizon says which records may be gone: whatever
expires at or before it counts as expired. It is the latest ``exp`` actually forgotten,
not the clock's reading, so a clock stepped far forward and back raises it no further than
the records it held, and the horizon is raised in the same transaction as the records go:
a reader that finds a record missing because it was deleted finds the raised horizon too
(read in the same statement, or after).
"""

from __future__ import annotations

import threading

from sqlalchemy import Connection
from sqlalchemy import ScalarSelect
from sqlalchemy import Table
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update

from authserver.storage.sql.engine import insert_or_ignore
from authserver.storage.sql.tables import PURGE_HORIZONS


def raise_horizon(conn: Connection, name: str, forgotten: float) -> None:
    """Record that a record of *name* expiring at *forgotten* was forgotten: the horizon
    becomes the higher of the two (never lowered)."""
    if insert_or_ignore(conn, PURGE_HORIZONS, {"name": name, "horizon": forgotten}):
        return
    conn.execute(
        update(PURGE_HORIZONS)
        .where(PURGE_HORIZONS.c.name == name, PURGE_HORIZONS.c.horizon < forgotten)
        .values(horizon=forgotten)
    )


def purge_expired(conn: Connection, table: Table, name: str, before: float) -> int:
    """Delete the rows of *table* whose ``expires_at`` is before *before* and raise the
    horizon of *name* to the latest of them; returns how many were deleted."""
    expires_at = table.c.expires_at
    latest = conn.scalar(select(func.max(expires_at)).where(expires_at < before))
    if latest is None:
        return 0
    # Up to the latest read, not to *before*: a row written since that read with a later
    # exp is left for the next purge rather than deleted beyond the horizon.
    deleted = conn.execute(delete(table).where(expires_at <= latest)).rowcount
    raise_horizon(conn, name, float(latest))
    return int(deleted or 0)


def horizon_of(name: str) -> ScalarSelect[float]:
    """The horizon of *name* as a scalar subquery (NULL before anything was forgotten)."""
    return select(PURGE_HORIZONS.c.horizon).where(PURGE_HORIZONS.c.name == name).scalar_subquery()


class SeenHorizon:
    """The highest horizon of one kind this process has read. It only rises, so an ``exp``
    at or before :attr:`value` counts as expired without a query; a read of the stored
    horizon is passed to :meth:`see`."""

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()

    @property
    def value(self) -> float:
        return self._value

    def see(self, stored: float | None) -> float:
        """Take a read of the stored horizon (``None`` before anything was forgotten);
        returns the highest seen."""
        with self._lock:
            if stored is not None and stored > self._value:
                self._value = float(stored)
            return self._value
