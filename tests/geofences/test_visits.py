"""Geofence visits end to end: a tracker drives north along a meridian over the real Wialon IPS
listener, the visits step runs in the server's steps process, and the visits list answers with
each geofence's enter, exit, duration and distance inside: overlapping geofences, a circle, a
polygon with a hole, a corridor, dwell delays; late black-box data; a geofence made after the
first data; other customers; trips named after address geofences; live events."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic

from conftest import Api, RunningServer, Tenant, assert_problem, create_channel, make_tenant
from devices.test_live_state_everywhere import StateEvents
from steps.test_pipeline_steps import wait_until
from wialon_tracker import Tracker, wialon_body

GEODESIC = Geodesic.WGS84
START = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0, second=0)
LAT0 = 56.9
STEP_M = 100.0  # 36 km/h, a message every 10 s
STEP_S = 10


def lat_at(metres: float) -> float:
    """The latitude `metres` north of LAT0 along a meridian."""
    return float(GEODESIC.Direct(LAT0, 0.0, 0.0, metres)["lat2"])


@dataclass
class Route:
    """A drive north along the meridian `lon`: message i at i * STEP_S seconds and i * STEP_M
    metres, for i in 0..count-1."""

    lon: float
    count: int = 71
    start: datetime = START

    def bodies(self, first: int = 0, stop: int | None = None) -> list[str]:
        return [
            wialon_body(self.time(i), lat_at(i * STEP_M), self.lon, 36)
            for i in range(self.count)[first:stop]
        ]

    def time(self, i: int) -> datetime:
        return self.start + timedelta(seconds=i * STEP_S)

    def circle(self, name: str, at_m: float, radius_m: float, **fields: Any) -> dict[str, Any]:
        geometry = {"type": "Point", "coordinates": [self.lon, lat_at(at_m)]}
        return {"name": name, "geometry": geometry, "radius_m": radius_m, **fields}

    def box(
        self, name: str, south_m: float, north_m: float, hole: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        def ring(south: float, north: float, half_width: float) -> list[list[float]]:
            west, east, s, n = self.lon - half_width, self.lon + half_width, south, north
            return [[west, s], [east, s], [east, n], [west, n], [west, s]]

        rings = [ring(lat_at(south_m), lat_at(north_m), 0.01)]
        if hole is not None:
            rings.append(ring(lat_at(hole[0]), lat_at(hole[1]), 0.005))
        return {"name": name, "geometry": {"type": "Polygon", "coordinates": rings}}

    def corridor(self, name: str, from_m: float, to_m: float, width_m: float) -> dict[str, Any]:
        line = [[self.lon, lat_at(from_m)], [self.lon, lat_at(to_m)]]
        geometry = {"type": "LineString", "coordinates": line}
        return {"name": name, "geometry": geometry, "width_m": width_m}


# The geofences along a route and the visits through them: (name, enter i, exit i), messages
# i..exit-1 inside. The circle and the polygon overlap at 1200-1300 m; the polygon's hole
# (1650-1950 m) splits its visit in two; "Brief stop" (dwell 60 s) holds the device 30 s only.
def route_geofences(route: Route) -> list[dict[str, Any]]:
    return [
        route.circle("Circle", 1000, 350),
        route.box("Yard", 1150, 2450, hole=(1650, 1950)),
        route.corridor("Road", 3000, 4000, 100),
        route.circle("Brief stop", 5000, 120, dwell_s=60),
        route.circle("Long stop", 6000, 250, dwell_s=30),
    ]


EXPECTED = [
    ("Circle", 7, 14),
    ("Yard", 12, 17),
    ("Yard", 20, 25),
    ("Road", 30, 41),
    ("Long stop", 58, 63),
]


@dataclass
class Fleet:
    server: RunningServer
    tenant: Tenant
    port: int
    channel_id: str

    def device(self, customer: int = 0) -> tuple[str, str]:
        imei = str(uuid.uuid4().int)[:15]
        body = self.tenant.device_body(
            channel_id=self.channel_id,
            unique_id=imei,
            customer_id=self.tenant.customers[customer]["id"],
        )
        response = self.tenant.api.post("/api/devices", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"], imei

    def drive(self, imei: str, bodies: list[str]) -> None:
        tracker = Tracker(self.port, imei)
        try:
            tracker.send(bodies)
        finally:
            tracker.close()

    def geofences(self, bodies: list[dict[str, Any]], customer: int = 0) -> dict[str, str]:
        """Creates them: id by name."""
        api = self.tenant.module_api(customer)
        made = {}
        for body in bodies:
            response = api.post("/module/geofences", json=body)
            assert response.status_code == 201, response.text
            made[body["name"]] = response.json()["id"]
        return made


@pytest.fixture(scope="module")
def fleet(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from conftest import fresh_database, server_with

    path = tmp_path_factory.mktemp("visits")
    fast = {"step_interval_seconds": 0.02, "step_poll_seconds": 0.2}
    with fresh_database(backend, path) as url, server_with(url, path, **fast) as running:
        tenant = make_tenant(running, "Visits provider")
        channel = create_channel(tenant.api, enabled=True)
        yield Fleet(running, tenant, channel["port"], channel["id"])


def visits(api: Api, **query: Any) -> list[dict[str, Any]]:
    """Every page of the answer."""
    found: list[dict[str, Any]] = []
    params = {"limit": 2, **query}
    while True:
        response = api.get("/module/geofences/visits", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["items"]
        if body["next_cursor"] is None:
            return found
        params["cursor"] = body["next_cursor"]


def summary(route: Route, items: list[dict[str, Any]]) -> list[tuple[str, int, int | None]]:
    def index(time: str | None) -> int | None:
        if time is None:
            return None
        return round((datetime.fromisoformat(time) - route.start).total_seconds() / STEP_S)

    shown = [(item["geofence_name"], index(item["enter"]), index(item["exit"])) for item in items]
    return sorted(shown, key=lambda item: (item[1] or 0, item[0]))


def found_visits(
    api: Api, route: Route, device_id: str, expected: list[tuple[str, int, int | None]]
) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        items = visits(api, device_id=device_id)
        return items if summary(route, items) == expected else None

    try:
        return wait_until(done, "the visits are found")
    except AssertionError:
        raise AssertionError(f"found {summary(route, visits(api, device_id=device_id))}") from None


def test_a_route_through_geofences_gives_their_visits(fleet: Fleet) -> None:
    route = Route(lon=24.1)
    ids = fleet.geofences(route_geofences(route))
    device_id, imei = fleet.device()
    fleet.drive(imei, route.bodies())
    api = fleet.tenant.module_api(0)
    items = found_visits(api, route, device_id, EXPECTED)
    for item, (name, enter, exit_) in zip(items, EXPECTED, strict=True):
        assert item["geofence_id"] == ids[name]
        assert item["duration_s"] == (exit_ - enter) * STEP_S
        # The segments between consecutive messages inside (positions to 0.2 m).
        assert item["distance_m"] == pytest.approx((exit_ - 1 - enter) * STEP_M, abs=2)
        assert item["enter_lat"] == pytest.approx(lat_at(enter * STEP_M), abs=1e-5)
        assert item["exit_lat"] == pytest.approx(lat_at(exit_ * STEP_M), abs=1e-5)
    # Filters: a geofence, and a range (the visits that overlap it).
    yard = visits(api, device_id=device_id, geofence_id=ids["Yard"])
    assert [item["id"] for item in yard] == [items[1]["id"], items[2]["id"]]
    ranged = visits(
        api,
        device_id=device_id,
        **{"from": route.time(16).isoformat(), "to": route.time(31).isoformat()},
    )
    assert [item["geofence_name"] for item in ranged] == ["Yard", "Yard", "Road"]
    assert_problem(
        api.get("/module/geofences/visits", params={"geofence_id": "geo_nonsense"}),
        404,
        "not_found",
    )
    bad = api.get(
        "/module/geofences/visits",
        params={"from": route.time(5).isoformat(), "to": route.time(1).isoformat()},
    )
    assert assert_problem(bad, 422, "validation_failed")["errors"][0]["loc"] == ["query", "from"]


def test_a_visit_stays_open_while_inside(fleet: Fleet) -> None:
    route = Route(lon=24.2, count=12)
    fleet.geofences([route.circle("Here", 1000, 350)])
    device_id, imei = fleet.device()
    fleet.drive(imei, route.bodies())
    api = fleet.tenant.module_api(0)
    [item] = found_visits(api, route, device_id, [("Here", 7, None)])
    assert item["exit"] is None and item["duration_s"] == 4 * STEP_S
    assert item["distance_m"] == pytest.approx(4 * STEP_M, abs=2)
    # Still open when the device leaves later.
    fleet.drive(imei, Route(lon=24.2, count=20).bodies(12))
    found_visits(api, route, device_id, [("Here", 7, 14)])


def test_late_data_recomputes_the_visits(fleet: Fleet) -> None:
    route = Route(lon=24.3)
    fleet.geofences(route_geofences(route))
    device_id, imei = fleet.device()
    # Out of coverage from 100 to 290 s: those messages come later, as a black box.
    fleet.drive(imei, route.bodies(0, 10))
    fleet.drive(imei, route.bodies(30))
    api = fleet.tenant.module_api(0)
    found_visits(api, route, device_id, [("Circle", 7, 30), *EXPECTED[3:]])
    fleet.drive(imei, route.bodies(10, 30))
    items = found_visits(api, route, device_id, EXPECTED)
    assert len({item["id"] for item in items}) == len(EXPECTED)
    assert items[0]["distance_m"] == pytest.approx(6 * STEP_M, abs=2)


def test_a_geofence_made_after_data_is_used_for_the_next_messages(fleet: Fleet) -> None:
    route = Route(lon=24.4)
    fleet.geofences([route.circle("Early", 1000, 350)])
    device_id, imei = fleet.device()
    fleet.drive(imei, route.bodies(0, 20))
    api = fleet.tenant.module_api(0)
    found_visits(api, route, device_id, [("Early", 7, 14)])
    fleet.geofences([route.corridor("Later", 3000, 4000, 100)])
    fleet.drive(imei, route.bodies(20))
    found_visits(api, route, device_id, [("Early", 7, 14), ("Later", 30, 41)])


def test_other_customers_geofences_and_visits_stay_theirs(fleet: Fleet) -> None:
    route = Route(lon=24.6)
    theirs_ids = fleet.geofences([route.circle("Theirs", 1000, 350)], customer=1)
    fleet.geofences([route.circle("Mine", 3000, 350)], customer=0)
    mine, theirs = fleet.tenant.module_api(0), fleet.tenant.module_api(1)
    my_device, my_imei = fleet.device(customer=0)
    their_device, their_imei = fleet.device(customer=1)
    fleet.drive(my_imei, route.bodies())
    fleet.drive(their_imei, route.bodies())
    found_visits(mine, route, my_device, [("Mine", 27, 34)])
    found_visits(theirs, route, their_device, [("Theirs", 7, 14)])
    assert their_device not in {item["device_id"] for item in visits(mine)}
    assert my_device not in {item["device_id"] for item in visits(theirs)}
    assert_problem(
        theirs.get("/module/geofences/visits", params={"device_id": my_device}), 404, "not_found"
    )
    assert_problem(
        mine.get("/module/geofences/visits", params={"geofence_id": theirs_ids["Theirs"]}),
        404,
        "not_found",
    )


def test_trips_are_named_after_the_address_geofences_at_their_ends(fleet: Fleet) -> None:
    lon = 24.8
    # Parked 10 min at 0 m, a trip of 5 min at 36 km/h (3000 m north), parked 10 min.
    start_at = START + timedelta(minutes=20)
    bodies = []
    for second in range(0, 1500 + 1, 10):
        moving = 600 <= second < 900
        metres = min(max(second - 600, 0), 300) * 10.0
        bodies.append(wialon_body(start_at + timedelta(seconds=second), lat_at(metres), lon,
                                  36 if moving else 0))  # fmt: skip
    route = Route(lon=lon)
    fleet.geofences(
        [
            {**route.circle("Town", 1500, 5000), "is_address": True},
            {**route.circle("Depot", 0, 150), "is_address": True},
            route.circle("Not an address", 0, 50),
            {**route.circle("Client", 3000, 150), "is_address": True},
        ]
    )
    device_id, imei = fleet.device()
    fleet.drive(imei, bodies)
    api = fleet.tenant.module_api(0)

    def trip() -> dict[str, Any] | None:
        response = api.get("/module/trips/intervals", params={"device_id": device_id})
        assert response.status_code == 200, response.text
        found = [item for item in response.json()["items"] if item["kind"] == "trip"]
        return found[0] if found and not found[0]["open"] else None

    found = wait_until(trip, "the trip is found")
    assert (found["geofence_start"], found["geofence_end"]) == ("Depot", "Client")
    others = api.get("/module/trips/intervals", params={"device_id": device_id}).json()["items"]
    parkings = [item for item in others if item["kind"] == "parking"]
    assert {p["geofence_start"] for p in parkings} == {"Depot", "Client"}


def test_enters_exits_and_trips_arrive_on_the_event_stream(fleet: Fleet) -> None:
    lon = 25.0
    # Recent: a minute stopped, 200 s at 36 km/h (2000 m), then stopped for six minutes.
    start_at = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
    bodies, seconds = [], list(range(0, 620 + 1, 10))
    for second in seconds:
        moving = 60 <= second < 260
        metres = min(max(second - 60, 0), 200) * 10.0
        bodies.append(wialon_body(start_at + timedelta(seconds=second), lat_at(metres), lon,
                                  36 if moving else 0))  # fmt: skip
    route = Route(lon=lon)
    ids = fleet.geofences([route.circle("Gate", 1000, 150)])
    device_id, imei = fleet.device()
    api = fleet.tenant.module_api(0)
    stream = StateEvents(fleet.server, api.headers())
    try:
        fleet.drive(imei, bodies)

        def arrived() -> dict[str, dict[str, Any]] | None:
            kinds = {"geofence_enter", "geofence_exit", "trip_start", "trip_end"}
            found = {e["type"]: e for e in stream.events if e["type"] in kinds}
            return found if set(found) == kinds else None

        events = wait_until(arrived, "the live events arrive")
    finally:
        stream.close()
    enter, exit_ = events["geofence_enter"], events["geofence_exit"]
    for event in (enter, exit_):
        assert event["device_id"] == device_id and event["geofence_id"] == ids["Gate"]
        assert event["geofence_name"] == "Gate" and event["visit_id"].startswith("gvs_")
    # In at 900 m (150 s), out at 1200 m (180 s).
    assert datetime.fromisoformat(enter["time"]) == start_at + timedelta(seconds=150)
    assert datetime.fromisoformat(exit_["time"]) == start_at + timedelta(seconds=180)
    assert enter["lat"] == pytest.approx(lat_at(900), abs=1e-5)
    start, end = events["trip_start"], events["trip_end"]
    assert start["device_id"] == end["device_id"] == device_id
    assert start["trip_id"] == end["trip_id"]
    listed = api.get("/module/trips/intervals", params={"device_id": device_id, "kind": "trip"})
    [trip] = listed.json()["items"]
    assert trip["id"] == start["trip_id"] and not trip["open"]
    assert (start["time"], start["lat"]) == (trip["start"]["time"], trip["start"]["lat"])
    assert (end["time"], end["distance_m"]) == (trip["end"]["time"], trip["distance_m"])
    assert end["distance_m"] == pytest.approx(2000, rel=0.02)
    # Each once.
    assert sum(e["type"] == "geofence_enter" for e in stream.events) == 1
    assert sum(e["type"] == "trip_end" for e in stream.events) == 1
