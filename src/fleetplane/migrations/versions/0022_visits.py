"""Geofence visits: each device's stays inside its customer's geofences (found by the visits
step), and a geofence's dwell delay.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

ID = sa.String(40)


def _owned_by(table: str) -> sa.Column[str]:
    return sa.Column(
        f"{table[:-1]}_id", ID, sa.ForeignKey(f"{table}.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.add_column(
        "geofences", sa.Column("dwell_s", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "geofence_visits",
        sa.Column("id", ID, primary_key=True),
        _owned_by("providers"),
        _owned_by("customers"),
        _owned_by("devices"),
        _owned_by("geofences"),
        sa.Column("enter_time", UTCDateTime(), nullable=False),
        sa.Column("exit_time", UTCDateTime()),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("enter_lat", sa.Float(), nullable=False),
        sa.Column("enter_lon", sa.Float(), nullable=False),
        sa.Column("exit_lat", sa.Float()),
        sa.Column("exit_lon", sa.Float()),
        sa.Column("last_time", UTCDateTime(), nullable=False),
        sa.Column("last_lat", sa.Float(), nullable=False),
        sa.Column("last_lon", sa.Float(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_geofence_visits_device_id_enter_time", "geofence_visits", ["device_id", "enter_time"]
    )
    op.create_index(
        "ix_geofence_visits_customer_id_geofence_id_enter_time",
        "geofence_visits",
        ["customer_id", "geofence_id", "enter_time"],
    )
    # The few open ones, which the visits step reads back for a device it does not hold.
    op.create_index(
        "ix_geofence_visits_open_device_id",
        "geofence_visits",
        ["device_id"],
        sqlite_where=sa.text("exit_time IS NULL"),
        postgresql_where=sa.text("exit_time IS NULL"),
    )
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables("geofence_visits")
        rls.protect("geofence_visits", "customer_id")


def downgrade() -> None:
    op.drop_table("geofence_visits")
    with op.batch_alter_table("geofences") as batch:
        batch.drop_column("dwell_s")
