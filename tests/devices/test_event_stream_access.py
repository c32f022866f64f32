"""The live event stream keeps to the access a new call would have: it closes with a `closed`
event naming the reason when its key, customer or devices change, and never sends events of a
device that is no longer its customer's."""

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conftest import (
    Api,
    RunningServer,
    Tenant,
    create_channel,
    make_settings,
    make_tenant,
    start_server,
)

EVENTS_PATH = "/module/devices/events"
_TIMESTAMPS = itertools.count(1_795_600_000)


class EventStream:
    """An event stream read on its own thread: every event as (name, data), in order."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.status = 0
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=60))
        self._thread = threading.Thread(target=self._read, args=(headers,), daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, headers: dict[str, str]) -> None:
        name = ""
        try:
            with self._client.stream("GET", EVENTS_PATH, headers=headers) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    self.opened.set()
                    if line.startswith("event: "):
                        name = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line.removeprefix("data: "))))
        except httpx.HTTPError:
            pass  # closed by `stop`
        finally:
            self.opened.set()
            self.ended.set()

    def states(self, device_id: str) -> list[dict[str, Any]]:
        states = (data for name, data in self.events if name == "state")
        return [data for data in states if data["device_id"] == device_id]

    def wait_for_state(self, device_id: str, count: int = 1) -> None:
        deadline = time.monotonic() + 10
        while len(self.states(device_id)) < count:
            assert time.monotonic() < deadline, f"no state event of {device_id}: {self.events}"
            time.sleep(0.02)

    def wait_closed(self, seconds: float = 10) -> dict[str, Any]:
        """The data of the final `closed` event, once the server ended the stream."""
        assert self.ended.wait(seconds), f"the stream is still open: {self.events}"
        assert self.events and self.events[-1][0] == "closed", self.events
        closed = self.events[-1][1]
        assert closed["type"] == "closed" and closed["detail"], closed
        return closed

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


@pytest.fixture
def streams() -> Iterator[Callable[[Api], EventStream]]:
    opened: list[EventStream] = []

    def open_stream(api: Api) -> EventStream:
        stream = EventStream(api.base_url, api.headers())
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.stop()


class Fleet:
    """A tenant with an OsmAnd channel listening, and one device on it of customer 0."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.first, self.second = (c["id"] for c in tenant.customers)
        self.channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
        self.unique_id = f"phone-{next(_TIMESTAMPS)}"
        body = tenant.device_body(
            channel_id=self.channel["id"], unique_id=self.unique_id, customer_id=self.first
        )
        self.device_id = tenant.api.post("/api/devices", json=body).json()["id"]

    def report(self) -> None:
        """A position newer than any before, stored once this returns."""
        fields = {"id": self.unique_id, "lat": "56.95", "lon": "24.1", "speed": "10"}
        url = f"http://127.0.0.1:{self.channel['port']}/"
        deadline = time.monotonic() + 5
        while True:
            try:
                answer = httpx.get(url, params={**fields, "timestamp": str(next(_TIMESTAMPS))})
                break
            except httpx.TransportError:  # the listener starts just after the channel is saved
                assert time.monotonic() < deadline, "the OsmAnd listener did not start"
                time.sleep(0.05)
        assert answer.status_code == 200, answer.text

    def customer_key(self, customer_id: str, **fields: Any) -> Api:
        """A key limited to one customer, reading its devices, for that customer."""
        body = {"customer_permissions": ["read:devices"], "customer_ids": [customer_id]}
        secret, key = self.tenant.api.new_key(**{**body, **fields})
        self.key_id = key["id"]
        return self.tenant.api.with_key(secret).as_customer(customer_id)

    def move_device(self, api: Api, customer_id: str) -> None:
        moved = api.patch(f"/api/devices/{self.device_id}", json={"customer_id": customer_id})
        assert moved.status_code == 200, moved.text

    def disable(self) -> None:
        self.tenant.api.patch(f"/api/channels/{self.channel['id']}", json={"enabled": False})


