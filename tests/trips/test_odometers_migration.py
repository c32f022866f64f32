"""Migration 0020 gives intervals their odometers: the intervals found before have none, so
the trips step detects every device's intervals again from its first message; the other
steps keep their progress."""

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.config import Settings
from fleetplane.core.db import migrate as migrate_to_head
from messages.test_compact_migration import add_device, in_db, run_alembic

MARK = datetime(2026, 3, 1, 8, 42, 10, tzinfo=UTC)


def test_intervals_are_detected_again_with_their_odometers(empty_database_url: str) -> None:
    url = empty_database_url
    run_alembic(url, "upgrade", "0019")
    provider = in_db(url, lambda s: bootstrap.create_provider(s, "Old fleet")).provider_id
    add_device(url, provider, "dev_driven")

    async def store(session: AsyncSession) -> None:
        for step, rewind in (("trips", MARK), ("device_counters", None)):
            await session.execute(
                sa.text(
                    "INSERT INTO step_progress (id, step, device_id, provider_id, mark,"
                    " rewind_from, status, attempts, updated_at)"
                    " VALUES (:id, :step, 'dev_driven', :p, :t, :r, 'ok', 0, :t)"
                ),
                {"id": f"stp_{step}", "step": step, "p": provider, "t": MARK, "r": rewind},
            )
        await session.execute(
            sa.text(
                "INSERT INTO trip_intervals (id, device_id, kind, start_time, end_time,"
                " start_lat, start_lon, end_lat, end_lon, distance_m, avg_speed, open)"
                " VALUES ('ivl_old', 'dev_driven', 'trip', :t, :t, 0, 0, 0, 0, 0, 0, false)"
            ),
            {"t": MARK},
        )
        await session.execute(
            sa.text(
                "INSERT INTO trip_detector_states (device_id, state, updated_at)"
                " VALUES ('dev_driven', '{}', :t)"
            ),
            {"t": MARK},
        )

    in_db(url, store)
    asyncio.run(migrate_to_head(Settings(database_url=url)))

    async def read(session: AsyncSession) -> tuple[int, int, list[tuple[str, bool, bool]]]:
        intervals = await session.execute(sa.text("SELECT count(*) FROM trip_intervals"))
        states = await session.execute(sa.text("SELECT count(*) FROM trip_detector_states"))
        marks = await session.execute(
            sa.text(
                "SELECT step, mark IS NULL, rewind_from IS NULL FROM step_progress ORDER BY step"
            )
        )
        return (
            intervals.scalar_one(),
            states.scalar_one(),
            [(row[0], bool(row[1]), bool(row[2])) for row in marks],
        )

    assert in_db(url, read) == (
        0,
        0,
        [("device_counters", False, True), ("trips", True, True)],
    )
    run_alembic(url, "downgrade", "0019")
