"""Intervals keep the device counters' odometer at their start and end (#9). The intervals
found so far have none: they are detected again, each device from its first stored message
(the trips step's progress goes back to the beginning; the other steps keep theirs).

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

STEP = "trips"  # trips.processor.TripDetectorStep.name


def upgrade() -> None:
    op.add_column("trip_intervals", sa.Column("odometer_start_m", sa.Float()))
    op.add_column("trip_intervals", sa.Column("odometer_end_m", sa.Float()))
    # The few open intervals, which the trips step reads back each round.
    op.create_index(
        "ix_trip_intervals_open_device_id",
        "trip_intervals",
        ["device_id"],
        sqlite_where=sa.text("open = 1"),  # as SQLAlchemy says it there
        postgresql_where=sa.text("open"),
    )
    _detect_again()


def downgrade() -> None:
    op.drop_index("ix_trip_intervals_open_device_id", "trip_intervals")
    with op.batch_alter_table("trip_intervals") as batch:
        batch.drop_column("odometer_end_m")
        batch.drop_column("odometer_start_m")


def _detect_again() -> None:
    op.execute(sa.text("DELETE FROM trip_intervals"))
    op.execute(sa.text("DELETE FROM trip_detector_states"))
    op.execute(
        sa.text(
            "UPDATE step_progress SET mark = NULL, rewind_from = NULL WHERE step = :step"
        ).bindparams(step=STEP)
    )