@pytest.fixture(scope="module")
def other_process(
    caching_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A second server on the streaming server's database, with its own caches and no device
    listeners: another process of the platform."""
    settings = make_settings(
        caching_server.settings.resolved_database_url,
        tmp_path_factory.mktemp("other"),
        api_key_cache_seconds=1,
        gateway=False,
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture
def fleet(caching_server: RunningServer) -> Iterator[Fleet]:
    fleet = Fleet(make_tenant(caching_server, "Streaming provider"))
    yield fleet
    fleet.disable()


CHANGES: dict[str, Callable[[Fleet, Api], Any]] = {
    "api_key_revoked": lambda f, api: api.delete(f"/api/api-keys/{f.key_id}"),
    "permission_denied": lambda f, api: api.patch(
        f"/api/api-keys/{f.key_id}", json={"customer_permissions": ["read:trips"]}
    ),
    "customer_not_found": lambda f, api: api.patch(
        f"/api/api-keys/{f.key_id}", json={"customer_ids": [f.second]}
    ),
    "customer_suspended": lambda f, api: api.patch(
        f"/api/customers/{f.first}", json={"status": "suspended"}
    ),
    "module_disabled": lambda f, api: api.patch(f"/api/customers/{f.first}", json={"modules": []}),
}


@pytest.mark.parametrize("reason", sorted(CHANGES))
def test_a_change_of_key_or_customer_closes_the_stream_at_once(
    fleet: Fleet, streams: Callable[[Api], EventStream], reason: str
) -> None:
    stream = streams(fleet.customer_key(fleet.first))
    fleet.report()
    stream.wait_for_state(fleet.device_id)
    answer = CHANGES[reason](fleet, fleet.tenant.api)
    assert answer.status_code < 300, answer.text
    assert stream.wait_closed()["reason"] == reason


def test_an_expiring_key_closes_the_stream_when_it_expires(
    fleet: Fleet, streams: Callable[[Api], EventStream]
) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    stream = streams(fleet.customer_key(fleet.first, expires_at=expires_at.isoformat()))
    assert stream.wait_closed()["reason"] == "api_key_expired"


def test_a_device_moved_away_closes_the_stream_and_its_events_go_to_the_new_customer(
    fleet: Fleet, streams: Callable[[Api], EventStream]
) -> None:
    old = streams(fleet.customer_key(fleet.first))
    new = streams(fleet.customer_key(fleet.second))
    fleet.report()
    old.wait_for_state(fleet.device_id)
    fleet.move_device(fleet.tenant.api, fleet.second)
    closed = old.wait_closed()
    assert closed["reason"] == "device_moved" and closed["device_id"] == fleet.device_id
    fleet.report()
    new.wait_for_state(fleet.device_id)
    assert len(old.states(fleet.device_id)) == 1


@pytest.mark.parametrize("reason", ["api_key_revoked", "customer_suspended", "module_disabled"])
def test_a_change_made_by_another_process_closes_the_stream(
    fleet: Fleet,
    streams: Callable[[Api], EventStream],
    other_process: RunningServer,
    reason: str,
) -> None:
    key = fleet.customer_key(fleet.first)
    stream = streams(Api(other_process.base_url, key.key, key.customer_id))
    answer = CHANGES[reason](fleet, fleet.tenant.api)
    assert answer.status_code < 300, answer.text
    assert stream.wait_closed()["reason"] == reason


def test_events_of_a_device_moved_by_another_process_never_reach_the_old_customer(
    fleet: Fleet, streams: Callable[[Api], EventStream], other_process: RunningServer
) -> None:
    stream = streams(fleet.customer_key(fleet.first))
    fleet.report()
    stream.wait_for_state(fleet.device_id)
    fleet.move_device(Api(other_process.base_url, fleet.tenant.api.key), fleet.second)
    fleet.report()  # to this process's listener, which learns of the move only from the device
    closed = stream.wait_closed()
    assert closed["reason"] == "device_moved" and closed["device_id"] == fleet.device_id
    assert len(stream.states(fleet.device_id)) == 1


def test_the_document_describes_the_closed_event_and_its_reasons(server: RunningServer) -> None:
    document = Api(server.base_url, None).get("/module/devices/openapi.json").json()
    description = document["paths"][EVENTS_PATH]["get"]["description"]
    assert "event: closed" in description
    for reason in [*CHANGES, "api_key_expired", "device_moved"]:
        assert f"`{reason}`" in description, reason
