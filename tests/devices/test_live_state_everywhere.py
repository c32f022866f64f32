"""A device's live state reads the same wherever it is shown: the device read, the list and
the event stream, whether the device reads come from memory or from the database."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import (
    RunningServer,
    Tenant,
    create_channel,
    fresh_database,
    make_tenant,
    send_wialon,
    server_with,
)

IDENTITY = {"id", "unique_id", "name", "phone", "created_at"}


@pytest.fixture(scope="module")
def uncached_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Device reads from the database on every call (nothing held in memory). A database of its
    own: its device listeners would otherwise compete with the shared server's."""
    path = tmp_path_factory.mktemp("uncached")
    with (
        fresh_database(backend, path) as url,
        server_with(url, path, live_cache_seconds=0) as running,
    ):
        yield running


@pytest.fixture(params=["from memory", "from the database"])
def any_server(
    request: pytest.FixtureRequest, server: RunningServer, uncached_server: RunningServer
) -> RunningServer:
    return server if request.param == "from memory" else uncached_server


class StateEvents:
    """The module's event stream, read in a thread: every `state` event's data."""

    def __init__(self, server: RunningServer, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._socket: socket.socket
        self._opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(server.base_url, headers), daemon=True
        )
        self._thread.start()
        assert self._opened.wait(10), "the event stream did not open"

    def _listen(self, base_url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(10, read=30)
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            try:
                with client.stream("GET", "/module/devices/events", headers=headers) as stream:
                    self._socket = stream.extensions["network_stream"].get_extra_info("socket")
                    for line in stream.iter_lines():
                        self._opened.set()
                        if line.startswith("data: "):
                            self.events.append(json.loads(line.removeprefix("data: ")))
            except httpx.HTTPError:
                if not self._stop.is_set():  # closed by `close`, or a failure to show
                    raise

    def close(self) -> None:
        """Ends the stream, so that the server can stop at once."""
        self._stop.set()
        self._socket.shutdown(socket.SHUT_RDWR)  # wakes the thread's read
        self._thread.join(10)

    def wait_for(self, last_message_at: str, counted: bool = False) -> dict[str, Any]:
        """The state event of that newest message; `counted`: once the counters step has
        counted it too (a later event of the same message, with engine time in it)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for event in self.events:
                if event["last_message_at"] == last_message_at and (
                    not counted or event["engine_hours_counted"]
                ):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no state event at {last_message_at}: {self.events}")


def test_the_stream_and_the_device_reads_show_the_same_state(any_server: RunningServer) -> None:
    tenant: Tenant = make_tenant(any_server, "Live state everywhere")
    customer = tenant.customers[0]["id"]
    channel = create_channel(tenant.api, enabled=True)
    unique_id = f"35433003{channel['port']:07d}"
    body = tenant.device_body(channel_id=channel["id"], unique_id=unique_id, customer_id=customer)
    device = tenant.api.post("/api/devices", json=body).json()
    for sensor in (
        {"name": "Engine", "type": "ignition", "parameter": "in1"},
        {"name": "Odometer", "type": "mileage", "parameter": "odo", "unit": "km"},
        {"name": "Hour meter", "type": "engine_hours", "parameter": "engh", "unit": "h"},
    ):
        created = tenant.api.post("/api/sensors", json={"device_id": device["id"], **sensor})
        assert created.status_code == 201, created.text
    api = tenant.module_api(0)
    assert api.get(f"/module/devices/{device['id']}").status_code == 200  # held from here on
    stream = StateEvents(any_server, api.headers())
    try:
        send_wialon(
            channel["port"],
            unique_id,
            [
                "251126;100000;5656.9760;N;02406.3120;E;40;90;12;9;0.9;1;0;NA;NA;"
                "odo:2:88769.0,engh:2:1234.25",
                "251126;100100;5656.9760;N;02407.3120;E;45;91;13;9;0.9;1;0;NA;NA;"
                "odo:2:88769.828,engh:2:1234.5",
            ],
        )
        event = stream.wait_for("2026-11-25T10:01:00Z", counted=True)
    finally:
        stream.close()
        tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})

    read = api.get(f"/module/devices/{device['id']}").json()
    assert read["last_message_at"] == event["last_message_at"]
    assert event["type"] == "state" and event["device_id"] == device["id"]
    shown = {name: value for name, value in event.items() if name not in {"type", "device_id"}}
    assert set(shown) == set(read) - IDENTITY
    for name, value in shown.items():
        assert value == read[name], name
    # the vehicle's odometer, not the few metres summed from two fixes
    assert event["odometer_km"] == 88769.828
    assert event["engine_hours_counted"] == pytest.approx(60 / 3600, abs=0.001)  # ignition on
    assert event["engine_hours_sensor"] == 1234.5  # the device's own hour meter
    listed = {item["id"]: item for item in api.get("/module/devices").json()["items"]}
    assert listed[device["id"]] == read
