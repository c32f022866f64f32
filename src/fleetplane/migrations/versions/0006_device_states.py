"""Live device state: one row per device, advanced by the telemetry pipeline.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_states",
        sa.Column(
            "device_id",
            sa.String(40),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("last_message_at", UTCDateTime(), nullable=False),
        sa.Column("last_received_at", UTCDateTime(), nullable=False),
        sa.Column("position_at", UTCDateTime()),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        sa.Column("altitude", sa.Float()),
        sa.Column("speed", sa.Float()),
        sa.Column("course", sa.Float()),
        sa.Column("satellites", sa.Integer()),
        sa.Column("hdop", sa.Float()),
        sa.Column("inputs", sa.BigInteger()),
        sa.Column("outputs", sa.BigInteger()),
        sa.Column("params", sa.JSON()),
        sa.Column("odometer_m", sa.Float(), nullable=False),
    )
    if rls.is_postgres():
        rls.grant_tables("device_states")
        rls.protect_through_device("device_states")


def downgrade() -> None:
    op.drop_table("device_states")
