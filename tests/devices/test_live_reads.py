"""The module's device reads come from memory: every change shows in the next read, whichever
way it was made, and never to another customer."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conftest import (
    RunningServer,
    Tenant,
    assert_problem,
    create_channel,
    make_tenant,
)
from fleetplane.audit.service import Actor
from fleetplane.config import Settings
from fleetplane.core.changes import Change, ChangeHub
from fleetplane.core.db import (
    create_engine,
    create_system_engine,
    session_factory,
    system_session,
)
from fleetplane.devices import service as devices
from fleetplane.devices.live_cache import LiveDeviceCache
from fleetplane.devices.processor import STATE_COLUMNS, write_states
from fleetplane.devices.schemas import DeviceUpdate
from fleetplane.devices.service import DEVICE_CHANGE, DEVICE_STATE_CHANGE


@pytest.fixture(params=["shared", "caching"])
def any_server(
    request: pytest.FixtureRequest, server: RunningServer, caching_server: RunningServer
) -> RunningServer:
    return server if request.param == "shared" else caching_server


def listed_ids(tenant: Tenant, customer_index: int) -> list[str]:
    response = tenant.module_api(customer_index).get("/module/devices")
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def read_one(tenant: Tenant, customer_index: int, device_id: str) -> httpx.Response:
    return tenant.module_api(customer_index).get(f"/module/devices/{device_id}")


def test_rename_move_and_delete_show_in_the_next_read(any_server: RunningServer) -> None:
    tenant = make_tenant(any_server, "Live reads")
    first, second = tenant.devices[tenant.customers[0]["id"]]
    other_customer = tenant.customers[1]["id"]
    for _ in range(2):  # held in memory from here on
        assert listed_ids(tenant, 0) == [first["id"], second["id"]]
        assert read_one(tenant, 0, first["id"]).json()["name"] == first["name"]

    renamed = tenant.api.patch(f"/api/devices/{first['id']}", json={"name": "Renamed van"})
    assert renamed.status_code == 200, renamed.text
    assert read_one(tenant, 0, first["id"]).json()["name"] == "Renamed van"
    names = [item["name"] for item in tenant.module_api(0).get("/module/devices").json()["items"]]
    assert names == ["Renamed van", second["name"]]

    moved = tenant.api.patch(f"/api/devices/{first['id']}", json={"customer_id": other_customer})
    assert moved.status_code == 200, moved.text
    assert listed_ids(tenant, 0) == [second["id"]]
    assert_problem(read_one(tenant, 0, first["id"]), 404, "not_found")
    assert first["id"] in listed_ids(tenant, 1)
    assert read_one(tenant, 1, first["id"]).json()["name"] == "Renamed van"

    assert tenant.api.delete(f"/api/devices/{second['id']}").status_code == 204
    assert listed_ids(tenant, 0) == []
    assert_problem(read_one(tenant, 0, second["id"]), 404, "not_found")


def test_another_customer_or_provider_never_sees_the_devices(
    any_server: RunningServer,
) -> None:
    tenant = make_tenant(any_server, "Live walls")
    stranger = make_tenant(any_server, "Live stranger")
    own = [device["id"] for device in tenant.devices[tenant.customers[0]["id"]]]
    assert listed_ids(tenant, 0) == own
    for device_id in own:
        assert_problem(read_one(tenant, 1, device_id), 404, "not_found")
        assert_problem(read_one(stranger, 0, device_id), 404, "not_found")
    assert not set(own) & set(listed_ids(tenant, 1))
    assert not set(own) & set(listed_ids(stranger, 0))
    # The other provider's key cannot name this provider's customer at all.
    foreign = stranger.api.as_customer(tenant.customers[0]["id"]).get("/module/devices")
    assert_problem(foreign, 404, "customer_not_found")


def test_a_stored_message_shows_in_the_next_read(any_server: RunningServer) -> None:
    tenant = make_tenant(any_server, "Live messages")
    channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
    _wait_listening(tenant, channel["id"])
    unique_id = f"live-{channel['port']}"
    body = tenant.device_body(
        channel_id=channel["id"], unique_id=unique_id, customer_id=tenant.customers[0]["id"]
    )
    device_id = tenant.api.post("/api/devices", json=body).json()["id"]
    before = read_one(tenant, 0, device_id).json()  # held in memory from here on
    assert before["position"] is None and before["online"] is False

    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    fields = {"id": unique_id, "lat": "56.95", "lon": "24.1", "speed": "10", "batt": "87"}
    with httpx.Client(timeout=10) as client:
        answer = client.get(
            f"http://127.0.0.1:{channel['port']}/",
            params={**fields, "timestamp": str(int(sent_at.timestamp()))},
        )
    assert answer.status_code == 200, answer.text  # answered after the commit

    after = read_one(tenant, 0, device_id).json()
    assert after["last_message_at"] == sent_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert after["online"] is True
    assert after["position"]["lat"] == pytest.approx(56.95)
    listed = tenant.module_api(0).get("/module/devices").json()["items"]
    assert [item["position"] for item in listed if item["id"] == device_id] == [after["position"]]
    assert_problem(read_one(tenant, 1, device_id), 404, "not_found")
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def test_pages_from_memory_follow_the_cursor(any_server: RunningServer) -> None:
    tenant = make_tenant(any_server, "Live pages")
    customer_id = tenant.customers[0]["id"]
    for number in range(3):
        body = tenant.device_body(name=f"Extra {number}", customer_id=customer_id)
        assert tenant.api.post("/api/devices", json=body).status_code == 201
    everything = listed_ids(tenant, 0)
    assert len(everything) == 5 and everything == sorted(everything)
    api, seen, cursor = tenant.module_api(0), [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/module/devices", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert_problem(api.get("/module/devices", params={"limit": 0}), 422, "validation_failed")
    assert_problem(api.get("/module/devices", params={"cursor": "x"}), 422, "validation_failed")


def _wait_listening(tenant: Tenant, channel_id: str) -> None:
    for _ in range(100):
        counters = tenant.api.get(f"/api/channels/{channel_id}").json()["counters"] or {}
        if counters.get("listening"):
            return
        time.sleep(0.05)
    raise AssertionError("the listener did not start")


# --- the cache itself, against the database ------------------------------------------------


def _state(device_id: str, at: datetime, lat: float) -> dict[str, Any]:
    state = dict.fromkeys(STATE_COLUMNS)
    state.update(
        device_id=device_id,
        last_message_at=at,
        last_received_at=at,
        position_at=at,
        lat=lat,
        lon=24.0,
        odometer_m=0.0,
        engine_seconds=0.0,
        params={},
    )
    return state


def _held_lat(cache: LiveDeviceCache, tenant: Tenant, device_id: str) -> float | None:
    held = cache.fresh(tenant.provider_id, tenant.customers[0]["id"])
    assert held is not None
    return held.rows[device_id]["lat"]


def _states_written(*states: dict[str, Any]) -> Change:
    ids = tuple(state["device_id"] for state in states)
    return Change(DEVICE_STATE_CHANGE, ids, device_ids=ids, values=states)


def _run(settings: Settings, work: Any) -> Any:
    """`work(cache, sessions)`: a cache kept to the changes committed through `sessions`
    (system sessions, as the pipeline's and jobs' are)."""

    async def main() -> Any:
        engine = create_engine(settings)
        system_engine = create_system_engine(settings)
        changes = ChangeHub()
        try:
            cache = LiveDeviceCache(session_factory(engine), ttl_seconds=600)
            cache.follow(changes)
            return await work(cache, session_factory(system_engine, changes))
        finally:
            await system_engine.dispose()
            await engine.dispose()

    return asyncio.run(main())


def test_committed_states_apply_and_rolled_back_ones_do_not(server: RunningServer) -> None:
    tenant = make_tenant(server, "Live states")
    customer_id = tenant.customers[0]["id"]
    device_id = tenant.devices[customer_id][0]["id"]
    at = datetime.now(UTC)

    async def work(cache: LiveDeviceCache, sessions: Any) -> None:
        assert await cache.customer_devices(tenant.provider_id, customer_id) is not None
        async with sessions() as session:
            await write_states(session, [_state(device_id, at, 56.0)])
            await session.rollback()
        assert _held_lat(cache, tenant, device_id) is None
        async with sessions() as session, session.begin():
            await write_states(session, [_state(device_id, at, 56.2)])
            assert _held_lat(cache, tenant, device_id) is None  # not committed yet
        assert _held_lat(cache, tenant, device_id) == 56.2
        async with system_session(sessions) as session:
            await write_states(session, [_state(device_id, at + timedelta(seconds=1), 56.5)])
        assert _held_lat(cache, tenant, device_id) == 56.5
        older = _state(device_id, at - timedelta(hours=1), 1.0)
        cache.apply(_states_written(older))  # a state only moves forward
        assert _held_lat(cache, tenant, device_id) == 56.5

    _run(server.settings, work)


def test_a_change_drops_the_devices_of_the_customers_it_names(server: RunningServer) -> None:
    tenant = make_tenant(server, "Live writes")
    customer_id, other_customer = (customer["id"] for customer in tenant.customers)
    device_id = tenant.devices[customer_id][0]["id"]
    actor = Actor(provider_id=tenant.provider_id, system="test")

    async def work(cache: LiveDeviceCache, sessions: Any) -> None:
        assert await cache.customer_devices(tenant.provider_id, customer_id) is not None
        assert await cache.customer_devices(tenant.provider_id, other_customer) is not None
        async with system_session(sessions) as session:
            await devices.update(session, actor, device_id, DeviceUpdate(name="X"))
        assert cache.fresh(tenant.provider_id, customer_id) is None
        assert cache.fresh(tenant.provider_id, other_customer) is not None
        held = await cache.customer_devices(tenant.provider_id, customer_id)
        assert held is not None and held.rows[device_id]["name"] == "X"
        # A change naming no customer in particular drops all of the provider's.
        cache.apply(Change(DEVICE_CHANGE, (), tenant.provider_id, None))
        assert cache.fresh(tenant.provider_id, customer_id) is None
        assert cache.fresh(tenant.provider_id, other_customer) is None

    _run(server.settings, work)


def test_a_read_overlapping_a_change_is_not_kept(server: RunningServer) -> None:
    tenant = make_tenant(server, "Live races")
    customer_id = tenant.customers[0]["id"]
    device_id = tenant.devices[customer_id][0]["id"]
    at = datetime.now(UTC)

    async def work(cache: LiveDeviceCache, sessions: Any) -> None:
        reading = asyncio.create_task(cache.customer_devices(tenant.provider_id, customer_id))
        await asyncio.sleep(0)  # the read has started
        cache.apply(_states_written(_state(device_id, at, 57.0)))
        held = await reading
        assert held is not None and held.rows[device_id]["lat"] == 57.0  # applied meanwhile

        reading = asyncio.create_task(cache.customer_devices(tenant.provider_id, "cus_other"))
        await asyncio.sleep(0)
        cache.apply(Change(DEVICE_CHANGE, (), tenant.provider_id, ("cus_other",)))
        await reading
        assert cache.fresh(tenant.provider_id, "cus_other") is None  # read before the change
        assert cache.fresh(tenant.provider_id, customer_id) is not None  # not named by it

    _run(server.settings, work)


def test_memory_is_bounded(server: RunningServer) -> None:
    tenant = make_tenant(server, "Live memory", customers=3)
    first, second, third = (customer["id"] for customer in tenant.customers)
    body = tenant.device_body(customer_id=third)
    assert tenant.api.post("/api/devices", json=body).status_code == 201  # three devices

    async def work(_: LiveDeviceCache, sessions: Any) -> None:
        cache = LiveDeviceCache(sessions, 600, max_devices=3, max_devices_per_customer=2)
        assert await cache.customer_devices(tenant.provider_id, first) is not None
        assert await cache.customer_devices(tenant.provider_id, second) is not None
        # Two customers of two devices do not fit in three: the one read least recently goes.
        assert cache.fresh(tenant.provider_id, first) is None
        assert cache.fresh(tenant.provider_id, second) is not None
        # Too many devices to keep: read from the database instead.
        assert await cache.customer_devices(tenant.provider_id, third) is None

    _run(server.settings, work)
