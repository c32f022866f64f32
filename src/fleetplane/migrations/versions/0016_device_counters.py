"""Device counters as a pipeline step (#8): hourly checkpoints to rewind to, and how far the
counters in the live state have counted. Devices with a live state keep their counters: each
gets a checkpoint of them and the step's mark at its newest message, so the step goes on from
there instead of counting again from the oldest message kept.

Revision ID: 0016
Revises: 0015
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.core.ids import new_id
from fleetplane.migrations import rls

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = sa.String(40)
STEP = "device_counters"  # devices.counters.STEP_NAME


def upgrade() -> None:
    op.add_column("device_states", sa.Column("counted_at", UTCDateTime()))
    op.create_table(
        "device_counter_checkpoints",
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("counted_at", UTCDateTime(), nullable=False),
        sa.Column("odometer_m", sa.Float(), nullable=False),
        sa.Column("engine_seconds", sa.Float(), nullable=False),
        sa.Column("ignition", sa.Boolean()),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        sa.PrimaryKeyConstraint("device_id", "hour"),
    )
    _keep_counted_so_far()
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables("device_counter_checkpoints")
        rls.protect_through_device("device_counter_checkpoints")


def _keep_counted_so_far() -> None:
    connection = op.get_bind()
    states = sa.table(
        "device_states",
        sa.column("device_id", ID),
        sa.column("last_message_at", UTCDateTime()),
        sa.column("odometer_m", sa.Float()),
        sa.column("engine_seconds", sa.Float()),
        sa.column("ignition", sa.Boolean()),
        sa.column("lat", sa.Float()),
        sa.column("lon", sa.Float()),
        sa.column("counted_at", UTCDateTime()),
    )
    devices = sa.table("devices", sa.column("id", ID), sa.column("provider_id", ID))
    rows = connection.execute(
        sa.select(states, devices.c.provider_id).join(devices, devices.c.id == states.c.device_id)
    ).all()
    if not rows:
        return
    connection.execute(states.update().values(counted_at=states.c.last_message_at))
    checkpoints = sa.table(
        "device_counter_checkpoints",
        *(sa.column(name) for name in ("device_id", "odometer_m", "engine_seconds", "ignition")),
        *(sa.column(name) for name in ("lat", "lon")),
        sa.column("hour", UTCDateTime()),
        sa.column("counted_at", UTCDateTime()),
    )
    connection.execute(
        checkpoints.insert(),
        [
            {
                "device_id": row.device_id,
                "hour": row.last_message_at.replace(minute=0, second=0, microsecond=0),
                "counted_at": row.last_message_at,
                "odometer_m": row.odometer_m,
                "engine_seconds": row.engine_seconds,
                "ignition": row.ignition,
                "lat": row.lat,
                "lon": row.lon,
            }
            for row in rows
        ],
    )
    progress = sa.table(
        "step_progress",
        *(sa.column(name) for name in ("id", "step", "device_id", "provider_id", "status")),
        sa.column("attempts", sa.Integer()),
        sa.column("mark", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    now = datetime.now(UTC)
    connection.execute(
        progress.insert(),
        [
            {
                "id": new_id("stp"),
                "step": STEP,
                "device_id": row.device_id,
                "provider_id": row.provider_id,
                "status": "ok",
                "attempts": 0,
                "mark": row.last_message_at,
                "updated_at": now,
            }
            for row in rows
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM step_progress WHERE step = :step").bindparams(step=STEP))
    op.drop_table("device_counter_checkpoints")
    with op.batch_alter_table("device_states") as batch:
        batch.drop_column("counted_at")
