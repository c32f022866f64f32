"""The reports computed from messages, over a real server and database: each on a history
built by hand, its figures worked out by hand in the test."""

import pytest
from geographiclib.geodesic import Geodesic

from analytics.helpers import (
    add_sensor,
    device_of,
    figures_by_period,
    message,
    report_json,
    set_timezone,
    store,
)
from conftest import RunningServer, Tenant, create_channel
from fleetplane.ingest.protocols.wialon_ips import crc_text
from ingest.test_wialon_tcp_server import Tracker, v2

RIGA = "Europe/Riga"  # UTC+3 in summer, UTC+2 from 2026-10-25 04:00 local (01:00 UTC)


def test_engine_hours_by_day_across_a_daylight_saving_change(
    server: RunningServer, tenant: Tenant
) -> None:
    set_timezone(tenant, 0, RIGA)
    device = device_of(tenant)
    add_sensor(tenant, device, "ignition", "ign")
    store(
        server,
        device,
        [
            # Local 24 Oct 23:00 to 25 Oct 00:30: the span 20:30-21:30 crosses midnight (21:00).
            message("2026-10-24T20:00:00Z", ign=1),
            message("2026-10-24T20:10:00Z", ign=0, filtered=True),  # ignored: filtered out
            message("2026-10-24T20:30:00Z", ign=1),
            message("2026-10-24T21:30:00Z", ign=0),
            # 25 Oct (25 hours long): a two-hour silence counts 3,600 s; a message without an
            # ignition value keeps it on.
            message("2026-10-25T10:00:00Z", ign=1),
            message("2026-10-25T12:00:00Z", ign=1),
            message("2026-10-25T12:15:00Z", speed=40),
            message("2026-10-25T12:30:00Z", ign=0),
            # The span 21:40-22:20 crosses 26 Oct's midnight, now at 22:00 UTC.
            message("2026-10-25T21:40:00Z", ign=1),
            message("2026-10-25T22:20:00Z", ign=1),
            message("2026-10-25T22:50:00Z", ign=0),
        ],
    )
    body = report_json(
        tenant.module_api(0),
        "engine_hours",
        device_id=device,
        from_="2026-10-23T21:00:00Z",  # 24 Oct, local midnight
        to="2026-10-26T22:00:00Z",  # 27 Oct, local midnight
        group_by="day",
    )
    assert body["timezone"] == RIGA
    assert body["group_by"] == "day"
    assert [(r["period"], r["period_start"], r["period_end"]) for r in body["rows"]] == [
        ("2026-10-24", "2026-10-23T21:00:00Z", "2026-10-24T21:00:00Z"),
        ("2026-10-25", "2026-10-24T21:00:00Z", "2026-10-25T22:00:00Z"),
        ("2026-10-26", "2026-10-25T22:00:00Z", "2026-10-26T22:00:00Z"),
    ]
    assert figures_by_period(body, "engine_seconds") == {
        "2026-10-24": 1800 + 1800,
        "2026-10-25": 1800 + 3600 + 900 + 900 + 1200,
        "2026-10-26": 1200 + 1800,
    }
    assert body["totals"] == {"engine_seconds": 15000}


def test_engine_hours_by_week_and_month_across_a_month_end(
    server: RunningServer, tenant: Tenant
) -> None:
    set_timezone(tenant, 0, RIGA)
    device = device_of(tenant)
    add_sensor(tenant, device, "ignition", "ign")
    store(
        server,
        device,
        [
            # Local Saturday 31 Oct 23:30 to Sunday 1 Nov 00:30 (week 44).
            message("2026-10-31T21:30:00Z", ign=1),
            message("2026-10-31T22:30:00Z", ign=0),
            # Local Sunday 1 Nov 23:30 to Monday 2 Nov 00:30: weeks 44 and 45.
            message("2026-11-01T21:30:00Z", ign=1),
            message("2026-11-01T22:30:00Z", ign=0),
        ],
    )
    api = tenant.module_api(0)
    window = {"device_id": device, "from_": "2026-09-30T21:00:00Z", "to": "2026-11-30T22:00:00Z"}
    by_month = report_json(api, "engine_hours", group_by="month", **window)
    assert figures_by_period(by_month, "engine_seconds") == {
        "2026-10": 1800,
        "2026-11": 1800 + 3600,
    }
    assert by_month["rows"][1]["period_start"] == "2026-10-31T22:00:00Z"
    by_week = report_json(api, "engine_hours", group_by="week", **window)
    weeks = figures_by_period(by_week, "engine_seconds")
    assert weeks["2026-W44"] == 3600 + 1800
    assert weeks["2026-W45"] == 1800
    assert sum(weeks.values()) == 7200
    assert next(iter(weeks)) == "2026-W40"  # Thursday 1 Oct: its week, cut to `from`
    assert by_week["rows"][0]["period_start"] == "2026-09-30T21:00:00Z"
    week_45 = next(row for row in by_week["rows"] if row["period"] == "2026-W45")
    assert week_45["period_start"] == "2026-11-01T22:00:00Z"  # Monday, local midnight
    whole = report_json(api, "engine_hours", group_by="none", **window)
    assert [(r["period"], r["engine_seconds"]) for r in whole["rows"]] == [(None, 7200)]


