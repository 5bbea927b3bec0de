"""locks.counter: a 64-bit integer on PostgreSQL, as it always was on SQLite

The counters are the version numbers caches compare, moved by every change they cover:
``status_version`` by every revocation. As a PostgreSQL ``integer`` the counter stopped at
2^31 - 1 (at 100 revocations a second, after about 250 days), and from then on every
revocation failed there with "integer out of range" (``/revoke`` answered 500 and the
token stayed valid), while SQLite's 64-bit integers went on.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite stores every INTEGER in up to 64 bits already
    op.alter_column(
        "locks",
        "counter",
        type_=sa.BigInteger(),
        existing_type=sa.Integer(),
        existing_nullable=False,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column(
        "locks",
        "counter",
        type_=sa.Integer(),
        existing_type=sa.BigInteger(),
        existing_nullable=False,
    )
