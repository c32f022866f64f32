"""The reports on the trips module's intervals (mileage, trips, parkings, utilization) over
a server of their own: trackers drive routes through the real Wialon IPS listener, the trips
step detects the intervals, and each report's figures are the intervals that
`/module/trips/intervals` returns for the same devices and range, cut at the periods (worked
out here from that list) and, for one route, by hand; in every answer format."""

import csv
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import openpyxl
import pytest
from PIL import Image

from analytics.helpers import (
    add_sensor,
    assert_totals_are_the_rows_added_up,
    get_report,
    report_json,
    set_timezone,
    utc,
)
from conftest import Api, Tenant, assert_problem, create_channel, make_tenant, server_with
from fleetplane.ingest.protocols.wialon_ips import crc_text
from ingest.test_wialon_tcp_server import Tracker
from steps.test_pipeline_steps import wait_until
from trips.drives import Drive

RIGA = "Europe/Riga"  # UTC+2 in November: the local day starts at 22:00 UTC
PER_PACKET = 60
SVG = "{http://www.w3.org/2000/svg}"
TRIP_REPORTS = ("mileage", "trips", "parkings", "utilization")

# Vehicle A, from 21:00 UTC (23:00 in Riga) on 10 Nov: parked 10 min; a trip of 20 min at
# 54 km/h; parked 10 min; a trip of 30 min at 72 km/h across Riga's midnight (22:00 UTC);
# parked since (open). Its ignition is on from 2 minutes before the first trip (idling) to
# the end of it, and while moving in the second.
A_START = utc("2026-11-10T21:00:00Z")
A_EXPECTED = [
    ("parking", 0, 600, False),
    ("trip", 600, 1810, False),
    ("parking", 1810, 2400, False),
    ("trip", 2400, 4210, False),
    ("parking", 4210, 4800, True),
]
# Vehicle B, from 08:00 UTC on 11 Nov: parked 5 min, a trip of 10 min at 36 km/h, parked.
B_START = utc("2026-11-11T08:00:00Z")
B_EXPECTED = [("parking", 0, 300, False), ("trip", 300, 910, False), ("parking", 910, 1500, True)]
# Two local days in Riga: 10 and 11 Nov.
TWO_DAYS = {"from_": "2026-11-09T22:00:00Z", "to": "2026-11-11T22:00:00Z", "group_by": "day"}


def route_a() -> Drive:
    return Drive().leg(600, 0).leg(1200, 54).leg(600, 0).leg(1800, 72).leg(600, 0)


def ignition_a(second: int, speed: float) -> bool:
    return speed > 0 or 480 <= second <= 600


def route_b() -> Drive:
    return Drive().leg(300, 0).leg(600, 36).leg(600, 0)


def wialon_body(at: datetime, lat: float, lon: float, speed: float, inputs: int) -> str:
    def degrees(value: float, width: int) -> str:
        whole = int(value)
        return f"{whole:0{width}d}{(value - whole) * 60:07.4f}"

    return (
        f"{at:%d%m%y;%H%M%S};{degrees(lat, 2)};N;{degrees(lon, 3)};E;{round(speed)};0;20;9;0.9;"
        f"{inputs};0;NA;NA;"
    )


