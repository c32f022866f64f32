"""The device counters step (odometer, counted engine hours, ignition): summed up after the
durable write, late data included, with the result of counting every message in order.

Over the real Wialon IPS listener and a real database; the expected values come from counting
the same messages from scratch, in order, with the step's own pure function."""

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import run_in_db
from fleetplane.devices import counters
from fleetplane.devices.counters import Counters, count
from fleetplane.messages.service import stored_form
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.telemetry import Message
from steps.test_pipeline_steps import START, Tracker, database, platform, wait_until

IGNITION = SensorDefinition(
    id="sns_test", device_id="dev_test", name="Engine", type=SensorType.IGNITION, parameter="in1"
)


def fix(minute: int, *, engine_on: bool) -> Message:
    """A van driving east, a message a minute, the engine on or off (input 1)."""
    return Message(
        device_time=START + timedelta(minutes=minute),
        received_at=START + timedelta(minutes=minute, seconds=2),
        lat=55.75,
        lon=37.10 + 0.004 * minute,
        speed=15.0,
        course=90.0,
        altitude=130.0,
        satellites=9,
        hdop=0.9,
        inputs=1 if engine_on else 0,
        outputs=0,
    )


def body(message: Message) -> str:
    assert message.lat is not None and message.lon is not None
    lat_minutes = message.lat * 60 - 55 * 60
    lon_minutes = message.lon * 60 - 37 * 60
    return (
        f"{message.device_time:%d%m%y;%H%M%S};55{lat_minutes:07.4f};N;037{lon_minutes:07.4f};E;"
        f"15;90;130;9;0.9;{message.inputs};0;NA;NA;"
    )


def stored_counters(settings_: Any, device_id: str) -> tuple[datetime | None, float, float]:
    async def read(session: AsyncSession) -> tuple[datetime | None, float, float]:
        row = (
            await session.execute(
                sa.text(
                    "SELECT counted_at, odometer_m, engine_seconds FROM device_states"
                    " WHERE device_id = :id"
                ),
                {"id": device_id},
            )
        ).one()
        counted_at = row[0]
        if isinstance(counted_at, str):  # SQLite through a text query
            counted_at = datetime.fromisoformat(counted_at).replace(tzinfo=START.tzinfo)
        return counted_at, row[1], row[2]

    return run_in_db(settings_, read)


def test_counters_take_in_late_data_as_if_it_had_come_in_order(
    backend: str, tmp_path: Path
) -> None:
    # Two and a half hours: the late part lies across an hour's checkpoint.
    route = [fix(minute, engine_on=minute % 40 < 25) for minute in range(150)]
    late = route[50:100]
    in_order = route[:50] + route[100:]
    with database(backend, tmp_path) as url, platform(url, tmp_path, []) as fleet:
        sensor = {"device_id": fleet.device_id, "name": "Engine", "type": "ignition"}
        created = fleet.tenant.api.post("/api/sensors", json=sensor | {"parameter": "in1"})
        assert created.status_code == 201, created.text
        tracker = Tracker(fleet.port)
        try:
            for start in range(0, len(in_order), 10):
                packet = "|".join(body(m) for m in in_order[start : start + 10])
                answer = tracker.ask("B", packet, "|")
                assert answer == "#AB#10"
            expected = _counted(in_order)
            wait_until(
                lambda: (
                    stored_counters(fleet.server.settings, fleet.device_id)
                    == (expected.counted_at, expected.odometer_m, expected.engine_seconds)
                ),
                "the counters counted what came in order",
            )
            answer = tracker.ask("B", "|".join(body(m) for m in late), "|")
            assert answer == f"#AB#{len(late)}"
        finally:
            tracker.close()
        everything = _counted(route)
        assert everything.odometer_m > expected.odometer_m  # the late part is counted, not lost
        wait_until(
            lambda: (
                stored_counters(fleet.server.settings, fleet.device_id)
                == (everything.counted_at, everything.odometer_m, everything.engine_seconds)
            ),
            "the counters counted again from the checkpoint before the late data",
        )
        customer = {"customer_id": fleet.tenant.customers[0]["id"]}
        moved = fleet.tenant.api.patch(f"/api/devices/{fleet.device_id}", json=customer)
        assert moved.status_code == 200, moved.text
        read = fleet.tenant.module_api(0).get(f"/module/devices/{fleet.device_id}").json()
        assert read["odometer_km"] == round(everything.odometer_m / 1000, 3)
        assert read["engine_hours_counted"] == round(everything.engine_seconds / 3600, 3)


def _counted(messages: list[Message]) -> Counters:
    """From scratch, in order, as stored (coordinates to 1e-7 degree)."""
    ordered = sorted((stored_form(m) for m in messages), key=lambda m: m.device_time)
    return count(Counters(), ordered, IGNITION)[0]


minutes = st.lists(st.integers(1, 90), min_size=1, max_size=60)


@settings(max_examples=100, deadline=None)
@given(minutes, st.lists(st.booleans(), min_size=60, max_size=60), st.data())
def test_counting_in_parts_from_checkpoints_equals_counting_at_once(
    gaps: list[int], engine: list[bool], data: st.DataObject
) -> None:
    """Counting on from any checkpoint gives what counting everything at once gives: what a
    rewind relies on."""
    at = 0
    messages = []
    for number, gap in enumerate(gaps):
        at += gap
        messages.append(fix(at, engine_on=engine[number]))
    whole, checkpoints = count(Counters(), messages, IGNITION)
    assert all(
        a.counted_at is not None and b.counted_at is not None and a.counted_at < b.counted_at
        for a, b in itertools.pairwise(checkpoints)
    )
    if checkpoints:
        resume = data.draw(st.sampled_from(checkpoints))
        rest = [m for m in messages if resume.counted_at and m.device_time > resume.counted_at]
        assert count(resume, rest, IGNITION)[0] == whole
    split = data.draw(st.integers(0, len(messages)))
    first, _ = count(Counters(), messages[:split], IGNITION)
    assert count(first, messages[split:], IGNITION)[0] == whole


def test_engine_time_stops_counting_after_a_long_silence() -> None:
    on = [fix(0, engine_on=True), fix(180, engine_on=True)]  # three hours of silence
    assert count(Counters(), on, IGNITION)[0].engine_seconds == counters.MAX_GAP_SECONDS


@pytest.mark.parametrize("engine_on", [True, False])
def test_without_an_ignition_sensor_no_engine_time_is_counted(engine_on: bool) -> None:
    messages = [fix(0, engine_on=engine_on), fix(10, engine_on=engine_on)]
    counted = count(Counters(), messages, None)[0]
    assert counted.engine_seconds == 0.0 and counted.ignition is None
    assert counted.odometer_m > 0
