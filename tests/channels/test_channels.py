"""Channels start, move and stop their listeners in the running server."""

import socket
import time
from typing import Any

from conftest import Tenant, assert_problem, create_channel, free_port


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def counters(tenant: Tenant, channel_id: str) -> dict[str, Any]:
    return tenant.api.get(f"/api/channels/{channel_id}").json()["counters"] or {}


def test_create_move_disable_and_delete_a_listener(tenant: Tenant) -> None:
    channel = create_channel(tenant.api, enabled=True)
    path = f"/api/channels/{channel['id']}"
    wait_for(lambda: accepts(channel["port"]))
    wait_for(lambda: counters(tenant, channel["id"]).get("listening") is True)

    new_port = free_port()
    moved = tenant.api.patch(path, json={"port": new_port})
    assert moved.status_code == 200 and moved.json()["port"] == new_port
    wait_for(lambda: accepts(new_port))
    wait_for(lambda: not accepts(channel["port"]))

    tenant.api.patch(path, json={"enabled": False})
    wait_for(lambda: not accepts(new_port))
    assert counters(tenant, channel["id"])["listening"] is False

    assert tenant.api.delete(path).status_code == 204
    assert_problem(tenant.api.get(path), 404, "not_found")


def test_a_port_belongs_to_one_channel(tenant: Tenant, other_tenant: Tenant) -> None:
    channel = create_channel(tenant.api)
    body = {"name": "Twin", "protocol": "wialon_ips", "port": channel["port"]}
    assert_problem(tenant.api.post("/api/channels", json=body), 409, "conflict")
    assert_problem(other_tenant.api.post("/api/channels", json=body), 409, "conflict")


def test_a_channel_with_devices_cannot_be_deleted(tenant: Tenant) -> None:
    assert_problem(tenant.api.delete(f"/api/channels/{tenant.channel_id}"), 409, "conflict")


def test_transport_must_fit_the_protocol(tenant: Tenant) -> None:
    body = {"name": "x", "protocol": "osmand", "transport": "udp", "port": free_port()}
    assert_problem(tenant.api.post("/api/channels", json=body), 422, "validation_failed")
    created = create_channel(tenant.api)
    assert created["transport"] == "tcp_udp"
    response = tenant.api.patch(f"/api/channels/{created['id']}", json={"transport": "http"})
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "transport"]


def test_devices_need_a_channel_of_their_provider(tenant: Tenant, other_tenant: Tenant) -> None:
    response = tenant.api.post(
        "/api/devices", json=tenant.device_body(channel_id=other_tenant.channel_id)
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "channel_id"]
