"""What an interval carries from other domains, end to end over the real Wialon IPS listener:
the device counters' odometer at its start and end (equal to counting the stored messages from
scratch, also after late black-box data) and the driver assigned at its start (by a key
reading or by hand, never another customer's)."""

import asyncio
import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from test_trips_api import (
    EXPECTED,
    START,
    Fleet,
    Route,
    detected,
    drive_route,
    fleet,
    generated_route,
    intervals,
    second_of,
    summary,
)

from conftest import run_in_db
from fleetplane.devices import service as devices
from fleetplane.devices.counters import Counters, count
from fleetplane.messages import service as messages
from steps.test_pipeline_steps import wait_until
from wialon_tracker import Tracker, wialon_body

__all__ = ["fleet"]  # the module's fixture: a server with a listening channel

ANNA_KEY, OTHER_KEY = "01A2B3C4D5E6F708", "0000000000BEEF01"


def odometers_from_scratch(fleet: Fleet, device_id: str) -> dict[datetime, float]:
    """The counters' odometer after each of the device's stored valid messages, counted from
    zero in order with the counters' own fold."""

    async def read(session: Any) -> dict[datetime, float]:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        stored = await messages.stored_since(
            session, seq, after=None, until=datetime.now(START.tzinfo), limit=100_000
        )
        counters, found = Counters(), {}
        for message in (m for m in stored if not m.filtered):
            counters, _ = count(counters, [message], None)
            found[message.device_time] = counters.odometer_m
        return found

    return run_in_db(fleet.server.settings, read)


