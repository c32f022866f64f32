"""A column store for analytics: each device-day of messages as packed columns, derived from
the message rows (docs/decisions.md, "A column store for analytics").

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_columns",
        sa.Column(
            "device_seq",
            sa.Integer(),
            sa.ForeignKey("devices.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("message_count", sa.Integer()),
        sa.Column("packed", sa.LargeBinary()),
        sa.PrimaryKeyConstraint("device_seq", "period_start"),
    )
    # The builder's work list: the few days waiting to be (re)packed.
    op.create_index(
        "ix_message_columns_stale",
        "message_columns",
        ["period_start"],
        sqlite_where=sa.text("stale"),
        postgresql_where=sa.text("stale"),
    )
    if rls.is_postgres():
        # The chunks are compressed already: no second compression attempt on write.
        op.execute("ALTER TABLE message_columns ALTER COLUMN packed SET STORAGE EXTERNAL")
        rls.ensure_roles()
        rls.grant_tables("message_columns")
        # A customer sees a day's chunk only when its whole day is inside the customer's
        # window of the device's history; other days are read from the rows, which the
        # messages policy cuts at the window's start.
        rls.protect_through_device(
            "message_columns", "device_seq", "seq", history_time_column="period_start"
        )


def downgrade() -> None:
    op.drop_table("message_columns")
