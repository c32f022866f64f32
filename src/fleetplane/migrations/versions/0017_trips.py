"""Trips (#9): each device's trip settings, its trips, stops and parkings, and the trip
detector's state.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ID = sa.String(40)


def _device(primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "device_id",
        ID,
        sa.ForeignKey("devices.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "trip_settings",
        _device(primary_key=True),
        sa.Column("method", sa.String(12), nullable=False),
        sa.Column("min_moving_speed", sa.Float(), nullable=False),
        sa.Column("min_parking_s", sa.Integer(), nullable=False),
        sa.Column("min_trip_s", sa.Integer(), nullable=False),
        sa.Column("min_trip_m", sa.Float(), nullable=False),
        sa.Column("min_satellites", sa.Integer(), nullable=False),
        sa.Column("max_gap_s", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "trip_intervals",
        sa.Column("id", ID, primary_key=True),
        _device(),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("end_time", UTCDateTime(), nullable=False),
        sa.Column("start_lat", sa.Float(), nullable=False),
        sa.Column("start_lon", sa.Float(), nullable=False),
        sa.Column("end_lat", sa.Float(), nullable=False),
        sa.Column("end_lon", sa.Float(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("max_speed", sa.Float()),
        sa.Column("avg_speed", sa.Float(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("resume_state", sa.JSON()),
    )
    op.create_index(
        "ix_trip_intervals_device_id_start_time", "trip_intervals", ["device_id", "start_time"]
    )
    op.create_index(
        "ix_trip_intervals_device_id_end_time", "trip_intervals", ["device_id", "end_time"]
    )
    op.create_table(
        "trip_detector_states",
        _device(primary_key=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables("trip_settings", "trip_intervals", "trip_detector_states")
        rls.protect_through_device("trip_settings")
        # Device history: a customer sees the intervals that began since the device was theirs.
        rls.protect_through_device("trip_intervals", history_time_column="start_time")
        rls.protect_through_device("trip_detector_states")


def downgrade() -> None:
    op.drop_table("trip_detector_states")
    op.drop_table("trip_intervals")
    op.drop_table("trip_settings")