def send(port: int, imei: str, bodies: Sequence[str]) -> None:
    """A Wialon IPS 2.0 tracker's black boxes, each answered with its count."""
    tracker = Tracker(port)

    def ask(kind: str, content: str, separator: str) -> str:
        covered = (content + separator).encode()
        return tracker.ask(f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n")

    try:
        assert ask("L", f"2.0;{imei};NA", ";") == "#AL#1"
        for start in range(0, len(bodies), PER_PACKET):
            chunk = bodies[start : start + PER_PACKET]
            assert ask("B", "|".join(chunk), "|") == f"#AB#{len(chunk)}"
    finally:
        tracker.close()


@dataclass
class Fleet:
    tenant: Tenant
    a: str  # device ids
    b: str
    theirs: str  # customer 1's
    drive_a: Drive

    @property
    def api(self) -> Api:
        return self.tenant.module_api(0)


def add_device(tenant: Tenant, channel_id: str, name: str) -> tuple[str, str]:
    imei = str(uuid.uuid4().int)[:15]
    body = tenant.device_body(
        channel_id=channel_id, unique_id=imei, name=name, customer_id=tenant.customers[0]["id"]
    )
    response = tenant.api.post("/api/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], imei


def drive(port: int, imei: str, route: Drive, start: datetime, ignition: Any = None) -> None:
    bodies = []
    for second, lat, speed in zip(route.seconds, route.lats, route.speeds, strict=True):
        on = ignition(second, speed) if ignition else False
        at = start + timedelta(seconds=second)
        bodies.append(wialon_body(at, lat, route.lon, speed, int(on)))
    send(port, imei, bodies)


@pytest.fixture(scope="module")
def fleet(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from conftest import fresh_database

    path = tmp_path_factory.mktemp("trip_reports")
    fast = {"step_interval_seconds": 0.02, "step_poll_seconds": 0.2}
    with fresh_database(backend, path) as url, server_with(url, path, **fast) as running:
        tenant = make_tenant(running, "Trip reports provider")
        set_timezone(tenant, 0, RIGA)
        channel = create_channel(tenant.api, enabled=True)
        a, imei_a = add_device(tenant, channel["id"], "Truck A")
        b, imei_b = add_device(tenant, channel["id"], "Truck B")
        add_sensor(tenant, a, "ignition", "in1")  # the tracker's first digital input
        drive(channel["port"], imei_a, route_a(), A_START, ignition_a)
        drive(channel["port"], imei_b, route_b(), B_START)
        api = tenant.module_api(0)
        detected(api, a, A_START, A_EXPECTED)
        detected(api, b, B_START, B_EXPECTED)
        theirs = tenant.devices[tenant.customers[1]["id"]][0]["id"]
        yield Fleet(tenant, a, b, theirs, route_a())


def intervals(api: Api, **query: Any) -> list[dict[str, Any]]:
    """Every page of `/module/trips/intervals`."""
    found: list[dict[str, Any]] = []
    params = {("from" if name == "from_" else name): value for name, value in query.items()}
    params["limit"] = 100
    while True:
        response = api.get("/module/trips/intervals", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["items"]
        if body["next_cursor"] is None:
            return found
        params["cursor"] = body["next_cursor"]


def detected(api: Api, device_id: str, start: datetime, expected: list[Any]) -> None:
    def summary() -> list[tuple[str, float, float, bool]]:
        items = intervals(api, device_id=device_id)
        shown = [
            (
                i["kind"],
                (utc(i["start"]["time"]) - start).total_seconds(),
                (utc(i["end"]["time"]) - start).total_seconds(),
                i["open"],
            )
            for i in items
        ]
        return sorted(shown, key=lambda item: (item[1], item[0] != "parking"))

    try:
        wait_until(lambda: summary() == expected, "the intervals are detected")
    except AssertionError:
        raise AssertionError(f"found {summary()}") from None


# ---- the figures of the intervals list, worked out here -----------------------------------


@dataclass
class Part:
    """An interval's part inside [since, until)."""

    seconds: float
    distance_m: float


def part_of(item: dict[str, Any], since: datetime, until: datetime) -> Part:
    start, end = utc(item["start"]["time"]), utc(item["end"]["time"])
    inside = max(0.0, (min(end, until) - max(start, since)).total_seconds())
    whole = (end - start).total_seconds()
    return Part(inside, item["distance_m"] * (inside / whole if whole else 1.0))


def listed(fleet: Fleet, kind: str, since: str, until: str) -> list[dict[str, Any]]:
    query = {"device_id": [fleet.a, fleet.b], "kind": kind, "from_": since, "to": until}
    return intervals(fleet.api, **query)


def parts(items: list[dict[str, Any]], since: str, until: str) -> list[Part]:
    return [part_of(item, utc(since), utc(until)) for item in items]


def half_up(value: float, decimals: int = 0) -> float:
    """Rounded as the reports round: half away from zero."""
    exact = Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    return float(exact)


# Cut ranges: `from` inside the first trip, `to` inside the second and after Riga's
# midnight; and the two local days whole.
RANGES = [
    {"from_": "2026-11-10T21:15:00Z", "to": "2026-11-10T22:06:40Z"},
    {"from_": "2026-11-10T21:15:00Z", "to": "2026-11-11T08:10:00Z"},
    {"from_": TWO_DAYS["from_"], "to": TWO_DAYS["to"]},
]


@pytest.mark.parametrize("window", RANGES)
@pytest.mark.parametrize("group_by", ["day", "none"])
def test_totals_are_the_intervals_of_the_list(
    fleet: Fleet, window: dict[str, str], group_by: str
) -> None:
    since, until = window["from_"], window["to"]
    query = {"device_id": [fleet.a, fleet.b], "group_by": group_by, **window}
    trips = listed(fleet, "trip", since, until)
    parkings = listed(fleet, "parking", since, until)
    trip_parts, parking_parts = parts(trips, since, until), parts(parkings, since, until)
    rows = 2 * (2 if group_by == "day" else 1)  # devices x periods: each rounded once
    trip_seconds = sum(p.seconds for p in trip_parts)
    distance = sum(p.distance_m for p in trip_parts)

    mileage = report_json(fleet.api, "mileage", **query)["totals"]
    assert mileage["trips"] == len(trips)
    assert mileage["distance_m"] == pytest.approx(distance, abs=0.5 * rows)
    assert mileage["distance_km"] == half_up(mileage["distance_m"] / 1000, 1)

    found = report_json(fleet.api, "trips", **query)["totals"]
    assert found["trips"] == len(trips)
    assert found["duration_s"] == trip_seconds
    assert found["distance_m"] == mileage["distance_m"]
    assert found["max_speed"] == max(item["max_speed"] for item in trips)
    assert found["avg_duration_s"] == half_up(trip_seconds / len(trips))
    assert found["avg_speed"] == pytest.approx(distance / trip_seconds * 3.6, abs=0.05)

    parked = report_json(fleet.api, "parkings", **query)["totals"]
    assert parked["parkings"] == len(parkings)
    assert parked["duration_s"] == sum(p.seconds for p in parking_parts)
    if group_by == "none":
        assert parked["longest_s"] == max(p.seconds for p in parking_parts)

    used = report_json(fleet.api, "utilization", **query)["totals"]
    length = (utc(until) - utc(since)).total_seconds()
    assert used["trip_seconds"] == trip_seconds
    assert used["period_seconds"] == 2 * length
    assert used["utilization_pct"] == pytest.approx(trip_seconds / (2 * length) * 100, abs=0.05)


def test_by_day_in_the_customers_time_zone(fleet: Fleet) -> None:
    """A's second trip crosses midnight in Riga (22:00 UTC), not in UTC: it is cut there."""
    a = {"device_id": fleet.a, **TWO_DAYS}
    drive = fleet.drive_a
    trip_2 = drive.mileage_m[drive.at(4210)] - drive.mileage_m[drive.at(2400)]

    found = report_json(fleet.api, "trips", **a)
    assert found["timezone"] == RIGA
    assert [(r["period"], r["period_start"]) for r in found["rows"]] == [
        ("2026-11-10", "2026-11-09T22:00:00Z"),
        ("2026-11-11", "2026-11-10T22:00:00Z"),
    ]
    ten, eleven = found["rows"]
    # 21:10:00-21:30:10 and 21:40-22:00; then 22:00-22:10:10, counted on the 10th.
    assert (ten["trips"], ten["duration_s"]) == (2, 1210 + 1200)
    assert (eleven["trips"], eleven["duration_s"]) == (0, 610)
    assert eleven["avg_duration_s"] is None  # no trip counted there
    assert (ten["max_speed"], eleven["max_speed"]) == (72, 72)
    # 610 of the second trip's 1,810 s: its distance in proportion (about 12.2 km).
    assert eleven["distance_m"] == pytest.approx(trip_2 * 610 / 1810, abs=0.5)
    assert eleven["avg_speed"] == pytest.approx(72, abs=0.6)

    mileage = report_json(fleet.api, "mileage", **a)
    assert [r["distance_m"] for r in mileage["rows"]] == [ten["distance_m"], eleven["distance_m"]]
    assert mileage["rows"][1]["distance_km"] == half_up(eleven["distance_m"] / 1000, 1)

    parkings = report_json(fleet.api, "parkings", **a)
    # 21:00-21:10 and 21:30:10-21:40; the open one from 22:10:10 up to its last message.
    assert [(r["parkings"], r["duration_s"], r["longest_s"]) for r in parkings["rows"]] == [
        (2, 600 + 590, 600),
        (1, 590, 590),
    ]
    assert parkings["totals"]["avg_duration_s"] == 593  # (600 + 590 + 590) / 3

    used = report_json(fleet.api, "utilization", **a)
    assert [(r["trip_seconds"], r["period_seconds"]) for r in used["rows"]] == [
        (2410, 86_400),
        (610, 86_400),
    ]
    assert [r["utilization_pct"] for r in used["rows"]] == [2.8, 0.7]  # 2,410 / 86,400
    assert used["totals"]["utilization_pct"] == 1.7  # 3,020 / 172,800
    # Ignition from 2 minutes before the first trip (at rest: idling) to its end
    # (21:08-21:30:10), and while moving in the second (21:40:10-22:00, 22:00-22:10:10).
    assert [(r["engine_seconds"], r["idle_seconds"]) for r in used["rows"]] == [
        (1330 + 1190, 130),
        (610, 0),
    ]

    # In UTC the whole drive is on the 10th.
    set_timezone(fleet.tenant, 0, "UTC")
    try:
        utc_days = {"from_": "2026-11-10T00:00:00Z", "to": "2026-11-12T00:00:00Z"}
        by_utc = report_json(fleet.api, "trips", device_id=fleet.a, group_by="day", **utc_days)
        assert [(r["trips"], r["duration_s"]) for r in by_utc["rows"]] == [(2, 3020), (0, 0)]
    finally:
        set_timezone(fleet.tenant, 0, RIGA)


def test_a_device_without_an_ignition_sensor_has_no_engine_figures(fleet: Fleet) -> None:
    body = report_json(fleet.api, "utilization", device_id=fleet.b, **TWO_DAYS)
    assert [(r["trip_seconds"], r["engine_seconds"]) for r in body["rows"]] == [
        (0, None),
        (610, None),
    ]


def test_devices_without_intervals_have_zero_rows(fleet: Fleet) -> None:
    quiet = fleet.tenant.devices[fleet.tenant.customers[0]["id"]][0]["id"]
    body = report_json(fleet.api, "trips", device_id=quiet, **TWO_DAYS)
    assert [(r["trips"], r["duration_s"], r["max_speed"]) for r in body["rows"]] == [
        (0, 0, None),
        (0, 0, None),
    ]
    assert body["totals"]["avg_speed"] is None


@pytest.mark.parametrize("report", TRIP_REPORTS)
def test_another_customers_device_is_not_found(fleet: Fleet, report: str) -> None:
    response = get_report(fleet.api, report, device_id=[fleet.a, fleet.theirs], **TWO_DAYS)
    assert_problem(response, 404, "not_found")
    theirs = fleet.tenant.module_api(1)
    assert_problem(get_report(theirs, report, device_id=fleet.a, **TWO_DAYS), 404, "not_found")
    everything = report_json(theirs, report, **TWO_DAYS)
    assert fleet.a not in {row["device_id"] for row in everything["rows"]}


# ---- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("report", TRIP_REPORTS)
def test_every_format_of_the_reports_on_trips(fleet: Fleet, report: str) -> None:
    query = {"device_id": [fleet.a, fleet.b], **TWO_DAYS}
    body = report_json(fleet.api, report, **query)
    assert_totals_are_the_rows_added_up(body)
    names = [figure["name"] for figure in body["figures"]]

    answer = get_report(fleet.api, report, format="csv", **query)
    assert answer.status_code == 200, answer.text
    read = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["device_name"], r["period"]) for r in read] == [
        (r["device_name"], r["period"]) for r in body["rows"]
    ]
    for line, row in zip(read, body["rows"], strict=True):
        for name in names:
            assert line[name] == ("" if row[name] is None else str(row[name]))

    answer = get_report(fleet.api, report, format="xlsx", **query)
    assert answer.status_code == 200, answer.text
    sheet = openpyxl.load_workbook(io.BytesIO(answer.content), data_only=True)["Report"]
    header = [cell.value for cell in sheet[1]]
    titles = [figure["title"] for figure in body["figures"]]
    assert all(any(h.startswith(t) for h in header[5:]) for t in titles), header
    assert sheet.cell(2 + len(body["rows"]), 1).value == "Total"

    answer = get_report(fleet.api, report, format="png", **query)
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(answer.content))
    image.verify()
    assert image.format == "PNG"

    answer = get_report(fleet.api, report, format="svg", **query)
    assert answer.status_code == 200, answer.text
    root = ET.fromstring(answer.content)
    texts = {"".join(element.itertext()) for element in root.iter(f"{SVG}text")}
    assert body["title"] in texts and {"Truck A", "Truck B"} <= texts


def test_ratio_totals_in_the_workbook_are_formulas_of_the_totals(fleet: Fleet) -> None:
    query = {"device_id": [fleet.a, fleet.b], **TWO_DAYS}
    body = report_json(fleet.api, "trips", **query)
    answer = get_report(fleet.api, "trips", format="xlsx", **query)
    content = io.BytesIO(answer.content)
    formulas = openpyxl.load_workbook(content)["Report"]
    cached = openpyxl.load_workbook(content, data_only=True)["Report"]
    total = 2 + len(body["rows"])
    last = total - 1
    # Columns: 5 text ones, then trips (F), time (G), average trip (H), distance (I), max
    # speed (J) and average speed (K): the ratios' formulas divide the totals.
    trips, time, distance = f"SUM(F2:F{last})", f"SUM(G2:G{last})", f"SUM(I2:I{last})"
    assert formulas.cell(total, 8).value == f'=IF({trips}=0,"",{time}/{trips}*1.0)'
    assert cached.cell(total, 8).value == timedelta(seconds=body["totals"]["avg_duration_s"])
    # m per day as km/h: x 3.6 / 86,400.
    speed = f'=IF({time}=0,"",{distance}/{time}*4.1666666666666665E-05)'
    assert formulas.cell(total, 11).value == speed
    assert cached.cell(total, 11).value == body["totals"]["avg_speed"]
    assert formulas.cell(total, 11).number_format == "#,##0.0"


def test_open_intervals_count_up_to_their_last_message(fleet: Fleet) -> None:
    """The open parking of A counts to its last message (21:00 + 4,800 s), not to `to`."""
    query = {"device_id": fleet.a, "from_": "2026-11-10T22:15:00Z", "to": "2026-11-11T00:00:00Z"}
    [row] = report_json(fleet.api, "parkings", **query)["rows"]
    assert (row["parkings"], row["duration_s"]) == (1, 300)  # 22:15 to 22:20
    [item] = listed(fleet, "parking", query["from_"], query["to"])
    assert item["open"] is True
