"""The trips module end to end: a tracker drives a generated route over the real Wialon IPS
listener, the trips step runs in the server's pipeline, and the intervals API answers with the
route's trips, stops and parkings (distances within 1 %), also after late black-box data and
after a settings change; bad input, other customers' devices and tracks."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from drives import Drive

from conftest import (
    Api,
    RunningServer,
    Tenant,
    assert_problem,
    create_channel,
    make_tenant,
    server_with,
)
from steps.test_pipeline_steps import wait_until
from wialon_tracker import Tracker, wialon_body

# Recent whole seconds (old enough for no clock check to mind).
START = (datetime.now(UTC) - timedelta(hours=8)).replace(microsecond=0, second=0)


@dataclass
class Route:
    """A drive and its messages as the tracker sends them."""

    drive: Drive

    def bodies(self, first: int = 0, stop: int | None = None) -> list[str]:
        d = self.drive
        return [
            wialon_body(START + timedelta(seconds=d.seconds[i]), d.lats[i], d.lon, d.speeds[i])
            for i in range(len(d.seconds))[first:stop]
        ]

    def metres(self, start: int, end: int) -> float:
        """The distance driven between two of its seconds."""
        d = self.drive
        return d.mileage_m[d.at(end)] - d.mileage_m[d.at(start)]


def generated_route() -> Route:
    """10 min parked; a trip of 5 min at 36 km/h, a 1 min stop, 5 min at 54 km/h; 10 min
    parked; a trip of 10 min at 72 km/h; then parked (6 min so far)."""
    drive = Drive()
    drive.leg(600, 0).leg(300, 36).leg(60, 0).leg(300, 54).leg(600, 0).leg(600, 72).leg(360, 0)
    return Route(drive)


# (kind, start, end) in seconds of the route, and open.
EXPECTED = [
    ("parking", 0, 600, False),
    ("trip", 600, 1270, False),
    ("stop", 910, 960, False),
    ("parking", 1270, 1860, False),
    ("trip", 1860, 2470, False),
    ("parking", 2470, 2820, True),
]


@dataclass
class Fleet:
    server: RunningServer
    tenant: Tenant
    port: int

    def device(self, customer: int = 0) -> tuple[str, str]:
        """A new device of a customer on the listening channel: (id, IMEI)."""
        imei = str(uuid.uuid4().int)[:15]
        body = self.tenant.device_body(
            channel_id=self.channel_id,
            unique_id=imei,
            customer_id=self.tenant.customers[customer]["id"],
        )
        response = self.tenant.api.post("/api/devices", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"], imei

    channel_id: str = ""


@pytest.fixture(scope="module")
def fleet(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from conftest import fresh_database

    path = tmp_path_factory.mktemp("trips")
    fast = {"step_interval_seconds": 0.02, "step_poll_seconds": 0.2}
    with fresh_database(backend, path) as url, server_with(url, path, **fast) as running:
        tenant = make_tenant(running, "Trips provider")
        channel = create_channel(tenant.api, enabled=True)
        yield Fleet(running, tenant, channel["port"], channel["id"])


def intervals(api: Api, **query: Any) -> list[dict[str, Any]]:
    """Every page of the answer."""
    found: list[dict[str, Any]] = []
    params = {"limit": 2, **query}
    while True:
        response = api.get("/module/trips/intervals", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["items"]
        if body["next_cursor"] is None:
            return found
        params["cursor"] = body["next_cursor"]


def second_of(time: str) -> float:
    return (datetime.fromisoformat(time) - START).total_seconds()


def summary(items: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    shown = [
        (i["kind"], second_of(i["start"]["time"]), second_of(i["end"]["time"]), i["open"])
        for i in items
    ]
    return sorted(shown, key=lambda item: (item[1], item[0] != "parking"))


def detected(
    api: Api, device_id: str, expected: list[tuple[str, float, float, bool]]
) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        items = intervals(api, device_id=device_id)
        return items if summary(items) == expected else None

    try:
        return wait_until(done, "the intervals are detected")
    except AssertionError:
        raise AssertionError(f"found {summary(intervals(api, device_id=device_id))}") from None


def drive_route(
    fleet: Fleet, route: Route, first: int = 0, stop: int | None = None, imei: str = ""
) -> None:
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send(route.bodies(first, stop))
    finally:
        tracker.close()


def test_a_route_over_the_listener_gives_its_trips_stops_and_parkings(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device()
    drive_route(fleet, route, imei=imei)
    api = fleet.tenant.module_api(0)
    items = detected(api, device_id, EXPECTED)
    trips = [item for item in items if item["kind"] == "trip"]
    for trip, (start, end) in zip(trips, [(600, 1270), (1860, 2470)], strict=True):
        assert trip["distance_m"] == pytest.approx(route.metres(start, end), rel=0.01)
        assert trip["duration_s"] == end - start
        assert trip["avg_speed"] == pytest.approx(trip["distance_m"] / trip["duration_s"] * 3.6)
        assert trip["odometer_end_m"] > trip["odometer_start_m"] and trip["driver_id"] is None
        assert trip["geofence_start"] is None and trip["clipped"] is False
    assert [trip["max_speed"] for trip in trips] == [54, 72]
    first = trips[0]
    assert first["start"]["lat"] == pytest.approx(route.drive.lats[route.drive.at(600)], abs=1e-5)

    # A range that cuts the first trip: returned whole, clipped; the kinds filter.
    middle = (START + timedelta(seconds=1000)).isoformat()
    cut = intervals(api, device_id=device_id, to=middle, kind="trip")
    assert [(item["id"], item["clipped"]) for item in cut] == [(first["id"], True)]
    assert cut[0]["distance_m"] == first["distance_m"]
    after = intervals(api, device_id=device_id, **{"from": middle})
    assert [item["kind"] for item in after] == ["trip", "parking", "trip", "parking"]
    assert [item["clipped"] for item in after] == [True, False, False, False]

    # The track: every message of the trip, in order.
    track = api.get(f"/module/trips/intervals/{first['id']}/track")
    assert track.status_code == 200, track.text
    feature = track.json()
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "LineString"
    times = [second_of(t) for t in feature["properties"]["times"]]
    assert times == [float(s) for s in range(600, 1271, 10)]
    assert len(feature["geometry"]["coordinates"]) == len(times)
    assert feature["geometry"]["coordinates"][0] == pytest.approx(
        [first["start"]["lon"], first["start"]["lat"]]
    )


def test_late_black_box_data_recomputes_the_intervals(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device()
    d = route.drive
    # Out of coverage from 700 to 1200 s (the stop among it): those messages come later, as a
    # black box, after the ones since.
    late_start, late_end = d.at(700), d.at(1210)
    drive_route(fleet, route, 0, late_start, imei)
    drive_route(fleet, route, late_end, None, imei)
    api = fleet.tenant.module_api(0)
    without_the_stop = [interval for interval in EXPECTED if interval[0] != "stop"]
    detected(api, device_id, without_the_stop)
    drive_route(fleet, route, late_start, late_end, imei)
    items = detected(api, device_id, EXPECTED)
    trips = [item for item in items if item["kind"] == "trip"]
    assert trips[0]["distance_m"] == pytest.approx(route.metres(600, 1270), rel=0.01)


def test_a_settings_change_recomputes_the_intervals(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device()
    drive_route(fleet, route, imei=imei)
    api = fleet.tenant.module_api(0)
    detected(api, device_id, EXPECTED)
    progress_before = step_progress(fleet, device_id)
    # Parkings from 11 minutes on: the 10 minutes between the trips are a stop now.
    response = api.request(
        "PUT", f"/module/trips/settings/{device_id}", json={"min_parking_s": 660}
    )
    assert response.status_code == 200, response.text
    assert response.json()["min_parking_s"] == 660 and response.json()["method"] == "speed"
    assert api.get(f"/module/trips/settings/{device_id}").json() == response.json()
    detected(
        api,
        device_id,
        [
            ("parking", 0, 600, False),
            ("trip", 600, 2470, True),  # the 6 minutes parked at the end may still be a stop
            ("stop", 910, 960, False),
            ("stop", 1270, 1860, False),
            ("stop", 2470, 2820, True),
        ],
    )
    # Only the trips step computed again: the device's counters were left as they were.
    progress_after = step_progress(fleet, device_id)
    assert progress_after["device_counters"] == progress_before["device_counters"]
    assert progress_after["trips"]["updated_at"] > progress_before["trips"]["updated_at"]


def step_progress(fleet: Fleet, device_id: str) -> dict[str, dict[str, Any]]:
    """Each pipeline step's progress on the device, as the provider sees it."""
    response = fleet.tenant.api.get("/api/pipeline/steps", params={"device_id": device_id})
    assert response.status_code == 200, response.text
    return {item["step"]: item for item in response.json()["items"]}


