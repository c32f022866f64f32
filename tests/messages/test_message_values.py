"""A stored message reads back through the API with the values it came in with: coordinates
to 1e-7 degree, received_at to the millisecond, every other value exactly."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import RunningServer, Tenant
from fleetplane.core.db import run_platform_work
from fleetplane.devices import service as devices
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message

START = datetime(2024, 5, 1, 6, 30, 15, 500_000, tzinfo=UTC)


def store(server: RunningServer, device_id: str, batch: list[Message]) -> None:
    async def insert(session: Any) -> None:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        await messages.insert_rows(session, [messages.to_row(seq, m) for m in batch])

    asyncio.run(run_platform_work(server.settings, insert))


def read_back(tenant: Tenant, device_id: str) -> list[dict[str, Any]]:
    response = tenant.module_api(0).get(f"/module/devices/{device_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_values_read_back_as_they_came_in(server: RunningServer, tenant: Tenant) -> None:
    device_id = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    full = Message(
        device_time=START,
        received_at=START + timedelta(seconds=1, microseconds=234_567),
        lat=-33.868819,
        lon=-151.2092955,
        altitude=-12.5,
        speed=19.075599999999998,  # 10.3 knots in km/h: not a short decimal
        course=359.9,
        satellites=11.0,
        hdop=0.9,
        inputs=2**40 + 1,
        outputs=0,
        adc=(12.25, None, 0.0),
        driver_key="01A2B3C4D5E6F708",
        params={"fuel": 45.8, "temp1": -7.5, "count": -3, "big": 2**62, "name": "Größe; 1,2"},
        from_black_box=True,
    )
    empty = Message(device_time=START + timedelta(minutes=1), received_at=START, filtered=True)
    store(server, device_id, [full, empty])

    first, second = read_back(tenant, device_id)
    assert datetime.fromisoformat(first["time"]) == START
    assert datetime.fromisoformat(first["received_at"]) == START + timedelta(seconds=1.234)
    assert first["lat"] == pytest.approx(-33.868819, abs=0.5e-7)
    assert first["lon"] == pytest.approx(-151.2092955, abs=0.5e-7)
    exact = {key: first[key] for key in ("altitude", "speed", "course", "satellites", "hdop")}
    assert exact == {
        "altitude": -12.5,
        "speed": 19.075599999999998,
        "course": 359.9,
        "satellites": 11,
        "hdop": 0.9,
    }
    assert (first["inputs"], first["outputs"]) == (2**40 + 1, 0)
    assert first["params"] == {
        "fuel": 45.8,
        "temp1": -7.5,
        "count": -3,
        "big": 2**62,
        "name": "Größe; 1,2",
        "adc1": 12.25,
        "adc3": 0.0,
        "driver_key": "01A2B3C4D5E6F708",
    }
    assert (first["black_box"], first["valid"]) == (True, True)

    assert datetime.fromisoformat(second["received_at"]) == START
    for key in ("lat", "lon", "altitude", "speed", "course", "satellites", "hdop"):
        assert second[key] is None, key
    assert (second["inputs"], second["outputs"], second["params"]) == (None, None, {})
    assert (second["black_box"], second["valid"]) == (False, False)


def test_a_duplicate_device_time_is_stored_once(server: RunningServer, tenant: Tenant) -> None:
    device_id = tenant.devices[tenant.customers[0]["id"]][1]["id"]
    first = Message(device_time=START, received_at=START, speed=10.0)
    again = Message(device_time=START, received_at=START, speed=99.0)
    store(server, device_id, [first])
    store(server, device_id, [again])
    assert [item["speed"] for item in read_back(tenant, device_id)] == [10.0]


def test_each_device_reads_only_its_own_messages(server: RunningServer, tenant: Tenant) -> None:
    one, other = tenant.devices[tenant.customers[1]["id"]]
    store(server, one["id"], [Message(device_time=START, received_at=START, speed=1.0)])
    store(server, other["id"], [Message(device_time=START, received_at=START, speed=2.0)])
    response = tenant.module_api(1).get(f"/module/devices/{other['id']}/messages")
    assert [item["speed"] for item in response.json()["items"]] == [2.0]
