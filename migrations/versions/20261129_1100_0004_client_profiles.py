"""client profiles and fixed claims; clients findable by secret digest

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a constraint to an existing table in place.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("profile", sa.String(32), nullable=False, server_default="oauth2")
        )
        batch.add_column(sa.Column("fixed_claims", sa.JSON(), nullable=True))
        # Secrets are unique 256-bit values; the constraint (and its index) lets a
        # Bearer-authenticating client be found by the digest of the secret it presents.
        batch.create_unique_constraint(op.f("uq_clients_secret_hash"), ["secret_hash"])


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_constraint(op.f("uq_clients_secret_hash"), type_="unique")
        batch.drop_column("fixed_claims")
        batch.drop_column("profile")
