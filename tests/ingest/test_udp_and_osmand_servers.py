"""Wialon IPS over UDP and OsmAnd over HTTP, through real sockets to the running server."""

import socket
import time
from typing import Any

import httpx
import pytest

from conftest import Tenant, create_channel
from fleetplane.ingest.protocols.wialon_ips import crc_text


def wait_for_messages(tenant: Tenant, device_id: str, count: int) -> list[dict[str, Any]]:
    api = tenant.module_api(0)
    deadline = time.monotonic() + 5
    while True:
        items = api.get(f"/module/devices/{device_id}/messages").json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def device_on(tenant: Tenant, channel: dict[str, Any], unique_id: str, **extra: Any) -> str:
    body = tenant.device_body(
        channel_id=channel["id"],
        unique_id=unique_id,
        customer_id=tenant.customers[0]["id"],
        **extra,
    )
    response = tenant.api.post("/api/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_listening(tenant: Tenant, channel_id: str) -> None:
    deadline = time.monotonic() + 5
    while not (tenant.api.get(f"/api/channels/{channel_id}").json()["counters"] or {}).get(
        "listening"
    ):
        assert time.monotonic() < deadline, "the listener did not start"
        time.sleep(0.05)


def test_wialon_udp_datagrams_are_stored(tenant: Tenant) -> None:
    channel = create_channel(tenant.api, enabled=True, transport="udp")
    wait_listening(tenant, channel["id"])
    device_id = device_on(tenant, channel, "354330030000777")
    protected = device_on(tenant, channel, "354330030000778", password="pw")
    body = "251126;101500;5656.9760;N;02406.3120;E;30;180;10;8"
    packet = f"#SD#{body};{crc_text((body + ';').encode())}\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"2.0;354330030000777{packet}".encode(), ("127.0.0.1", channel["port"]))
        sock.sendto(f"2.0;354330030000778{packet}".encode(), ("127.0.0.1", channel["port"]))
        sock.sendto(b"garbage", ("127.0.0.1", channel["port"]))
    stored = wait_for_messages(tenant, device_id, 1)
    assert [m["speed"] for m in stored] == [30]
    assert wait_for_messages(tenant, protected, 1) == []  # UDP cannot carry its password
    counters = tenant.api.get(f"/api/channels/{channel['id']}").json()["counters"]
    assert counters["messages_accepted"] == 1 and counters["messages_rejected"] >= 2
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


@pytest.mark.parametrize("style", ["query", "form", "json"])
def test_osmand_positions_are_stored(tenant: Tenant, style: str) -> None:
    channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
    wait_listening(tenant, channel["id"])
    device_id = device_on(tenant, channel, f"phone-{style}")
    url = f"http://127.0.0.1:{channel['port']}/"
    fields = {
        "id": f"phone-{style}",
        "lat": "56.95",
        "lon": "24.1",
        "timestamp": "1795600000",
        "speed": "10",
        "batt": "87",
    }
    with httpx.Client(timeout=10) as client:
        if style == "query":
            answer = client.get(url, params=fields)
        elif style == "form":
            answer = client.post(url, data=fields)
        else:
            answer = client.post(
                url,
                json={
                    "device_id": f"phone-{style}",
                    "location": {
                        "timestamp": "2026-11-25T10:00:00Z",
                        "coords": {"latitude": 56.95, "longitude": 24.1, "speed": 5.14},
                        "battery": {"level": 0.87},
                    },
                },
            )
        assert answer.status_code == 200, answer.text
        assert client.get(url, params={**fields, "lat": "north"}).status_code == 400
        assert client.get(url, params={**fields, "id": "nobody"}).status_code == 404
    stored = wait_for_messages(tenant, device_id, 1)
    assert len(stored) == 1
    assert stored[0]["lat"] == pytest.approx(56.95)
    assert stored[0]["speed"] == pytest.approx(18.52, abs=0.05)  # knots or m/s to km/h
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def test_osmand_timestamp_without_a_utc_value_is_400_naming_it(tenant: Tenant) -> None:
    channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
    wait_listening(tenant, channel["id"])
    device_on(tenant, channel, "phone-far-off")
    url = f"http://127.0.0.1:{channel['port']}/"
    fields = {"id": "phone-far-off", "lat": "56.95", "lon": "24.1"}
    with httpx.Client(timeout=10) as client:
        for timestamp in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
            answer = client.get(url, params={**fields, "timestamp": timestamp})
            assert answer.status_code == 400, answer.text
            assert "timestamp" in answer.text
        location = {
            "timestamp": "9999-12-31T23:59:59-14:00",
            "coords": {"latitude": 1, "longitude": 2},
        }
        answer = client.post(url, json={"device_id": "phone-far-off", "location": location})
        assert answer.status_code == 400, answer.text
        assert "location.timestamp" in answer.text
        assert client.get(url, params={**fields, "timestamp": "1795600000"}).status_code == 200
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})
