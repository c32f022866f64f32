"""Sensors: per device, which message parameter to read and how it becomes a value.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "sensors",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("parameter", sa.String(38), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("calibration", sa.JSON(none_as_null=True)),
        sa.Column("out_of_table", sa.String(10), nullable=False),
        sa.Column("min", sa.Float()),
        sa.Column("max", sa.Float()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_sensors_provider_id_id", "sensors", ["provider_id", "id"])
    op.create_index("ix_sensors_device_id_id", "sensors", ["device_id", "id"])
    if rls.is_postgres():
        rls.grant_tables("sensors")
        rls.protect("sensors", customer_column=None)


def downgrade() -> None:
    op.drop_table("sensors")
