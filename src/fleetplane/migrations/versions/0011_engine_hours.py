"""Ignition and engine hours in the live state.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_states") as batch:
        batch.add_column(sa.Column("ignition", sa.Boolean(), nullable=True))
        batch.add_column(
            sa.Column("engine_seconds", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("device_states") as batch:
        batch.drop_column("engine_seconds")
        batch.drop_column("ignition")
