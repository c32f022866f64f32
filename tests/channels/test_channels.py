"""Channels start, move and stop their listeners in the running server."""

import socket
import threading
import time
from typing import Any

import httpx

from conftest import (
    RunningServer,
    Tenant,
    assert_problem,
    channel_port,
    create_channel,
    make_tenant,
)


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

    new_port = channel_port()
    moved = tenant.api.patch(path, json={"port": new_port})
    assert moved.status_code == 200 and moved.json()["port"] == new_port
    wait_for(lambda: accepts(new_port))
    wait_for(lambda: not accepts(channel["port"]))

    tenant.api.patch(path, json={"enabled": False})
    wait_for(lambda: not accepts(new_port))
    assert counters(tenant, channel["id"])["listening"] is False

    assert tenant.api.delete(path).status_code == 204
    assert_problem(tenant.api.get(path), 404, "not_found")


def port_refusal(response: httpx.Response, port: int) -> str:
    """The refusal of an unavailable port, with the port number taken out."""
    problem = assert_problem(response, 422, "validation_failed")
    assert [error["loc"] for error in problem["errors"]] == [["body", "port"]]
    return problem["detail"].replace(str(port), "N")


def test_a_port_belongs_to_one_channel(tenant: Tenant, other_tenant: Tenant) -> None:
    channel = create_channel(tenant.api)
    port = channel["port"]
    body = {"name": "Twin", "protocol": "wialon_ips", "port": port}
    own = port_refusal(tenant.api.post("/api/channels", json=body), port)
    # Another provider learns no more than that the port is not available: the same answer
    # as for a port no channel may ever have.
    theirs = port_refusal(other_tenant.api.post("/api/channels", json=body), port)
    outside = {**body, "port": 30_000}
    assert (
        own == theirs == port_refusal(other_tenant.api.post("/api/channels", json=outside), 30_000)
    )
    moved = other_tenant.api.patch(f"/api/channels/{other_tenant.channel_id}", json={"port": port})
    assert port_refusal(moved, port) == own


def test_channels_use_only_the_platforms_device_ports(
    tenant: Tenant, server: RunningServer
) -> None:
    """FLEETPLANE_DEVICE_PORTS (by default 20000-29999 and 5055), never a privileged port,
    never the HTTP API's own port."""
    http_port = int(server.base_url.rsplit(":", 1)[1])
    refusals = set()
    for port in (80, 1023, 8000, 19_999, 30_000, http_port):
        body = {"name": "Tracker port", "protocol": "osmand", "port": port, "enabled": False}
        refusals.add(port_refusal(tenant.api.post("/api/channels", json=body), port))
        patch = tenant.api.patch(f"/api/channels/{tenant.channel_id}", json={"port": port})
        refusals.add(port_refusal(patch, port))
    assert len(refusals) == 1
    assert "20000-29999, 5055" in refusals.pop()
    for port in (20_000, 29_999, channel_port()):
        body = {"name": "In range", "protocol": "wialon_ips", "port": port, "enabled": False}
        created = tenant.api.post("/api/channels", json=body)
        if port != 20_000 or created.status_code != 422:  # 20000 may be another test's
            assert created.status_code == 201, created.text


def test_a_provider_has_a_limited_number_of_channels(server: RunningServer) -> None:
    """At most FLEETPLANE_MAX_CHANNELS_PER_PROVIDER (20), also when creates run at once."""
    tenant = make_tenant(server, "Many channels", customers=0)  # with one channel
    answers: list[httpx.Response] = []

    def create() -> None:
        body = {"name": "More", "protocol": "wialon_ips", "port": channel_port(), "enabled": False}
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            answers.append(http.post("/api/channels", json=body, headers=tenant.api.headers()))

    threads = [threading.Thread(target=create) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [201] * 19 + [409] * 6
    for refused in (answer for answer in answers if answer.status_code == 409):
        assert_problem(refused, 409, "channel_limit_reached")
    assert len(tenant.api.get("/api/channels").json()["items"]) == 20
    first = tenant.api.get("/api/channels").json()["items"][0]["id"]
    assert tenant.api.delete(f"/api/channels/{first}").status_code == 204
    assert create_channel(tenant.api)["id"]  # room again


def listener(tenant: Tenant, channel_id: str) -> dict[str, Any]:
    return tenant.api.get(f"/api/channels/{channel_id}").json()["listener"]


def test_a_channel_shows_why_its_listener_failed(tenant: Tenant) -> None:
    port = channel_port()
    with socket.create_server(("0.0.0.0", port)):  # another program holds the port
        channel = create_channel(tenant.api, enabled=True, port=port, transport="tcp")
        wait_for(lambda: listener(tenant, channel["id"])["state"] == "failed")
        failed = listener(tenant, channel["id"])
        assert failed["reason"] == f"cannot listen on port {port}: Address already in use"
        listed = {item["id"]: item for item in tenant.api.get("/api/channels").json()["items"]}
        assert listed[channel["id"]]["listener"] == failed
    # Tried again every few seconds: once the port is free, the devices can connect.
    wait_for(lambda: listener(tenant, channel["id"])["state"] == "listening", seconds=15)
    assert listener(tenant, channel["id"]) == {"state": "listening", "reason": None}
    assert accepts(port)
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})
    assert listener(tenant, channel["id"]) == {
        "state": "stopped",
        "reason": "the channel is disabled",
    }


def test_the_document_describes_the_listener_state(tenant: Tenant) -> None:
    schemas = tenant.api.get("/api/openapi.json").json()["components"]["schemas"]
    state = schemas["ChannelListener"]["properties"]["state"]
    states = state.get("enum") or schemas[state["$ref"].rsplit("/", 1)[1]]["enum"]
    assert set(states) == {"listening", "starting", "failed", "stopped"}
    for schema in ("ChannelOut", "ChannelSummary"):
        assert "listener" in schemas[schema]["properties"]


def test_a_channel_with_devices_cannot_be_deleted(tenant: Tenant) -> None:
    assert_problem(tenant.api.delete(f"/api/channels/{tenant.channel_id}"), 409, "conflict")


def test_transport_must_fit_the_protocol(tenant: Tenant) -> None:
    body = {"name": "x", "protocol": "osmand", "transport": "udp", "port": channel_port()}
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
