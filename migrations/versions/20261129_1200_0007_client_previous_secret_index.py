"""index clients.previous_secret_hash: a Bearer-authenticating (``stream``) client is
found by the digest of its secret, the previous one too during a rotation's grace period

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_clients_previous_secret_hash"), "clients", ["previous_secret_hash"])


def downgrade() -> None:
    op.drop_index(op.f("ix_clients_previous_secret_hash"), table_name="clients")
