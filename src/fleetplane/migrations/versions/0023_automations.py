"""Automations, their state per device (and how far they evaluated each device's messages),
the notifications they fire and the outbox that delivers their actions.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

ID = sa.String(40)
TABLES = (
    "automations",
    "automation_states",
    "automation_devices",
    "notifications",
    "deliveries",
    "delivery_attempts",
)


def _owner_columns() -> list[sa.Column[str]]:
    return [
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "customer_id", ID, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
        ),
    ]


def _times() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("webhook_secret", sa.String(100), nullable=False),
        *_times(),
    )
    op.create_index("ix_automations_customer_id_id", "automations", ["customer_id", "id"])
    op.create_table(
        "automation_states",
        sa.Column(
            "automation_id",
            ID,
            sa.ForeignKey("automations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        *_owner_columns(),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("since", UTCDateTime()),
        sa.Column("fired", sa.Boolean(), nullable=False),
        sa.Column("last_fired_at", UTCDateTime()),
        sa.Column("memory", sa.JSON()),
        sa.PrimaryKeyConstraint("automation_id", "device_id", name="pk_automation_states"),
    )
    op.create_index("ix_automation_states_device_id", "automation_states", ["device_id"])
    op.create_table(
        "automation_devices",
        sa.Column(
            "device_id",
            ID,
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        *_owner_columns(),
        sa.Column("evaluated_until", UTCDateTime(), nullable=False),
        sa.Column("speed", sa.Float()),
    )
    op.create_table(
        "notifications",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("automation_id", ID, sa.ForeignKey("automations.id", ondelete="SET NULL")),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="SET NULL")),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("position", sa.JSON()),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    for column in ("customer_id", "automation_id", "device_id"):
        op.create_index(f"ix_notifications_{column}_time", "notifications", [column, "time"])
    op.create_table(
        "deliveries",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column(
            "notification_id",
            ID,
            sa.ForeignKey("notifications.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("action", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime()),
        *_times(),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_deliveries_notification_id", "deliveries", ["notification_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column(
            "delivery_id", ID, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("error", sa.String(500)),
    )
    op.create_index(
        "ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id", "attempt"]
    )
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables(*TABLES)
        for table in TABLES:
            rls.protect(table, "customer_id")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
