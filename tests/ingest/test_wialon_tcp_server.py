"""Wialon IPS over a real TCP socket to the running server: answers after durable storage."""

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conftest import RunningServer, Tenant, create_channel
from fleetplane.core.db import run_platform_work
from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.messages import service as messages


def v2(packet_type: str, body: str) -> bytes:
    covered = (body + ";").encode()
    return f"#{packet_type}#{body};{crc_text(covered)}\r\n".encode()


class Tracker:
    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buffer = b""

    def ask(self, packet: bytes) -> str:
        self.sock.sendall(packet)
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listening(tenant: Tenant) -> Iterator[tuple[Tenant, dict[str, Any], dict[str, Any]]]:
    channel = create_channel(tenant.api, enabled=True)
    device = tenant.api.post(
        "/api/devices",
        json=tenant.device_body(channel_id=channel["id"], unique_id="354330030000001"),
    ).json()
    yield tenant, channel, device
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def stored(server: RunningServer, device_id: str) -> list[dict[str, Any]]:
    """The device's stored messages, as the API shapes them."""

    async def read(session: Any) -> list[dict[str, Any]]:
        return await messages.read(session, device_id)

    return asyncio.run(run_platform_work(server.settings, read))


def test_login_data_and_black_box_are_stored_before_the_answer(
    server: RunningServer, listening: tuple[Tenant, dict[str, Any], dict[str, Any]]
) -> None:
    _, channel, device = listening
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        data = "270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;0.8;0;0;14.77;NA;fuel:2:45.8"
        assert tracker.ask(v2("D", data)) == "#AD#1"
        rows = stored(server, device["id"])  # already committed when the answer came
        assert len(rows) == 1
        assert rows[0]["lat"] == pytest.approx(55.743375)
        assert rows[0]["params"]["fuel"] == 45.8
        # late black-box data is stored and ordered by device time
        bodies = "|".join(
            f"270413;20{minute:02d}01;5544.6025;N;03739.6834;E;0;0;3;4" for minute in (50, 51)
        )
        covered = (bodies + "|").encode()
        answer = tracker.ask(f"#B#{bodies}|{crc_text(covered)}\r\n".encode())
        assert answer == "#AB#2"
        times = [row["time"].strftime("%H:%M") for row in stored(server, device["id"])]
        assert times == ["20:50", "20:51", "20:56"]
        # a duplicate (same device time) is acknowledged but not stored twice
        assert tracker.ask(v2("D", data)) == "#AD#1"
        assert len(stored(server, device["id"])) == 3
        assert tracker.ask(b"#P#\r\n") == "#AP#"
    finally:
        tracker.close()


def wait_counted(tenant: Tenant, device_id: str, newest: str) -> None:
    """Waits until the device counters step (odometer, engine hours) has counted the device's
    messages up to `newest`: it runs after the messages are answered."""
    deadline = time.monotonic() + 20
    query = {"device_id": device_id, "step": "device_counters"}
    while time.monotonic() < deadline:
        items = tenant.api.get("/api/pipeline/steps", params=query).json()["items"]
        if items and items[0]["mark"] == newest:
            return
        time.sleep(0.05)
    raise AssertionError(f"the counters did not count up to {newest}")


