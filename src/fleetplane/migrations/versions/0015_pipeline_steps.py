"""Pipeline steps after the durable write (#8): each step's progress per device, and the late
data waiting for the steps to rewind.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "step_progress",
        sa.Column("id", ID, primary_key=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("mark", UTCDateTime()),
        sa.Column("rewind_from", UTCDateTime()),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(500)),
        sa.Column("retry_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("step", "device_id", name="uq_step_progress_step_device_id"),
    )
    op.create_index("ix_step_progress_provider_id_id", "step_progress", ["provider_id", "id"])
    op.create_index("ix_step_progress_device_id", "step_progress", ["device_id"])
    op.create_table(
        "step_rewinds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_time", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_step_rewinds_device_id", "step_rewinds", ["device_id"])
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables("step_progress", "step_rewinds")
        for role in (rls.APP_ROLE, rls.SYSTEM_ROLE):
            op.execute(f"GRANT USAGE ON SEQUENCE step_rewinds_id_seq TO {role}")
        rls.protect("step_progress", None)
        rls.protect_through_device("step_rewinds")


def downgrade() -> None:
    op.drop_table("step_rewinds")
    op.drop_table("step_progress")
