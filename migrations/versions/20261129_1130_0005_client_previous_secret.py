"""clients.previous_secret_hash/_expires_at: the old secret of a rotation with a grace
period (``clients rotate-secret --grace``), accepted until it expires

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing clients have no grace period running: both NULL.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("previous_secret_hash", sa.String(100), nullable=True))
        batch.add_column(sa.Column("previous_secret_expires_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_hash")
