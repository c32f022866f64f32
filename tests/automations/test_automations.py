"""Automations end to end: rules made through the module API, messages sent over the real
Wialon IPS listener, the automations step in the server's steps process, and what fired read
back from the notifications table. Each trigger fires exactly when it should; the schedule
follows the customer's time zone; cool-down and minimum duration; the connection watch; a
restart in the middle of a spell; validation; tenancy."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import (
    Api,
    RunningServer,
    Tenant,
    assert_problem,
    create_channel,
    fresh_database,
    make_tenant,
    run_in_db,
    send_wialon,
    server_with,
)
from fleetplane.automations.models import Automation, AutomationDevice, AutomationState
from fleetplane.config import Settings
from fleetplane.notifications.models import Delivery, Notification
from steps.test_pipeline_steps import wait_until

FAST = {"step_interval_seconds": 0.02, "step_poll_seconds": 0.2, "connection_check_seconds": 0.2}
# Recent whole minutes (old enough for no clock check to mind).
T0 = (datetime.now(UTC) - timedelta(hours=6)).replace(second=0, microsecond=0)
NOTIFY = [{"type": "notification"}]


def body(
    at: datetime,
    speed: float = 0,
    *,
    inputs: int = 0,
    key: str = "NA",
    params: str = "",
    lat: float = 56.95,
    lon: float = 24.1,
) -> str:
    """A Wialon IPS 2.0 `#D#` body (without its CRC)."""

    def degrees(value: float, width: int) -> str:
        whole = int(value)
        return f"{whole:0{width}d}{(value - whole) * 60:07.4f}"

    return (
        f"{at:%d%m%y;%H%M%S};{degrees(lat, 2)};N;{degrees(lon, 3)};E;{speed:g};0;20;9;0.9;"
        f"{inputs};0;NA;{key};{params}"
    )


@dataclass
class Fleet:
    server: RunningServer
    tenant: Tenant
    port: int
    channel_id: str

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def api(self, customer: int = 0) -> Api:
        return self.tenant.module_api(customer)

    def device(self, customer: int = 0) -> tuple[str, str]:
        """A new device of a customer on the listening channel: (id, IMEI)."""
        imei = str(uuid.uuid4().int)[:15]
        response = self.tenant.api.post(
            "/api/devices",
            json=self.tenant.device_body(
                channel_id=self.channel_id,
                unique_id=imei,
                customer_id=self.tenant.customers[customer]["id"],
            ),
        )
        assert response.status_code == 201, response.text
        return response.json()["id"], imei

    def sensor(self, device_id: str, kind: str, parameter: str) -> str:
        sensor = {"device_id": device_id, "name": kind, "type": kind, "parameter": parameter}
        response = self.tenant.api.post("/api/sensors", json=sensor)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def rule(self, trigger: dict[str, Any], customer: int = 0, **conditions: Any) -> str:
        rule = {"name": trigger["type"], "trigger": trigger, "actions": NOTIFY}
        if conditions:
            rule["conditions"] = conditions
        response = self.api(customer).post("/module/automations", json=rule)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def send(self, imei: str, bodies: list[str]) -> None:
        send_wialon(self.port, imei, bodies)


@pytest.fixture(scope="module")
def fleet(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    path = tmp_path_factory.mktemp("automations")
    with fresh_database(backend, path) as url, server_with(url, path, **FAST) as running:
        tenant = make_tenant(running, "Automations provider")
        channel = create_channel(tenant.api, enabled=True)
        yield Fleet(running, tenant, channel["port"], channel["id"])


def notifications(settings: Settings, automation_id: str) -> list[dict[str, Any]]:
    async def read(session: AsyncSession) -> list[dict[str, Any]]:
        statement = (
            select(Notification)
            .where(Notification.automation_id == automation_id)
            .order_by(Notification.time, Notification.id)
        )
        return [
            {
                "time": row.time,
                "type": row.type,
                "device_id": row.device_id,
                "customer_id": row.customer_id,
                "position": row.position,
                "data": row.data,
            }
            for row in (await session.execute(statement)).scalars()
        ]

    return run_in_db(settings, read)


def evaluated_until(settings: Settings, automation_id: str, device_id: str) -> datetime | None:
    """How far the rule's customer's rules evaluated the device's messages (None: never)."""

    async def read(session: AsyncSession) -> datetime | None:
        statement = (
            select(AutomationDevice.evaluated_until)
            .join(Automation, Automation.customer_id == AutomationDevice.customer_id)
            .where(Automation.id == automation_id, AutomationDevice.device_id == device_id)
        )
        return (await session.execute(statement)).scalar_one_or_none()

    return run_in_db(settings, read)


