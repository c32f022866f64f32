"""Photos and tachograph files from devices, and drivers' chat messages.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.String(40)


def _owner_columns() -> list[sa.Column]:
    return [
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "media_files",
        *_owner_columns(),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(400), nullable=False),
        sa.Column("taken_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_media_files_device_id_taken_at", "media_files", ["device_id", "taken_at"])
    op.create_table(
        "tachograph_files",
        *_owner_columns(),
        sa.Column("driver_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(400), nullable=False),
        sa.Column("downloaded_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_tachograph_files_device_id", "tachograph_files", ["device_id", "downloaded_at"]
    )
    op.create_table(
        "driver_chat_messages",
        sa.Column("id", ID, primary_key=True),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.String(1400), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_driver_chat_messages_device_id", "driver_chat_messages", ["device_id"])
    if rls.is_postgres():
        rls.grant_tables("media_files", "tachograph_files", "driver_chat_messages")
        for table in ("media_files", "tachograph_files", "driver_chat_messages"):
            rls.protect_through_device(table)


def downgrade() -> None:
    for table in ("driver_chat_messages", "tachograph_files", "media_files"):
        op.drop_table(table)