def test_settings_have_defaults_and_bad_input_is_refused(fleet: Fleet) -> None:
    device_id, _ = fleet.device()
    api = fleet.tenant.module_api(0)
    path = f"/module/trips/settings/{device_id}"
    defaults = api.get(path).json()
    assert defaults == {
        "device_id": device_id, "method": "speed", "min_moving_speed": 5.0,
        "min_parking_s": 300, "min_trip_s": 60, "min_trip_m": 100.0, "min_satellites": 4,
        "max_gap_s": 3600, "updated_at": None,
    }  # fmt: skip
    for body, field in [
        ({"min_parking_s": 0}, "min_parking_s"),
        ({"min_moving_speed": -1}, "min_moving_speed"),
        ({"method": "warp"}, "method"),
        ({"max_gap_s": "soon"}, "max_gap_s"),
        ({"min_satellites": 65}, "min_satellites"),
        ({"colour": "red"}, "colour"),
        ({"method": "ignition"}, "method"),  # the device has no ignition sensor
    ]:
        problem = assert_problem(api.request("PUT", path, json=body), 422, "validation_failed")
        assert problem["errors"][0]["loc"][-1] == field, problem
    assert api.get(path).json() == defaults
    sensor = {"device_id": device_id, "name": "Ignition", "type": "ignition", "parameter": "in1"}
    assert fleet.tenant.api.post("/api/sensors", json=sensor).status_code == 201
    ok = api.request("PUT", path, json={"method": "ignition"})
    assert ok.status_code == 200 and ok.json()["method"] == "ignition", ok.text

    start, end = START.isoformat(), (START + timedelta(hours=1)).isoformat()
    late = intervals_problem(api, {"from": end, "to": start})
    assert late["errors"][0]["loc"] == ["query", "from"]
    intervals_problem(api, {"kind": "journey"})
    intervals_problem(api, {"from": "yesterday"})


