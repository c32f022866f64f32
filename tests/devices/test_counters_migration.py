"""Migration 0016 keeps the counters devices already have: each device with a live state gets
a checkpoint of them and the counters step's mark at its newest message, so the step goes on
from there instead of counting again from the oldest message kept."""

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.config import Settings
from fleetplane.core.db import migrate as migrate_to_head
from fleetplane.devices.counters import STEP_NAME
from messages.test_compact_migration import add_device, in_db, run_alembic

NEWEST = datetime(2026, 3, 1, 8, 42, 10, tzinfo=UTC)


def test_counters_counted_before_are_kept(empty_database_url: str) -> None:
    url = empty_database_url
    run_alembic(url, "upgrade", "0015")
    provider = in_db(url, lambda s: bootstrap.create_provider(s, "Old fleet")).provider_id
    add_device(url, provider, "dev_counted")
    add_device(url, provider, "dev_silent")  # no state: nothing to keep

    async def store_state(session: AsyncSession) -> None:
        await session.execute(
            sa.text(
                "INSERT INTO device_states (device_id, last_message_at, last_received_at, lat,"
                " lon, odometer_m, engine_seconds, ignition)"
                " VALUES ('dev_counted', :t, :t, 56.9, 24.1, 123456.5, 7200.0, :on)"
            ),
            {"t": NEWEST, "on": True},
        )

    in_db(url, store_state)
    asyncio.run(migrate_to_head(Settings(database_url=url)))

    async def read(session: AsyncSession) -> tuple[list[tuple], list[tuple]]:
        checkpoints = sa.text(
            "SELECT device_id, hour, counted_at, odometer_m, engine_seconds, ignition, lat, lon"
            " FROM device_counter_checkpoints"
        )
        marks = sa.text("SELECT device_id, step, mark, status FROM step_progress")
        return (
            [tuple(row) for row in await session.execute(checkpoints)],
            [tuple(row) for row in await session.execute(marks)],
        )

    checkpoints, marks = in_db(url, read)
    [checkpoint] = checkpoints
    device_id, hour, counted_at, *values = checkpoint
    assert device_id == "dev_counted"
    assert _utc(hour) == datetime(2026, 3, 1, 8, tzinfo=UTC) and _utc(counted_at) == NEWEST
    assert values == [123456.5, 7200.0, True, 56.9, 24.1]
    [(marked, step, mark, status)] = marks
    assert (marked, step, _utc(mark), status) == ("dev_counted", STEP_NAME, NEWEST, "ok")

    run_alembic(url, "downgrade", "0015")
    assert in_db(url, lambda s: _count_progress(s)) == 0


async def _count_progress(session: AsyncSession) -> int:
    return (await session.execute(sa.text("SELECT count(*) FROM step_progress"))).scalar_one()


def _utc(value: datetime | str) -> datetime:
    """A time read through a text query: SQLite gives its stored text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
