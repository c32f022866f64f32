"""Migration 0012 converts the messages stored in the wide layout, and back."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.config import Settings
from fleetplane.core.db import _alembic_config, create_engine, run_platform_work
from fleetplane.core.db import migrate as migrate_to_head
from fleetplane.messages import service as messages

T0 = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)

wide = sa.table(
    "messages",
    sa.column("device_id", sa.String()),
    sa.column("device_time", sa.DateTime(timezone=True)),
    sa.column("received_at", sa.DateTime(timezone=True)),
    *(sa.column(name, sa.Float()) for name in ("lat", "lon", "altitude", "speed", "course")),
    sa.column("satellites", sa.Integer()),
    sa.column("hdop", sa.Float()),
    sa.column("inputs", sa.BigInteger()),
    sa.column("outputs", sa.BigInteger()),
    sa.column("params", sa.JSON()),
    sa.column("flags", sa.Integer()),
)

OLD_ROWS = [
    {
        "device_time": T0,
        "received_at": T0 + timedelta(seconds=2, milliseconds=5),
        "lat": 56.9496487,
        "lon": -24.1051865,
        "altitude": 12.0,
        "speed": 54.0,
        "course": 271.5,
        "satellites": 11,
        "hdop": 0.9,
        "inputs": 1,
        "outputs": 0,
        "params": {"fuel": 45.8, "driver_key": "01A2B3C4D5E6F708", "x": "y"},
        "flags": 1,
    },
    {
        "device_time": T0 + timedelta(seconds=10),
        "received_at": T0 + timedelta(seconds=10),
        "lat": None,
        "lon": None,
        "altitude": None,
        "speed": None,
        "course": None,
        "satellites": None,
        "hdop": None,
        "inputs": None,
        "outputs": None,
        "params": None,
        "flags": 4,
    },
]


def run_alembic(url: str, step: str, revision: str) -> None:
    async def run() -> None:
        settings = Settings(database_url=url)
        engine = create_engine(settings, as_app_role=False)
        config = _alembic_config(settings)

        def migrate(connection: Connection) -> None:
            config.attributes["connection"] = connection
            getattr(command, step)(config, revision)

        try:
            async with engine.begin() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(run())


def in_db(url: str, work: Any) -> Any:
    return asyncio.run(run_platform_work(Settings(database_url=url), work))


def add_device(url: str, provider_id: str, device_id: str) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            sa.text(
                "INSERT INTO devices (id, provider_id, unique_id, name, created_at, updated_at)"
                " VALUES (:id, :p, :id, 'van', :t, :t)"
            ),
            {"id": device_id, "p": provider_id, "t": T0},
        )

    in_db(url, work)


def test_wide_rows_are_converted_and_back(empty_database_url: str) -> None:
    url = empty_database_url
    run_alembic(url, "upgrade", "0011")
    provider = in_db(url, lambda s: bootstrap.create_provider(s, "Old fleet")).provider_id
    for device_id in ("dev_old_one", "dev_old_two"):
        add_device(url, provider, device_id)

    async def store_wide(session: AsyncSession) -> None:
        rows = [row | {"device_id": "dev_old_one"} for row in OLD_ROWS]
        rows.append(OLD_ROWS[0] | {"device_id": "dev_old_two", "lat": -1.5})
        await session.execute(wide.insert(), rows)

    in_db(url, store_wide)

    asyncio.run(migrate_to_head(Settings(database_url=url)))
    first, second = in_db(url, lambda s: messages.read(s, "dev_old_one"))
    assert first["time"] == T0 and first["received_at"] == OLD_ROWS[0]["received_at"]
    assert first["lat"] == pytest.approx(56.9496487, abs=0.5e-7)
    assert first["lon"] == pytest.approx(-24.1051865, abs=0.5e-7)
    values = [first[key] for key in ("altitude", "speed", "course", "satellites", "hdop")]
    assert values == [12.0, 54.0, 271.5, 11, 0.9]
    assert first["params"] == OLD_ROWS[0]["params"]
    assert (first["inputs"], first["outputs"], first["black_box"], first["valid"]) == (
        1, 0, True, True
    )  # fmt: skip
    assert (second["lat"], second["speed"], second["params"], second["valid"]) == (
        None, None, {}, False
    )  # fmt: skip
    [other] = in_db(url, lambda s: messages.read(s, "dev_old_two"))
    assert other["lat"] == -1.5

    # a device added after the conversion gets a key of its own
    add_device(url, provider, "dev_new")

    async def seqs(session: AsyncSession) -> list[Any]:
        return list((await session.execute(sa.text("SELECT seq FROM devices"))).scalars())

    numbers = in_db(url, seqs)
    assert None not in numbers and len(set(numbers)) == len(numbers) == 3

    run_alembic(url, "downgrade", "0011")

    async def read_wide(session: AsyncSession) -> list[Any]:
        statement = sa.select(wide).where(wide.c.device_id == "dev_old_one")
        return list((await session.execute(statement.order_by(wide.c.device_time))).mappings())

    back = in_db(url, read_wide)
    assert back[0]["params"] == OLD_ROWS[0]["params"]
    assert back[0]["lat"] == pytest.approx(56.9496487, abs=0.5e-7)
    assert back[0]["speed"] == 54.0 and back[0]["flags"] == 1
    assert back[1]["params"] is None and back[1]["lat"] is None and back[1]["flags"] == 4
