"""audit_events.id: a 64-bit integer on PostgreSQL, as it always was on SQLite

The id was a PostgreSQL ``serial`` (a 32-bit ``integer`` fed by a sequence that stops at
2^31 - 1). Ids are never reused, retention or not: every token issued takes one, so at 50
tokens a second the sequence ran out after about 500 days, and from then on every audit
write failed on PostgreSQL only (``token.issued`` records stayed unwritten, so revoking a
user's tokens found none of them, and every operator action answered 500). On SQLite the
column is the 64-bit rowid and nothing changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _sequence_as(type_name: str) -> str:
    """SQL that gives the sequence feeding ``audit_events.id`` the type *type_name*: the
    sequence keeps its own type and maximum (2^31 - 1) when the column changes, and ``AS``
    moves a maximum that was the old type's to the new type's. One statement that finds
    the sequence itself, in whatever schema the connection works in."""
    return f"""
        DO $$
        DECLARE seq text := pg_get_serial_sequence('audit_events', 'id');
        BEGIN
            IF seq IS NOT NULL THEN
                EXECUTE format('ALTER SEQUENCE %s AS {type_name}', seq);
            END IF;
        END $$
    """


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: INTEGER PRIMARY KEY is the rowid, 64 bits already
    op.alter_column(
        "audit_events",
        "id",
        type_=sa.BigInteger(),
        existing_type=sa.Integer(),
        existing_nullable=False,
    )
    op.execute(_sequence_as("BIGINT"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_sequence_as("INTEGER"))
    op.alter_column(
        "audit_events",
        "id",
        type_=sa.Integer(),
        existing_type=sa.BigInteger(),
        existing_nullable=False,
    )
