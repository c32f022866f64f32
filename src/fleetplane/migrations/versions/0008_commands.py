"""Commands to devices.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("customer_id", ID),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("text", sa.String(1400)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.String(200)),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("answered_at", UTCDateTime()),
    )
    op.create_index("ix_commands_device_id_status", "commands", ["device_id", "status"])
    if rls.is_postgres():
        rls.grant_tables("commands")
        rls.protect("commands", customer_column="customer_id")


def downgrade() -> None:
    op.drop_table("commands")