def test_live_state_and_message_history_through_the_module_api(
    listening: tuple[Tenant, dict[str, Any], dict[str, Any]],
) -> None:
    tenant, channel, device = listening
    customer = tenant.customers[0]["id"]
    tenant.api.patch(f"/api/devices/{device['id']}", json={"customer_id": customer})
    for sensor in (
        {"name": "Engine", "type": "ignition", "parameter": "in1"},
        {
            "name": "Tank",
            "type": "fuel_level",
            "parameter": "fuel",
            "unit": "l",
            "calibration": [{"x": 0, "y": 0}, {"x": 100, "y": 80}],
        },
    ):
        created = tenant.api.post("/api/sensors", json={"device_id": device["id"], **sensor})
        assert created.status_code == 201, created.text
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        first = "251126;100000;5656.9760;N;02406.3120;E;40;90;12;9;0.9;1;0;NA;NA;fuel:2:50.5"
        second = "251126;100100;5656.9760;N;02407.3120;E;45;91;13;9;0.9;1;0;NA;NA;fuel:2:50.1"
        assert tracker.ask(v2("D", first)) == "#AD#1"
        assert tracker.ask(v2("D", second)) == "#AD#1"
        late = "251126;095900;5656.9760;N;02405.3120;E;0;0;12;9"
        covered = (late + "|").encode()
        assert tracker.ask(f"#B#{late}|{crc_text(covered)}\r\n".encode()) == "#AB#1"
    finally:
        tracker.close()
    api = tenant.module_api(0)
    wait_counted(tenant, device["id"], "2026-11-25T10:01:00Z")
    deadline = time.monotonic() + 20
    while api.get(f"/module/devices/{device['id']}").json()["odometer_km"] < 2:
        assert time.monotonic() < deadline, "the late message was not counted"
        time.sleep(0.05)  # the counters go back for it once the runner takes it in
    seen = api.get(f"/module/devices/{device['id']}").json()
    assert seen["last_message_at"] == "2026-11-25T10:01:00Z"  # the late message moved nothing
    assert seen["position"]["lon"] == pytest.approx(24 + 7.312 / 60)
    assert seen["position"]["speed"] == 45
    assert seen["params"]["fuel"] == 50.1
    assert seen["inputs"] == 1
    # one minute of longitude here from 10:00 to 10:01, and one more from the late 09:59 on
    assert seen["odometer_km"] == pytest.approx(2 * 1.015, abs=0.02)
    assert seen["online"] is True
    assert seen["ignition"] is True  # input 1 is on
    # counted from ignition on at 10:00 to 10:01; the device sends no hour meter
    assert seen["engine_hours_counted"] == pytest.approx(60 / 3600, abs=0.001)
    assert seen["engine_hours_sensor"] is None
    readings = {reading["name"]: reading for reading in seen["sensors"]}
    assert readings["Tank"]["value"] == pytest.approx(40.08)  # 50.1 on a 0..100 -> 0..80 table
    assert readings["Tank"]["unit"] == "l"
    listed = {d["id"]: d for d in api.get("/module/devices").json()["items"]}
    assert listed[device["id"]] == seen
    mileage = {"device_id": device["id"], "name": "Odo", "type": "mileage", "parameter": "odo"}
    assert tenant.api.post("/api/sensors", json=mileage).status_code == 201
    gps_only = api.get(f"/module/devices/{device['id']}").json()
    assert gps_only["odometer_km"] == seen["odometer_km"]  # the device sends no `odo` yet

    history = api.get(f"/module/devices/{device['id']}/messages", params={"limit": 2}).json()
    assert [m["time"] for m in history["items"]] == ["2026-11-25T09:59:00Z", "2026-11-25T10:00:00Z"]
    assert [m["black_box"] for m in history["items"]] == [True, False]
    # each message carries the sensor values computed from it, by sensor id
    tank = readings["Tank"]["id"]
    engine = readings["Engine"]["id"]
    late_values, first_values = (m["sensors"] for m in history["items"])
    assert late_values[tank] is None  # the black-box message sent no fuel
    assert late_values[engine] is None  # a short report has no inputs mask
    assert first_values[tank] == pytest.approx(40.4)  # 50.5 on the 0..100 -> 0..80 table
    assert first_values[engine] is True
    rest = api.get(
        f"/module/devices/{device['id']}/messages",
        params={"limit": 2, "cursor": history["next_cursor"]},
    ).json()
    assert [m["time"] for m in rest["items"]] == ["2026-11-25T10:01:00Z"]
    assert rest["next_cursor"] is None
    ranged = api.get(
        f"/module/devices/{device['id']}/messages",
        params={"from": "2026-11-25T10:00:00Z", "to": "2026-11-25T10:01:00Z"},
    ).json()
    assert [m["time"] for m in ranged["items"]] == ["2026-11-25T10:00:00Z"]
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        with_odo = "251126;100200;5656.9760;N;02407.3120;E;0;0;13;9;0.9;0;0;NA;NA;odo:2:12345.6"
        assert tracker.ask(v2("D", with_odo)) == "#AD#1"
    finally:
        tracker.close()
    assert api.get(f"/module/devices/{device['id']}").json()["odometer_km"] == 12345.6


def test_unknown_devices_and_wrong_passwords_are_refused(
    listening: tuple[Tenant, dict[str, Any], dict[str, Any]],
) -> None:
    tenant, channel, device = listening
    tenant.api.patch(f"/api/devices/{device['id']}", json={"password": "secret1"})
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;999999999999999;NA")) == "#AL#0"
        assert tracker.ask(v2("L", "2.0;354330030000001;wrong")) == "#AL#01"
        data = "270413;205601;5544.6025;N;03739.6834;E;1;2;3;4"
        assert tracker.ask(v2("SD", data)) == "#ASD#-1"  # not logged in: not stored
        assert tracker.ask(v2("L", "2.0;354330030000001;secret1")) == "#AL#1"
        assert tracker.ask(v2("SD", data)) == "#ASD#1"
    finally:
        tracker.close()
    channel_now = tenant.api.get(f"/api/channels/{channel['id']}").json()
    assert channel_now["counters"]["messages_rejected"] >= 1
    assert channel_now["counters"]["messages_accepted"] == 1


