"""signing_keys.retention: how long a key stays published after it stops signing, recorded
with the key, so that lowering the token lifetime limit never drops a key whose tokens
were issued under the old one

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("retention", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("retention")