def has_state(settings: Settings, automation_id: str, device_id: str) -> bool:
    async def read(session: AsyncSession) -> bool:
        statement = select(AutomationState.device_id).where(
            AutomationState.automation_id == automation_id,
            AutomationState.device_id == device_id,
        )
        return (await session.execute(statement)).first() is not None

    return run_in_db(settings, read)


def fired_at(settings: Settings, rule_id: str, device_id: str, last: datetime) -> list[datetime]:
    """The times the rule fired on the device, once it evaluated the messages up to `last`."""
    wait_until(
        lambda: (
            (until := evaluated_until(settings, rule_id, device_id)) is not None and until >= last
        ),
        f"rule {rule_id} evaluated up to {last}",
    )
    return [n["time"] for n in notifications(settings, rule_id) if n["device_id"] == device_id]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --------------------------------------------------------------------------------------------
# Triggers
# --------------------------------------------------------------------------------------------


def test_speeding_fires_above_the_limit_once_per_spell(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id])
    speeds = [(0, 80), (10, 90), (20, 91), (30, 95), (40, 50), (50, 100), (60, 90)]
    fleet.send(imei, [body(at(s), v) for s, v in speeds])
    assert fired_at(fleet.settings, rule, device_id, at(60)) == [at(20), at(50)]
    [first, _] = notifications(fleet.settings, rule)
    assert first["type"] == "speeding" and first["data"]["speed"] == 91
    assert first["data"]["limit"] == 90
    assert first["position"]["lat"] == pytest.approx(56.95, abs=1e-4)
    assert first["position"]["speed"] == 91


def test_cooldown_holds_back_the_next_spell(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id], cooldown_s=300)
    speeds = [(0, 100), (10, 50), (20, 100), (30, 50), (400, 100), (410, 50)]
    fleet.send(imei, [body(at(s), v) for s, v in speeds])
    assert fired_at(fleet.settings, rule, device_id, at(410)) == [at(0), at(400)]


def test_minimum_duration(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id], min_duration_s=60)
    speeds = [(0, 100), (30, 100), (60, 100), (90, 100), (100, 50), (200, 100), (230, 50)]
    fleet.send(imei, [body(at(s), v) for s, v in speeds])
    assert fired_at(fleet.settings, rule, device_id, at(230)) == [at(60)]
    [fired] = notifications(fleet.settings, rule)
    assert fired["data"]["held_s"] == 60