def read_line(tracker: Tracker) -> str:
    while b"\r\n" not in tracker.buffer:
        tracker.buffer += tracker.sock.recv(4096)
    line, tracker.buffer = tracker.buffer.split(b"\r\n", 1)
    return line.decode()


def test_commands_go_out_at_once_or_at_the_next_login(
    listening: tuple[Tenant, dict[str, Any], dict[str, Any]],
) -> None:
    tenant, channel, device = listening
    tenant.api.patch(
        f"/api/devices/{device['id']}", json={"customer_id": tenant.customers[0]["id"]}
    )
    api = tenant.module_api(0)
    path = f"/module/devices/{device['id']}/commands"
    queued = api.post(path, json={"type": "driver_message", "text": "Hello driver"})
    assert queued.status_code == 201, queued.text
    assert queued.json()["status"] == "queued"  # not connected yet

    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        assert read_line(tracker) == "#M#Hello driver;0798"  # the spec's own example and CRC
        sent = api.post(path, json={"type": "snapshot_request"})
        assert sent.json()["status"] == "sent"
        assert read_line(tracker) == "#QI#"
    finally:
        tracker.close()
    statuses = [c["status"] for c in api.get(path).json()["items"]]
    assert statuses == ["sent", "sent"]


def test_command_bodies_are_checked(tenant: Tenant) -> None:
    device = tenant.devices[tenant.customers[0]["id"]][0]
    api = tenant.module_api(0)
    path = f"/module/devices/{device['id']}/commands"
    for body in (
        {"type": "driver_message"},
        {"type": "snapshot_request", "text": "x"},
        {"type": "raw", "text": "two\nlines"},
        {"type": "teleport"},
    ):
        problem = api.post(path, json=body)
        assert problem.status_code == 422, (body, problem.text)


def test_live_events_stream_the_customers_positions(
    server: RunningServer, listening: tuple[Tenant, dict[str, Any], dict[str, Any]]
) -> None:
    tenant, channel, device = listening
    tenant.api.patch(
        f"/api/devices/{device['id']}", json={"customer_id": tenant.customers[0]["id"]}
    )
    events: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        headers = tenant.module_api(0).headers()
        with (
            httpx.Client(base_url=server.base_url, timeout=10) as client,
            client.stream("GET", "/module/devices/events", headers=headers) as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                opened.set()
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(5)
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        data = "251126;110000;5656.9760;N;02406.3120;E;33;90;12;9;0.9;0;0;NA;NA;NA"
        assert tracker.ask(v2("D", data)) == "#AD#1"
    finally:
        tracker.close()
    listener.join(5)
    event = json.loads(events[0])
    assert event["type"] == "state" and event["device_id"] == device["id"]
    assert event["position"]["speed"] == 33


def test_events_of_other_customers_are_not_streamed(
    server: RunningServer, listening: tuple[Tenant, dict[str, Any], dict[str, Any]]
) -> None:
    tenant, channel, _ = listening  # the device belongs to no customer
    received: list[str] = []

    def listen() -> None:
        headers = tenant.module_api(1).headers()
        with (
            httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(10, read=2)) as client,
            client.stream("GET", "/module/devices/events", headers=headers) as stream,
            contextlib.suppress(httpx.ReadTimeout),  # a quiet stream ends the wait
        ):
            received.extend(line for line in stream.iter_lines() if line.startswith("data"))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.3)
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        data = "251126;120000;5656.9760;N;02406.3120;E;33;90;12;9;0.9;0;0;NA;NA;NA"
        assert tracker.ask(v2("D", data)) == "#AD#1"
    finally:
        tracker.close()
    listener.join(5)
    assert received == []