def time_of(point: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(point["time"])


def assert_odometers_counted_from_scratch(
    fleet: Fleet, device_id: str, items: list[dict[str, Any]]
) -> None:
    expected = odometers_from_scratch(fleet, device_id)
    for item in items:
        assert item["odometer_start_m"] == pytest.approx(expected[time_of(item["start"])]), item
        assert item["odometer_end_m"] == pytest.approx(expected[time_of(item["end"])]), item


def counted_from_scratch(
    fleet: Fleet, device_id: str, expected: list[tuple[str, float, float, bool]] = EXPECTED
) -> list[dict[str, Any]]:
    """The device's intervals once they are the expected ones with the odometers counted
    from scratch (a list read page by page while the step rewrites it may mix the two)."""
    api = fleet.tenant.module_api(0)

    def done() -> list[dict[str, Any]] | None:
        items = intervals(api, device_id=device_id)
        try:
            assert summary(items) == expected
            assert_odometers_counted_from_scratch(fleet, device_id, items)
        except AssertionError:
            return None
        return items

    try:
        return wait_until(done, "the odometers counted from scratch")
    except AssertionError:
        items = intervals(api, device_id=device_id)
        assert summary(items) == expected
        assert_odometers_counted_from_scratch(fleet, device_id, items)
        raise


def test_intervals_carry_the_counters_odometer_at_their_start_and_end(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device()
    drive_route(fleet, route, imei=imei)
    api = fleet.tenant.module_api(0)
    detected(api, device_id, EXPECTED)
    items = counted_from_scratch(fleet, device_id)
    chain = [item for item in items if item["kind"] != "stop"]
    assert chain[0]["odometer_start_m"] == 0.0  # the device's first message
    for before, after in itertools.pairwise(chain):
        assert before["end"]["time"] == after["start"]["time"]
        assert after["odometer_start_m"] == pytest.approx(before["odometer_end_m"], abs=1e-6)
    trips = [item for item in items if item["kind"] == "trip"]
    for trip in trips:
        driven = trip["odometer_end_m"] - trip["odometer_start_m"]
        assert driven == pytest.approx(trip["distance_m"], rel=0.01)
    [stop] = [item for item in items if item["kind"] == "stop"]
    assert trips[0]["odometer_start_m"] < stop["odometer_start_m"]
    assert stop["odometer_end_m"] < trips[0]["odometer_end_m"]
    # The open parking ends at the device's newest message: the live odometer.
    device = api.get(f"/module/devices/{device_id}").json()
    assert round(chain[-1]["odometer_end_m"] / 1000, 3) == device["odometer_km"]


def test_after_late_black_box_data_the_odometers_are_those_counted_from_scratch(
    fleet: Fleet,
) -> None:
    route = generated_route()
    device_id, imei = fleet.device()
    d = route.drive
    late_start, late_end = d.at(700), d.at(1210)
    drive_route(fleet, route, 0, late_start, imei)
    drive_route(fleet, route, late_end, None, imei)
    early = counted_from_scratch(fleet, device_id, [i for i in EXPECTED if i[0] != "stop"])
    # The late part made a detour 0.002 degrees (about 120 m) east of the line: from the end
    # of the first trip on, every odometer moves on by what the way off the line and back
    # adds (about 100 m, as the detour went diagonally).
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send(
            [
                wialon_body(
                    START + timedelta(seconds=d.seconds[i]), d.lats[i], d.lon + 0.002, d.speeds[i]
                )
                for i in range(late_start, late_end)
            ]
        )
    finally:
        tracker.close()
    items = counted_from_scratch(fleet, device_id)
    moved = items[-1]["odometer_end_m"] - early[-1]["odometer_end_m"]
    assert moved > 50


def key_bodies(route: Route, keys: dict[tuple[int, int], str]) -> list[str]:
    """The route's messages with a driver key (Wialon IPS `Ibutton`) over the given spans of
    seconds (inclusive); an empty reader elsewhere."""
    bodies = []
    for second, body in zip(route.drive.seconds, route.bodies(), strict=True):
        key = next((k for (a, b), k in keys.items() if a <= second <= b), None)
        assert body.endswith(";NA;NA;")
        bodies.append(body if key is None else body.removesuffix("NA;") + f"{key};")
    return bodies


def create_driver(api: Any, name: str, *codes: str) -> str:
    response = api.post("/module/drivers", json={"name": name, "key_codes": list(codes)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def drivers_shown(items: list[dict[str, Any]]) -> list[tuple[str, float, str | None]]:
    return [(i["kind"], second_of(i["start"]["time"]), i["driver_name"]) for i in items]


def test_intervals_carry_the_driver_assigned_at_their_start(fleet: Fleet) -> None:
    mine, theirs = fleet.tenant.module_api(0), fleet.tenant.module_api(1)
    anna = create_driver(mine, "Anna Berzina", ANNA_KEY)
    peter = create_driver(mine, "Peteris Ozols")
    # The other customer's drivers have the codes this device reads: never its drivers.
    strangers = {
        create_driver(theirs, "Stranger", ANNA_KEY),
        create_driver(theirs, "Other stranger", OTHER_KEY),
    }
    route = generated_route()
    device_id, imei = fleet.device()
    # Anna's key from just before the first trip to just after it; then a code only the other
    # customer knows, during the second trip.
    bodies = key_bodies(route, {(590, 1300): ANNA_KEY, (1850, 2480): OTHER_KEY})
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send(bodies)
    finally:
        tracker.close()
    expected = [
        ("parking", 0.0, None),
        ("trip", 600.0, "Anna Berzina"),
        ("stop", 910.0, "Anna Berzina"),
        ("parking", 1270.0, "Anna Berzina"),  # who parked it
        ("trip", 1860.0, None),
        ("parking", 2470.0, None),
    ]
    detected(mine, device_id, EXPECTED)

    def shown() -> list[dict[str, Any]] | None:
        items = intervals(mine, device_id=device_id)
        return items if drivers_shown(items) == expected else None

    try:
        items = wait_until(shown, "the key's driver on the intervals")
    except AssertionError:
        raise AssertionError(drivers_shown(intervals(mine, device_id=device_id))) from None
    assert {i["driver_id"] for i in items} == {anna, None}
    assert not strangers & {i["driver_id"] for i in intervals(mine)}

    # A manual assignment shows at once: drivers are asked for when the list is read.
    other_id, other_imei = fleet.device()
    drive_route(fleet, route, imei=other_imei)
    detected(mine, other_id, EXPECTED)
    assert {i["driver_id"] for i in intervals(mine, device_id=other_id)} == {None}
    body = {
        "driver_id": peter,
        "device_id": other_id,
        "start": (START - timedelta(hours=1)).isoformat(),
    }
    assert mine.post("/module/drivers/assignments", json=body).status_code == 201
    items = intervals(mine, device_id=other_id)
    assert {(i["driver_id"], i["driver_name"]) for i in items} == {(peter, "Peteris Ozols")}
    assert not strangers & {i["driver_id"] for i in intervals(mine)}


def test_a_page_asks_for_its_drivers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drivers of a page come from one call, whatever its number of intervals, and so do
    the names of the address geofences at their starts and ends."""
    from fleetplane.trips import service

    asked: list[list[tuple[str, datetime]]] = []

    async def drivers_at(session: Any, customer_id: str, pairs: Any) -> dict[Any, Any]:
        asked.append(list(pairs))
        return {pairs[1]: service.drivers.DriverAt("drv_1", "Anna Berzina")}

    places: list[int] = []

    async def address_names_at(
        session: Any, provider_id: str, customer_id: str, points: Any
    ) -> list[str | None]:
        places.append(len(points))
        return ["Depot"] * len(points)

    monkeypatch.setattr(service.drivers, "drivers_at", drivers_at)
    monkeypatch.setattr(service.geofences, "address_names_at", address_names_at)
    rows = [_Row(f"ivl_{n}", START + timedelta(minutes=n)) for n in range(3)]
    shaped = asyncio.run(service.shape_intervals(None, "prv_x", "cus_x", rows, None, None))  # type: ignore[arg-type]
    assert asked == [[("dev_x", row.start_time) for row in rows]]
    assert [item["driver_name"] for item in shaped] == [None, "Anna Berzina", None]
    assert places == [6] and {item["geofence_end"] for item in shaped} == {"Depot"}


class _Row:
    """What `intervals_query` selects, for a page without a database."""

    def __init__(self, id_: str, start: datetime) -> None:
        self.id, self.device_id, self.kind, self.open = id_, "dev_x", "trip", False
        self.start_time, self.end_time = start, start + timedelta(minutes=1)
        self.start_lat = self.start_lon = self.end_lat = self.end_lon = 0.0
        self.distance_m = self.max_speed = self.avg_speed = 0.0
        self.odometer_start_m = self.odometer_end_m = None
