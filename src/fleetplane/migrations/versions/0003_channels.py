"""Channels, and devices belonging to a channel (unique_id unique per channel).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("protocol", sa.String(40), nullable=False),
        sa.Column("transport", sa.String(20), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False, unique=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("online_timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("auto_register", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_channels_provider_id", "channels", ["provider_id"])
    # Devices added before channels existed keep channel_id NULL until a provider moves them
    # to a channel; new devices must name one.
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("channel_id", ID, nullable=True))
        batch.create_foreign_key(
            "fk_devices_channel_id_channels", "channels", ["channel_id"], ["id"]
        )
        batch.drop_constraint("uq_devices_provider_id_unique_id", type_="unique")
        batch.create_unique_constraint(
            "uq_devices_channel_id_unique_id", ["channel_id", "unique_id"]
        )
    if rls.is_postgres():
        rls.grant_tables("channels")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint("uq_devices_channel_id_unique_id", type_="unique")
        batch.create_unique_constraint(
            "uq_devices_provider_id_unique_id", ["provider_id", "unique_id"]
        )
        batch.drop_constraint("fk_devices_channel_id_channels", type_="foreignkey")
        batch.drop_column("channel_id")
    op.drop_table("channels")