def test_a_channel_can_register_unknown_devices(tenant: Tenant) -> None:
    channel = create_channel(tenant.api, enabled=True, auto_register=True)
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;861234560000042;NA")) == "#AL#1"
        data = "251126;130000;5656.9760;N;02406.3120;E;10;90;12;9"
        assert tracker.ask(v2("SD", data)) == "#ASD#1"
    finally:
        tracker.close()
    found = tenant.api.get("/api/devices", params={"unique_id": "861234560000042"}).json()["items"]
    assert [(d["name"], d["channel_id"], d["customer_id"]) for d in found] == [
        ("861234560000042", channel["id"], None)
    ]
    log = tenant.api.get("/api/audit-log", params={"object_id": found[0]["id"]}).json()["items"]
    assert log[0]["actor"] == "system:gateway"
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def test_the_validity_filter_flags_messages_that_derived_data_ignores(
    listening: tuple[Tenant, dict[str, Any], dict[str, Any]],
) -> None:
    tenant, channel, device = listening
    rules = {"min_satellites": 5, "max_speed_kmh": 200}
    tenant.api.patch(
        f"/api/devices/{device['id']}",
        json={"customer_id": tenant.customers[0]["id"], "validity": rules},
    )
    tomorrow_plus = (datetime.now(UTC) + timedelta(days=2)).strftime("%d%m%y")
    packets = [
        "251126;140000;5656.9760;N;02406.3120;E;40;90;12;9",  # valid
        "251126;140100;5656.9760;N;02407.3120;E;40;90;12;3",  # too few satellites
        "251126;140200;5756.9760;N;02407.3120;E;40;90;12;9",  # 111 km in 2 minutes
        f"{tomorrow_plus};140300;5656.9760;N;02407.3120;E;40;90;12;9",  # days ahead
        "251126;140400;5656.9760;N;02408.3120;E;40;90;12;9",  # valid again
    ]
    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        for body in packets:
            assert tracker.ask(v2("SD", body)) == "#ASD#1"  # stored all the same
    finally:
        tracker.close()
    api = tenant.module_api(0)
    stored = api.get(f"/module/devices/{device['id']}/messages").json()["items"]
    assert [m["valid"] for m in stored] == [True, False, False, True, False]
    wait_counted(tenant, device["id"], "2026-11-25T14:04:00Z")
    seen = api.get(f"/module/devices/{device['id']}").json()
    assert seen["last_message_at"] == "2026-11-25T14:04:00Z"
    assert seen["odometer_km"] == pytest.approx(2 * 1.015, abs=0.02)  # the jump is not counted
    shown = tenant.api.get(f"/api/devices/{device['id']}").json()["validity"]
    assert shown["min_satellites"] == 5 and shown["max_future_seconds"] == 86_400


def test_rule_changes_apply_to_the_next_packet(
    listening: tuple[Tenant, dict[str, Any], dict[str, Any]],
) -> None:
    """The pipeline keeps each device's validity rules in memory; changing them through the
    API applies from the next packet on, not after the cache expires. The counters count with
    the ignition sensor the device has when they count."""
    tenant, channel, device = listening
    tenant.api.patch(
        f"/api/devices/{device['id']}", json={"customer_id": tenant.customers[0]["id"]}
    )
    api = tenant.module_api(0)

    def packet(clock: str, satellites: int, inputs: int) -> bytes:
        return v2(
            "D",
            f"251126;{clock};5656.9760;N;02406.3120;E;0;0;12;{satellites};0.9;{inputs};0;NA;NA;NA",
        )

    tracker = Tracker(channel["port"])
    try:
        assert tracker.ask(v2("L", "2.0;354330030000001;NA")) == "#AL#1"
        assert tracker.ask(packet("120000", 3, 1)) == "#AD#1"  # no rules, no ignition sensor
        wait_counted(tenant, device["id"], "2026-11-25T12:00:00Z")  # counted without a sensor
        patched = tenant.api.patch(
            f"/api/devices/{device['id']}", json={"validity": {"min_satellites": 5}}
        )
        assert patched.status_code == 200, patched.text
        assert tracker.ask(packet("120100", 3, 1)) == "#AD#1"  # now too few satellites
        sensor = tenant.api.post(
            "/api/sensors",
            json={
                "device_id": device["id"],
                "name": "Engine",
                "type": "ignition",
                "parameter": "in1",
            },
        ).json()
        assert tracker.ask(packet("120200", 9, 1)) == "#AD#1"  # the engine is on
        assert tracker.ask(packet("120300", 9, 1)) == "#AD#1"  # a minute of engine time
        wait_counted(tenant, device["id"], "2026-11-25T12:03:00Z")
        running = api.get(f"/module/devices/{device['id']}").json()
        assert tenant.api.delete(f"/api/sensors/{sensor['id']}").status_code == 204
        # Without an ignition sensor the minute from 12:03 to 12:04 is not engine time.
        assert tracker.ask(packet("120400", 9, 0)) == "#AD#1"
    finally:
        tracker.close()
    wait_counted(tenant, device["id"], "2026-11-25T12:04:00Z")
    stored = api.get(f"/module/devices/{device['id']}/messages").json()["items"]
    assert [m["valid"] for m in stored] == [True, False, True, True, True]
    assert running["ignition"] is True
    assert running["engine_hours_counted"] == pytest.approx(60 / 3600, abs=0.001)
    after = api.get(f"/module/devices/{device['id']}").json()
    assert after["last_message_at"] == "2026-11-25T12:04:00Z"
    assert after["engine_hours_counted"] == running["engine_hours_counted"]