def intervals_problem(api: Api, query: dict[str, str]) -> dict[str, Any]:
    return assert_problem(
        api.get("/module/trips/intervals", params=query), 422, "validation_failed"
    )


def test_other_customers_devices_and_intervals_are_not_found(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device(customer=0)
    drive_route(fleet, route, 0, 200, imei)
    mine, theirs = fleet.tenant.module_api(0), fleet.tenant.module_api(1)
    items = wait_until(lambda: intervals(mine, device_id=device_id), "some intervals")
    assert_problem(
        theirs.get("/module/trips/intervals", params={"device_id": device_id}), 404, "not_found"
    )
    assert device_id not in {item["device_id"] for item in intervals(theirs)}
    assert_problem(theirs.get(f"/module/trips/intervals/{items[0]['id']}/track"), 404, "not_found")
    assert_problem(theirs.get(f"/module/trips/settings/{device_id}"), 404, "not_found")
    put = theirs.request("PUT", f"/module/trips/settings/{device_id}", json={})
    assert_problem(put, 404, "not_found")
    assert_problem(
        mine.get("/module/trips/intervals", params={"device_id": "dev_nonsense"}), 404, "not_found"
    )
    assert_problem(
        mine.get("/module/trips/intervals/ivl_00000000000000000000000000/track"), 404, "not_found"
    )
    # No filter: all of the customer's devices.
    assert device_id in {item["device_id"] for item in intervals(mine)}


def test_a_moved_devices_intervals_stay_with_the_customer_they_happened_for(fleet: Fleet) -> None:
    route = generated_route()
    device_id, imei = fleet.device(customer=0)
    drive_route(fleet, route, 0, 200, imei)
    first, second = fleet.tenant.module_api(0), fleet.tenant.module_api(1)
    wait_until(lambda: intervals(first, device_id=device_id), "some intervals")
    moved = fleet.tenant.api.patch(
        f"/api/devices/{device_id}", json={"customer_id": second.customer_id}
    )
    assert moved.status_code == 200, moved.text
    assert intervals(second, device_id=device_id) == []
    assert_problem(
        first.get("/module/trips/intervals", params={"device_id": device_id}), 404, "not_found"
    )