def test_idling_counts_long_idle_periods(server: RunningServer, tenant: Tenant) -> None:
    device = device_of(tenant)
    add_sensor(tenant, device, "ignition", "ign")
    store(
        server,
        device,
        [
            message("2026-11-02T08:00:00Z", ign=1, speed=0),  # idle 400 s
            message("2026-11-02T08:01:00Z", ign=1, speed=3),
            message("2026-11-02T08:03:20Z", ign=1),  # no speed: still standing
            message("2026-11-02T08:06:40Z", ign=1, speed=30),
            message("2026-11-02T08:08:20Z", ign=1, speed=2),  # idle 100 s
            message("2026-11-02T08:10:00Z", ign=1, speed=40),
            message("2026-11-02T08:11:40Z", ign=0, speed=0),  # engine off: not idling
            message("2026-11-02T08:16:40Z", ign=1, speed=0),  # idle 200 s
            message("2026-11-02T08:20:00Z", ign=1, speed=50),
            message("2026-11-02T08:25:00Z", ign=0, speed=0),
        ],
    )
    api = tenant.module_api(0)
    window = {"device_id": device, "from_": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
    [row] = report_json(api, "idling", **window)["rows"]
    assert (row["idle_seconds"], row["idle_periods"], row["long_idle_seconds"]) == (700, 1, 400)
    shorter = report_json(api, "idling", min_idle_s=150, **window)
    assert shorter["parameters"] == {"min_idle_s": 150}
    [row] = shorter["rows"]
    assert (row["idle_seconds"], row["idle_periods"], row["long_idle_seconds"]) == (700, 2, 600)


def step_m(n: int) -> float:
    """The n-th step along a meridian (0.0025 degrees of latitude from 56 degrees north) on the
    WGS 84 ellipsoid, by GeographicLib."""
    start = 56 + 0.0025 * n
    return float(Geodesic.WGS84.Inverse(start, 24.0, start + 0.0025, 24.0)["s12"])


def test_speeding_episodes_time_distance_and_top_speed(
    server: RunningServer, tenant: Tenant
) -> None:
    device = device_of(tenant)
    speeds = [80, 95, 100, 85, 120, 70]
    store(
        server,
        device,
        [
            message(f"2026-11-03T09:00:{10 * n:02d}Z", speed=s, lat=56 + 0.0025 * n, lon=24.0)
            for n, s in enumerate(speeds)
        ],
    )
    api = tenant.module_api(0)
    window = {"device_id": device, "from_": "2026-11-03T00:00:00Z", "to": "2026-11-04T00:00:00Z"}
    body = report_json(api, "speeding", **window)
    assert body["parameters"] == {"threshold": 90}
    [row] = body["rows"]
    assert row["episodes"] == 2  # 95-100, then 120
    assert row["speeding_seconds"] == 30  # from each message above 90 to the next
    assert row["max_speed"] == 120
    assert row["speeding_distance_m"] == round(step_m(1) + step_m(2) + step_m(4))
    [stricter] = report_json(api, "speeding", threshold=110, **window)["rows"]
    assert (stricter["episodes"], stricter["speeding_seconds"]) == (1, 10)
    assert stricter["speeding_distance_m"] == round(step_m(4))


def fuel_history() -> list[tuple[int, float, float]]:
    """(minute, litres, km/h): driving, parked with a sensor spike, a fill, driving, a drain
    while parked."""
    driving = [(m, 60.0 - m, 50.0) for m in range(5)]  # 60 -> 56
    parked = [(m, 80.0 if m == 10 else 56.0, 0.0) for m in range(5, 16)]
    fill = [(16, 71.0, 0.0), *((m, 86.0, 0.0) for m in range(17, 23))]
    driving_again = [(m, 86.0 - (m - 22), 50.0) for m in range(23, 28)]  # 85 -> 81
    drain = [(28, 81.0, 0.0), (29, 81.0, 0.0), (30, 66.0, 0.0)]
    after = [(m, 51.0, 0.0) for m in range(31, 37)]
    return driving + parked + fill + driving_again + drain + after


@pytest.mark.parametrize(
    ("smoothing", "fills", "filled", "drains", "drained", "consumed"),
    [
        (5, 1, 30.0, 1, 30.0, 60 + 30 - 51),  # the spike is smoothed away
        (1, 2, 54.0, 2, 54.0, 60 + 54 - 51),  # unsmoothed, the spike is a fill and a drain
    ],
)
def test_fuel_fills_drains_and_consumption(
    server: RunningServer,
    tenant: Tenant,
    smoothing: int,
    fills: int,
    filled: float,
    drains: int,
    drained: float,
    consumed: float,
) -> None:
    device = device_of(tenant)
    # The sensor sends tenths of a litre: its calibration table turns them into litres.
    table = [{"x": 0, "y": 0}, {"x": 1000, "y": 100}]
    add_sensor(tenant, device, "fuel_level", "fuel", calibration=table)
    store(
        server,
        device,
        [
            message(f"2026-11-04T10:{minute:02d}:00Z", speed=speed, fuel=litres * 10)
            for minute, litres, speed in fuel_history()
        ],
    )
    body = report_json(
        tenant.module_api(0),
        "fuel",
        device_id=device,
        from_="2026-11-04T10:00:00Z",
        to="2026-11-04T10:37:00Z",
        smoothing=smoothing,
    )
    [row] = body["rows"]
    assert (row["start_level_l"], row["end_level_l"]) == (60.0, 51.0)
    assert (row["fills"], row["filled_l"]) == (fills, filled)
    assert (row["drains"], row["drained_l"]) == (drains, drained)
    assert row["consumed_l"] == consumed
    assert "start_level_l" not in body["totals"]
    assert body["parameters"]["smoothing"] == smoothing


def test_a_device_without_the_sensor_has_null_figures(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    body = report_json(
        api, "engine_hours", from_="2026-11-01T00:00:00Z", to="2026-11-03T00:00:00Z",
        group_by="day",
    )  # fmt: skip
    devices = tenant.devices[tenant.customers[0]["id"]]
    assert [row["device_id"] for row in body["rows"]] == [
        device["id"] for device in devices for _ in range(2)
    ]
    assert all(row["engine_seconds"] is None for row in body["rows"])
    assert body["totals"] == {"engine_seconds": 0}


def test_engine_hours_of_messages_sent_over_wialon_ips(tenant: Tenant) -> None:
    """The same rule over the real intake: a black box of a Wialon IPS 2.0 tracker."""
    channel = create_channel(tenant.api, enabled=True)
    imei = "354330030099001"
    body = tenant.device_body(
        channel_id=channel["id"], unique_id=imei, customer_id=tenant.customers[0]["id"]
    )
    device = tenant.api.post("/api/devices", json=body).json()["id"]
    add_sensor(tenant, device, "ignition", "in1")  # the tracker's first digital input
    # (time, inputs mask, km/h): on at 07:00, a stop with the engine on, off at 07:40.
    reports = [("070000", 1, 0), ("071000", 1, 60), ("072500", 1, 0), ("074000", 0, 0)]
    packets = [
        f"081126;{at};5657.0000;N;02406.0000;E;{speed};90;10;9;1.0;{mask};0;NA;NA;pwr:2:12.5"
        for at, mask, speed in reports
    ]
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", f"2.0;{imei};NA")) == "#AL#1"
        covered = ("|".join(packets) + "|").encode()
        assert tracker.ask(b"#B#" + covered + crc_text(covered).encode() + b"\r\n") == "#AB#4"
    finally:
        tracker.close()
        tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})
    window = {"device_id": device, "from_": "2026-11-08T00:00:00Z", "to": "2026-11-09T00:00:00Z"}
    api = tenant.module_api(0)
    [hours] = report_json(api, "engine_hours", **window)["rows"]
    assert hours["engine_seconds"] == 40 * 60
    [idle] = report_json(api, "idling", **window)["rows"]
    assert (idle["idle_seconds"], idle["idle_periods"]) == (10 * 60 + 15 * 60, 2)
