"""Drivers: a customer's drivers, their key codes, and their assignments to devices.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ID = sa.String(40)


def _owner_columns() -> list[sa.Column[str]]:
    return [
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "customer_id", ID, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "drivers",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(40)),
        sa.Column("email", sa.String(254)),
        sa.Column("license_number", sa.String(60)),
        sa.Column("license_expires", sa.Date()),
        sa.Column("notes", sa.String(2000)),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_drivers_customer_id_id", "drivers", ["customer_id", "id"])
    op.create_table(
        "driver_key_codes",
        sa.Column(
            "customer_id", ID, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("match_key", sa.String(64), nullable=False),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("driver_id", ID, sa.ForeignKey("drivers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "match_key", name="pk_driver_key_codes"),
    )
    op.create_index("ix_driver_key_codes_driver_id", "driver_key_codes", ["driver_id"])
    op.create_table(
        "driver_assignments",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("driver_id", ID, sa.ForeignKey("drivers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("own_end", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_driver_assignments_customer_id_started_at_id",
        "driver_assignments",
        ["customer_id", "started_at", "id"],
    )
    op.create_index(
        "ix_driver_assignments_device_id_started_at",
        "driver_assignments",
        ["device_id", "started_at"],
    )
    op.create_index(
        "ix_driver_assignments_driver_id_started_at",
        "driver_assignments",
        ["driver_id", "started_at"],
    )
    op.create_index(
        "uq_driver_assignments_current",
        "driver_assignments",
        ["device_id", "customer_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    if rls.is_postgres():
        rls.ensure_roles()
        tables = ("drivers", "driver_key_codes", "driver_assignments")
        rls.grant_tables(*tables)
        for table in tables:
            rls.protect(table, "customer_id")


def downgrade() -> None:
    op.drop_table("driver_assignments")
    op.drop_table("driver_key_codes")
    op.drop_table("drivers")
