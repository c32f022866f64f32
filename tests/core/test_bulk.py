"""Rows written in bulk read back exactly as the same rows written through SQLAlchemy."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.dialects import sqlite

from fleetplane.config import Settings
from fleetplane.core import bulk
from fleetplane.core.db import UTCDateTime, create_engine, sqlite_utc_text

metadata = MetaData()
readings = Table(
    "bulk_readings",
    metadata,
    Column("source", String(40), primary_key=True),
    Column("at", UTCDateTime(), primary_key=True),
    Column("received_at", UTCDateTime()),
    Column("value", Float),
    Column("count", BigInteger),
    Column("on", Boolean),
    Column("extra", JSON),
)

MOMENT = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def reading(source: str, seconds: int, **fields: Any) -> dict[str, Any]:
    values = {
        "source": source,
        "at": MOMENT + timedelta(seconds=seconds),
        "received_at": MOMENT + timedelta(hours=1, microseconds=250),
        "value": 1.5,
        "count": 2**40,
        "on": True,
        "extra": {"fuel": 45.8, "name": "ä", "big": 2**70},
    }
    return values | fields


async def stored(connection: Any, source: str) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(readings).where(readings.c.source == source).order_by(readings.c.at)
    )
    return [{k: v for k, v in row.items() if k != "source"} for row in result.mappings()]


@pytest.fixture
async def engine(empty_database_url: str, tmp_path: Path) -> Any:
    created = create_engine(
        Settings(database_url=empty_database_url, data_dir=tmp_path), as_app_role=False
    )
    async with created.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield created
    await created.dispose()


async def test_rows_read_back_as_through_sqlalchemy(engine: Any) -> None:
    other_zone = timezone(timedelta(hours=3))
    odd = {
        "at": (MOMENT + timedelta(seconds=1)).astimezone(other_zone),
        "value": None,
        "on": None,
        "extra": None,
    }
    async with engine.begin() as connection:
        await connection.execute(insert(readings), [reading("core", 0), reading("core", 1, **odd)])
        await bulk.write_rows(connection, readings, [reading("bulk", 0), reading("bulk", 1, **odd)])
        core, written = await stored(connection, "core"), await stored(connection, "bulk")
    assert written == core
    assert written[0]["at"] == MOMENT and written[0]["extra"]["big"] == 2**70


async def test_duplicates_are_skipped_or_update_the_stored_row(engine: Any) -> None:
    async with engine.begin() as connection:
        await bulk.write_rows(connection, readings, [reading("a", 0, value=1.0)])
        again = [reading("a", 0, value=2.0), reading("a", 1, value=3.0), reading("a", 1, value=4.0)]
        await bulk.write_rows(connection, readings, again)
        assert [row["value"] for row in await stored(connection, "a")] == [1.0, 3.0]
        await bulk.write_rows(
            connection, readings, [reading("a", 0, value=5.0)], update_on=("source", "at")
        )
        assert [row["value"] for row in await stored(connection, "a")] == [5.0, 3.0]
        # A column another writer owns: a new row brings it, a stored row keeps its own.
        kept = [reading("a", 0, value=6.0, on=False), reading("a", 2, value=7.0, on=False)]
        await bulk.write_rows(connection, readings, kept, update_on=("source", "at"), keep=("on",))
        rows = await stored(connection, "a")
        assert [(row["value"], row["on"]) for row in rows] == [
            (6.0, True),
            (3.0, True),
            (7.0, False),
        ]


async def test_updates_by_a_key_read_back_as_through_sqlalchemy(engine: Any) -> None:
    changes = {
        "received_at": MOMENT + timedelta(days=1, microseconds=7),
        "value": None,
        "on": False,
        "extra": {"fuel": 12.25, "name": "ō"},
    }
    async with engine.begin() as connection:
        rows = [reading(source, seconds) for source in ("core", "bulk") for seconds in (0, 1)]
        await connection.execute(insert(readings), rows)
        # Through SQLAlchemy, then the same change in bulk (and a row that matches nothing).
        await connection.execute(
            readings.update()
            .where(readings.c.source == "core", readings.c.at == MOMENT)
            .values(changes)
        )
        keyed = [
            {"source": "bulk", "at": MOMENT, **changes},
            {"source": "none", "at": MOMENT, **changes},
        ]
        await bulk.update_rows(connection, readings, keyed, where=("source", "at"))
        core, written = await stored(connection, "core"), await stored(connection, "bulk")
        assert await stored(connection, "none") == []
    assert written == core
    assert written[0]["value"] is None and written[1]["value"] == 1.5  # only the one matched


def test_sqlite_time_text_is_the_one_sqlalchemy_stores() -> None:
    dialect = sqlite.dialect()
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    zone = timezone(timedelta(hours=-7, minutes=-30))
    for value in (
        MOMENT,
        MOMENT.replace(microsecond=1),
        MOMENT.astimezone(zone),
        datetime(2026, 1, 1, 23, 59, 59, 999_999),  # naive: UTC by convention
        datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC),
    ):
        assert sqlite_utc_text(value) == processor(value)
    assert sqlite_utc_text(None) is None
