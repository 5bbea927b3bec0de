"""purge_horizons: the latest exp among the records forgotten, per kind

A purge forgets the revocations and used assertion ids whose ``exp`` has passed by the
clock of the instance running it (and a status-list block leased again, its revoked bits).
Once a clock is stepped back (NTP correcting a host that ran ahead, an instance behind the
one that purged), such a token or assertion is live again by that clock while its record
is gone: a revoked token introspected as active, a captured assertion was accepted again.
Whatever is forgotten now raises the horizon here to its ``exp``, and what expires at or
before it counts as expired.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purge_horizons",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("horizon", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_purge_horizons")),
    )


def downgrade() -> None:
    op.drop_table("purge_horizons")
