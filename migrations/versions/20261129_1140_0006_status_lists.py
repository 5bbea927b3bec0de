"""token status lists: leased index blocks and revoked entries

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "status_blocks",
        sa.Column("list_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("block", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("leased_at", sa.Double(), nullable=False),
        sa.Column("held_until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("list_id", "block", name=op.f("pk_status_blocks")),
    )
    op.create_index(op.f("ix_status_blocks_held_until"), "status_blocks", ["held_until"])
    op.create_table(
        "status_revocations",
        sa.Column("list_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("list_id", "idx", name=op.f("pk_status_revocations")),
    )
    op.create_index(op.f("ix_status_revocations_expires_at"), "status_revocations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("status_revocations")
    op.drop_table("status_blocks")