def test_ignition_on_and_off(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    fleet.sensor(device_id, "ignition", "ign")
    on = fleet.rule({"type": "ignition_on"}, device_ids=[device_id])
    off = fleet.rule({"type": "ignition_off"}, device_ids=[device_id])
    levels = [(0, 0), (10, 1), (20, 1), (30, None), (40, 0), (50, 1)]
    fleet.send(
        imei,
        [body(at(s), params="" if v is None else f"ign:1:{v}") for s, v in levels],
    )
    assert fired_at(fleet.settings, on, device_id, at(50)) == [at(10), at(50)]
    assert fired_at(fleet.settings, off, device_id, at(50)) == [at(40)]


def test_parameter_operators(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rules = {
        op: fleet.rule(
            {"type": "parameter", "name": "temp", "op": op, "value": value},
            device_ids=[device_id],
        )
        for op, value in [("gt", 30), ("lt", 0), ("eq", 5), ("ne", 5)]
    }
    values = [(0, 10), (10, 35), (20, 5), (30, None), (40, -1)]
    fleet.send(imei, [body(at(s), params="" if v is None else f"temp:1:{v}") for s, v in values])
    fired = {op: fired_at(fleet.settings, rule, device_id, at(40)) for op, rule in rules.items()}
    assert fired == {
        "gt": [at(10)],
        "lt": [at(40)],
        "eq": [at(20)],
        "ne": [at(0), at(40)],  # 10 and 35 are one spell; 5 ends it
    }
    [gt] = notifications(fleet.settings, rules["gt"])
    assert gt["data"]["value"] == 35 and gt["data"]["threshold"] == 30


def test_input_change(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    to_on = fleet.rule({"type": "input_change", "input": 2, "to": "on"}, device_ids=[device_id])
    any_ = fleet.rule({"type": "input_change", "input": 2}, device_ids=[device_id])
    masks = [(0, 0), (10, 2), (20, 3), (30, 1), (40, 2)]
    fleet.send(imei, [body(at(s), inputs=m) for s, m in masks])
    assert fired_at(fleet.settings, to_on, device_id, at(40)) == [at(10), at(40)]
    assert fired_at(fleet.settings, any_, device_id, at(40)) == [at(10), at(30), at(40)]
    first = notifications(fleet.settings, to_on)[0]
    assert first["data"] == {"input": 2, "from": "off", "to": "on"}


def test_driver_changed(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    driver = fleet.api().post("/module/drivers", json={"name": "Anna", "key_codes": ["BBB222"]})
    assert driver.status_code == 201, driver.text
    rule = fleet.rule({"type": "driver_changed"}, device_ids=[device_id])
    keys = [(0, "AAA111"), (10, "AAA111"), (20, "BBB222"), (30, "NA"), (40, "NA")]
    fleet.send(imei, [body(at(s), key=k) for s, k in keys])
    assert fired_at(fleet.settings, rule, device_id, at(40)) == [at(20), at(30)]
    put_in, taken_out = notifications(fleet.settings, rule)
    assert put_in["data"]["driver_key"] == "BBB222"
    assert put_in["data"]["previous_driver_key"] == "AAA111"
    assert put_in["data"]["driver_id"] == driver.json()["id"]
    assert put_in["data"]["previous_driver_id"] is None
    assert taken_out["data"]["driver_key"] is None
    assert taken_out["data"]["previous_driver_id"] == driver.json()["id"]


def test_alarm(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = fleet.rule({"type": "alarm"}, device_ids=[device_id])
    params = [(0, ""), (10, "SOS:1:1"), (20, "SOS:1:1"), (30, "SOS:1:0"), (40, "SOS:1:1")]
    fleet.send(imei, [body(at(s), params=p) for s, p in params])
    assert fired_at(fleet.settings, rule, device_id, at(40)) == [at(10), at(40)]


def test_idling(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    fleet.sensor(device_id, "ignition", "ign")
    rule = fleet.rule({"type": "idling", "min_s": 120}, device_ids=[device_id])
    states = [(0, 1, 0), (60, 1, 2), (120, 1, 0), (180, 1, 0), (240, 1, 30), (300, 1, 0),
              (360, 0, 0), (500, 0, 0)]  # fmt: skip
    fleet.send(imei, [body(at(s), v, params=f"ign:1:{ign}") for s, ign, v in states])
    assert fired_at(fleet.settings, rule, device_id, at(500)) == [at(120)]


def test_sensor_range(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    sensor_id = fleet.sensor(device_id, "temperature", "t1")
    outside = fleet.rule(
        {"type": "sensor_range", "sensor_id": sensor_id, "min": 0, "max": 50, "inside": False}
    )
    inside = fleet.rule({"type": "sensor_range", "sensor_id": sensor_id, "max": 50})
    values = [(0, 20), (10, 60), (20, 70), (30, 30), (40, -5), (50, 50)]
    fleet.send(imei, [body(at(s), params=f"t1:2:{v}") for s, v in values])
    assert fired_at(fleet.settings, outside, device_id, at(50)) == [at(10), at(40)]
    assert fired_at(fleet.settings, inside, device_id, at(50)) == [at(0), at(30)]
    assert notifications(fleet.settings, outside)[0]["data"]["value"] == 60


def test_geofence_triggers(fleet: Fleet) -> None:
    circle = {
        "name": "Depot",
        "geometry": {"type": "Point", "coordinates": [24.5, 57.0]},
        "radius_m": 1000,
    }
    response = fleet.api().post("/module/geofences", json=circle)
    assert response.status_code == 201, response.text
    depot = response.json()["id"]
    device_id, imei = fleet.device()
    enter = fleet.rule({"type": "geofence_enter", "geofence_ids": [depot]}, device_ids=[device_id])
    exit_ = fleet.rule({"type": "geofence_exit"}, device_ids=[device_id])
    dwell = fleet.rule(
        {"type": "geofence_dwell", "geofence_ids": [depot], "min_inside_s": 60},
        device_ids=[device_id],
    )
    speeding = fleet.rule(
        {"type": "speeding", "speed": 90, "geofence_ids": [depot]}, device_ids=[device_id]
    )
    out, inside = (56.95, 24.1), (57.0, 24.5)
    route = [(0, out, 120), (10, inside, 50), (20, inside, 100), (80, inside, 100),
             (90, out, 120), (100, inside, 100), (110, out, 120)]  # fmt: skip
    fleet.send(imei, [body(at(s), v, lat=p[0], lon=p[1]) for s, p, v in route])
    assert fired_at(fleet.settings, enter, device_id, at(110)) == [at(10), at(100)]
    assert fired_at(fleet.settings, exit_, device_id, at(110)) == [at(90), at(110)]
    assert fired_at(fleet.settings, dwell, device_id, at(110)) == [at(80)]
    assert fired_at(fleet.settings, speeding, device_id, at(110)) == [at(20), at(100)]
    first = notifications(fleet.settings, enter)[0]
    assert first["data"] == {"geofence_id": depot, "geofence_name": "Depot"}
    assert notifications(fleet.settings, speeding)[0]["data"]["geofence_ids"] == [depot]


def test_an_enter_fires_once_the_geofences_dwell_delay_has_passed(fleet: Fleet) -> None:
    """The visit counts only at the message 60 s after its enter, which comes in a later round
    than the enter's own message: the rule fires there, once; a shorter pass-through never."""
    circle = {
        "name": "Loading bay",
        "geometry": {"type": "Point", "coordinates": [25.0, 57.5]},
        "radius_m": 500,
        "dwell_s": 60,
    }
    response = fleet.api().post("/module/geofences", json=circle)
    assert response.status_code == 201, response.text
    bay = response.json()["id"]
    device_id, imei = fleet.device()
    enter = fleet.rule({"type": "geofence_enter", "geofence_ids": [bay]}, device_ids=[device_id])
    out, inside = (57.45, 24.9), (57.5, 25.0)
    passing = [(0, out), (10, inside), (40, inside), (50, out)]  # 40 s inside: no visit
    fleet.send(imei, [body(at(s), 30, lat=p[0], lon=p[1]) for s, p in passing])
    assert fired_at(fleet.settings, enter, device_id, at(50)) == []
    fleet.send(imei, [body(at(s), 30, lat=p[0], lon=p[1]) for s, p in [(60, inside), (90, inside)]])
    assert fired_at(fleet.settings, enter, device_id, at(90)) == []
    staying = [(130, inside), (140, inside), (200, out)]
    fleet.send(imei, [body(at(s), 30, lat=p[0], lon=p[1]) for s, p in staying])
    assert fired_at(fleet.settings, enter, device_id, at(200)) == [at(130)]


def test_schedule_in_the_customers_time_zone(fleet: Fleet) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    customer = fleet.tenant.customers[1]
    response = fleet.tenant.api.patch(
        f"/api/customers/{customer['id']}", json={"timezone": "Europe/Berlin"}
    )
    assert response.status_code == 200, response.text
    device_id, imei = fleet.device(customer=1)
    # The latest 07:59 in Berlin at least two days ago, a weekday (the window: Mon to Fri).
    day = datetime.now(berlin).date() - timedelta(days=2)
    while day.weekday() > 4:
        day -= timedelta(days=1)
    local = datetime(day.year, day.month, day.day, 7, 59, tzinfo=berlin)
    window = {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "17:00"}
    rule = fleet.rule(
        {"type": "ignition_on"}, customer=1, device_ids=[device_id], schedule=[window]
    )
    fleet.sensor(device_id, "ignition", "ign")
    times = [local + timedelta(minutes=m) for m in (-1, 0, 0.5, 1, 1.5, 540, 540.5, 541)]
    # 07:58 off, 07:59 on (before the window), 07:59:30 off, 08:00 on (fires), 08:00:30
    # off; 16:59 on (fires), 16:59:30 off, 17:00 on (after the window).
    levels = [0, 1, 0, 1, 0, 1, 0, 1]
    fleet.send(
        imei,
        [body(t.astimezone(UTC), params=f"ign:1:{v}") for t, v in zip(times, levels, strict=True)],
    )
    fired = fired_at(fleet.settings, rule, device_id, times[-1].astimezone(UTC))
    assert fired == [times[3].astimezone(UTC), times[5].astimezone(UTC)]
    assert fleet.api(1).get(f"/module/automations/{rule}").json()["conditions"]["schedule"] == [
        window
    ]


def test_a_window_across_midnight(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    # UTC (customer 0): Saturday 22:00 to Sunday 06:00.
    rule = fleet.rule(
        {"type": "alarm"},
        device_ids=[device_id],
        schedule=[{"days": ["sat"], "from": "22:00", "to": "06:00"}],
    )
    day = (datetime.now(UTC) - timedelta(days=8)).date()
    while day.weekday() != 5:
        day += timedelta(days=1)
    saturday = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hours = [21.5, 22, 23.5, 29.5, 30, 46.5]  # Sat 21:30, 22:00, 23:30; Sun 05:30, 06:00, 22:30
    bodies = []
    for hour in hours:
        bodies += [body(saturday + timedelta(hours=hour), params="SOS:1:1"),
                   body(saturday + timedelta(hours=hour, minutes=1), params="SOS:1:0")]  # fmt: skip
    fleet.send(imei, bodies)
    fired = fired_at(fleet.settings, rule, device_id, saturday + timedelta(hours=46.5, minutes=1))
    assert fired == [saturday + timedelta(hours=h) for h in (22, 23.5, 29.5)]


def test_late_data_is_not_evaluated_again(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id])
    fleet.send(imei, [body(at(0), 50), body(at(100), 100), body(at(200), 50)])
    assert fired_at(fleet.settings, rule, device_id, at(200)) == [at(100)]
    # A black box from before: speeding at 150 s, already evaluated past.
    fleet.send(imei, [body(at(150), 120), body(at(160), 50)])
    fleet.send(imei, [body(at(300), 95)])
    assert fired_at(fleet.settings, rule, device_id, at(300)) == [at(100), at(300)]


def test_a_rule_created_later_starts_from_the_devices_next_messages(fleet: Fleet) -> None:
    """How far the rules evaluated a device is the device's: a new rule neither evaluates the
    messages before it nor late data from before that mark; only what changed is stored."""
    device_id, imei = fleet.device()
    first = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id])
    fleet.send(imei, [body(at(0), 50), body(at(100), 50)])
    assert fired_at(fleet.settings, first, device_id, at(100)) == []
    assert not has_state(fleet.settings, first, device_id)  # nothing happened: no row
    later = fleet.rule({"type": "speeding", "speed": 90}, device_ids=[device_id])
    fleet.send(imei, [body(at(50), 120), body(at(60), 50)])  # late: before the mark
    fleet.send(imei, [body(at(200), 95)])
    assert fired_at(fleet.settings, later, device_id, at(200)) == [at(200)]
    assert fired_at(fleet.settings, first, device_id, at(200)) == [at(200)]
    assert has_state(fleet.settings, later, device_id)


def test_connection_lost_and_restored(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    lost = fleet.rule({"type": "connection_lost", "after_s": 2}, device_ids=[device_id])
    restored = fleet.rule({"type": "connection_restored"}, device_ids=[device_id])
    now = datetime.now(UTC).replace(microsecond=0)
    fleet.send(imei, [body(now - timedelta(seconds=1), 30)])
    fired = wait_until(lambda: notifications(fleet.settings, lost), "the connection is lost")
    [event] = fired
    assert event["type"] == "connection_lost" and event["device_id"] == device_id
    assert event["data"]["after_s"] == 2 and event["data"]["silent_s"] >= 2
    # Lost once: the watch does not fire again while it stays lost.
    time.sleep(1.0)
    assert len(notifications(fleet.settings, lost)) == 1
    assert notifications(fleet.settings, restored) == []
    back = datetime.now(UTC).replace(microsecond=0)
    fleet.send(imei, [body(back, 40)])
    assert fired_at(fleet.settings, restored, device_id, back) == [back]
    [again] = notifications(fleet.settings, restored)
    assert again["data"]["connection_lost_ids"] == [lost]
    # Cleared: silent again, it is lost again.
    wait_until(lambda: len(notifications(fleet.settings, lost)) == 2, "lost a second time")


def test_each_action_is_recorded_with_its_outbox_rows(fleet: Fleet) -> None:
    device_id, imei = fleet.device()
    rule = {
        "name": "All",
        "trigger": {"type": "speeding", "speed": 90},
        "conditions": {"device_ids": [device_id]},
        "actions": [
            {"type": "webhook", "url": "https://example.com/hook"},
            {"type": "notification"},
            {"type": "command", "command": "setparam 1:2"},
            {"type": "email", "to": "ops@example.com"},
        ],
    }
    response = fleet.api().post("/module/automations", json=rule)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["actions"][3]["to"] == ["ops@example.com"]
    fleet.send(imei, [body(at(0), 100)])
    assert fired_at(fleet.settings, created["id"], device_id, at(0)) == [at(0)]

    async def outbox(session: AsyncSession) -> list[str]:
        statement = (
            select(Delivery.action)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Notification.automation_id == created["id"])
            .order_by(Delivery.action_index)
        )
        return [action["type"] for action in (await session.execute(statement)).scalars()]

    assert run_in_db(fleet.settings, outbox) == ["webhook", "command", "email"]


# --------------------------------------------------------------------------------------------
# Restart safety
# --------------------------------------------------------------------------------------------


def test_a_restart_in_a_spell_neither_loses_nor_repeats_the_firing(
    backend: str, tmp_path: Path
) -> None:
    with fresh_database(backend, tmp_path) as url:
        with server_with(url, tmp_path, **FAST) as running:
            tenant = make_tenant(running, "Restarted provider")
            channel = create_channel(tenant.api, enabled=True)
            fleet = Fleet(running, tenant, channel["port"], channel["id"])
            device_id, imei = fleet.device()
            rule = fleet.rule(
                {"type": "speeding", "speed": 90}, device_ids=[device_id], min_duration_s=120
            )
            fleet.send(imei, [body(at(0), 100), body(at(60), 100)])
            assert fired_at(fleet.settings, rule, device_id, at(60)) == []
        for last in (150, 210):
            with server_with(url, tmp_path, **FAST) as running:
                fleet.server = running
                if last == 150:
                    fleet.send(imei, [body(at(90), 100), body(at(120), 100), body(at(150), 100)])
                else:
                    fleet.send(imei, [body(at(180), 100), body(at(210), 100)])
                assert fired_at(fleet.settings, rule, device_id, at(last)) == [at(120)]


# --------------------------------------------------------------------------------------------
# The API: secrets, validation, tenancy
# --------------------------------------------------------------------------------------------


def test_the_webhook_secret_is_shown_once_and_rotates(fleet: Fleet) -> None:
    api = fleet.api()
    rule = {"name": "Hook", "trigger": {"type": "alarm"}, "actions": NOTIFY}
    created = api.post("/module/automations", json=rule)
    assert created.status_code == 201, created.text
    secret = created.json()["webhook_secret"]
    assert len(secret) == 64 and int(secret, 16) >= 0
    rule_id = created.json()["id"]
    assert created.headers["location"] == f"/module/automations/{rule_id}"
    shown = api.get(f"/module/automations/{rule_id}").json()
    assert "webhook_secret" not in shown
    assert shown["conditions"] == {
        "device_ids": [], "schedule": [], "min_duration_s": 0, "cooldown_s": 0,
    }  # fmt: skip
    listed = api.get("/module/automations", params={"type": "alarm"}).json()["items"]
    assert rule_id in [item["id"] for item in listed]
    assert all("webhook_secret" not in item for item in listed)
    rotated = api.post(f"/module/automations/{rule_id}/secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["webhook_secret"] not in (secret, None)
    patched = api.patch(f"/module/automations/{rule_id}", json={"enabled": False, "name": "Off"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False and patched.json()["trigger"] == {"type": "alarm"}
    assert api.delete(f"/module/automations/{rule_id}").status_code == 204
    assert_problem(api.get(f"/module/automations/{rule_id}"), 404, "not_found")


@pytest.mark.parametrize(
    ("waiting", "module"),
    [
        ("maintenance_due", "maintenance"),
        ("maintenance_overdue", "maintenance"),
        ("checklist_failed", "checklists"),
        ("fuel_fill", "fuel"),
        ("fuel_drain", "fuel"),
    ],
)
def test_triggers_of_modules_not_built_yet_are_refused(
    fleet: Fleet, waiting: str, module: str
) -> None:
    rule = {"name": "Later", "trigger": {"type": waiting}, "actions": NOTIFY}
    problem = assert_problem(fleet.api().post("/module/automations", json=rule), 422,
                             "validation_failed")  # fmt: skip
    [error] = problem["errors"]
    assert error["loc"] == ["body", "trigger", "type"]
    assert waiting in error["msg"] and f"{module} module" in error["msg"]


def _refused(fleet: Fleet, change: dict[str, Any], loc: list[Any], customer: int = 0) -> None:
    rule = {"name": "Bad", "trigger": {"type": "alarm"}, "actions": NOTIFY} | change
    response = fleet.api(customer).post("/module/automations", json=rule)
    problem = assert_problem(response, 422, "validation_failed")
    assert [error["loc"][: len(loc)] for error in problem["errors"]] == [loc], problem


def test_validation(fleet: Fleet) -> None:
    other_device = fleet.tenant.devices[fleet.tenant.customers[1]["id"]][0]["id"]
    own_device = fleet.tenant.devices[fleet.tenant.customers[0]["id"]][0]["id"]
    conditions = ["body", "conditions"]
    _refused(fleet, {"conditions": {"device_ids": [other_device]}}, [*conditions, "device_ids", 0])
    _refused(fleet, {"conditions": {"device_ids": [own_device, own_device]}},
             [*conditions, "device_ids", 1])  # fmt: skip
    _refused(fleet, {"conditions": {"device_ids": ["dev_nothing"]}}, [*conditions, "device_ids"])
    for url in ("ftp://example.com/x", "example.com/hook", "http://", "https://a b.example/"):
        _refused(fleet, {"actions": [{"type": "webhook", "url": url}]}, ["body", "actions", 0])
    for to in ("not an address", ["ops@example.com", "x@"], []):
        _refused(fleet, {"actions": [{"type": "email", "to": to}]}, ["body", "actions", 0])
    _refused(fleet, {"actions": []}, ["body", "actions"])
    _refused(fleet, {"actions": NOTIFY * 11}, ["body", "actions"])
    _refused(fleet, {"actions": [{"type": "command"}]}, ["body", "actions", 0])
    for window in (
        {"days": ["mon"], "from": "08:00", "to": "08:00"},
        {"days": ["mon"], "from": "25:00", "to": "08:00"},
        {"days": ["monday"], "from": "08:00", "to": "17:00"},
        {"days": [], "from": "08:00", "to": "17:00"},
        {"days": ["mon"], "from": "8:00", "to": "17:00"},
    ):
        _refused(fleet, {"conditions": {"schedule": [window]}}, [*conditions, "schedule", 0])
    _refused(fleet, {"conditions": {"cooldown_s": -1}}, [*conditions, "cooldown_s"])
    _refused(fleet, {"trigger": {"type": "speeding"}}, ["body", "trigger", "speeding", "speed"])
    _refused(fleet, {"trigger": {"type": "teleport"}}, ["body", "trigger"])
    _refused(fleet, {"trigger": {"type": "parameter", "name": "t", "op": "gt", "value": "x"}},
             ["body", "trigger", "parameter"])  # fmt: skip
    _refused(fleet, {"trigger": {"type": "speeding", "speed": 90, "geofence_ids": ["geo_x"]}},
             ["body", "trigger", "geofence_ids", 0])  # fmt: skip
    other_sensor = fleet.sensor(other_device, "temperature", "t1")
    _refused(fleet, {"trigger": {"type": "sensor_range", "sensor_id": other_sensor, "max": 5}},
             ["body", "trigger", "sensor_id"])  # fmt: skip
    _refused(fleet, {"trigger": {"type": "sensor_range", "sensor_id": other_sensor}},
             ["body", "trigger", "sensor_range"])  # fmt: skip
    # Null for a required field in a patch.
    rule_id = fleet.rule({"type": "alarm"})
    response = fleet.api().patch(f"/module/automations/{rule_id}", json={"trigger": None})
    assert_problem(response, 422, "validation_failed")


def test_another_customers_rules_are_invisible_and_never_fire_for_its_devices(
    fleet: Fleet,
) -> None:
    rule = fleet.rule({"type": "speeding", "speed": 90})  # customer 0, all its devices
    own_id, own_imei = fleet.device(0)
    other_id, other_imei = fleet.device(1)
    other_rule = fleet.rule({"type": "speeding", "speed": 90}, customer=1, device_ids=[other_id])
    fleet.send(other_imei, [body(at(0), 50), body(at(10), 120)])
    fleet.send(own_imei, [body(at(0), 50), body(at(10), 120)])
    assert fired_at(fleet.settings, other_rule, other_id, at(10)) == [at(10)]
    assert fired_at(fleet.settings, rule, own_id, at(10)) == [at(10)]
    assert {n["device_id"] for n in notifications(fleet.settings, rule)} <= {
        d["id"] for d in fleet.tenant.devices[fleet.tenant.customers[0]["id"]]
    } | {own_id}
    assert evaluated_until(fleet.settings, rule, other_id) is None
    assert not has_state(fleet.settings, rule, other_id)
    assert has_state(fleet.settings, rule, own_id)
    [other_fired] = notifications(fleet.settings, other_rule)
    assert other_fired["customer_id"] == fleet.tenant.customers[1]["id"]
    other_api = fleet.api(1)
    assert_problem(other_api.get(f"/module/automations/{rule}"), 404, "not_found")
    assert_problem(other_api.patch(f"/module/automations/{rule}", json={"name": "x"}), 404,
                   "not_found")  # fmt: skip
    assert_problem(other_api.delete(f"/module/automations/{rule}"), 404, "not_found")
    assert_problem(other_api.post(f"/module/automations/{rule}/secret"), 404, "not_found")
    listed = other_api.get("/module/automations").json()["items"]
    assert rule not in [item["id"] for item in listed]
