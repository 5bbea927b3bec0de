"""clients.require_sub: a per-client policy that every token request names a user

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing clients keep today's behaviour (requests without a user are allowed).
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("require_sub", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("require_sub")
