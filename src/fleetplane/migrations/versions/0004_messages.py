"""Messages: one row per (device, device time).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column(
            "device_id",
            sa.String(40),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("device_time", UTCDateTime(), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        sa.Column("altitude", sa.Float()),
        sa.Column("speed", sa.Float()),
        sa.Column("course", sa.Float()),
        sa.Column("satellites", sa.SmallInteger()),
        sa.Column("hdop", sa.Float()),
        sa.Column("inputs", sa.BigInteger()),
        sa.Column("outputs", sa.BigInteger()),
        sa.Column("params", sa.JSON()),
        sa.Column("flags", sa.Integer(), nullable=False),
    )
    if rls.is_postgres():
        rls.grant_tables("messages")
        rls.protect_through_device("messages")


def downgrade() -> None:
    op.drop_table("messages")
