"""A change made outside HTTP, through the services, as a background job or a command run
inside the server process makes it (its own session, no request), reaches every cache of the
process at once: the key and customer checks, the device reads and the pipeline's device
rules. The server holds what it read for ten minutes, so nothing here can come from an entry
running out."""

import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import (
    RunningServer,
    Tenant,
    assert_problem,
    create_channel,
    fresh_database,
    make_tenant,
    run_in_server,
    server_with,
)
from fleetplane.api_keys import service as api_keys
from fleetplane.audit.service import Actor
from fleetplane.core.db import system_session
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerUpdate
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceUpdate, ValidityFilter
from fleetplane.runtime import Runtime
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorType
from fleetplane.sensors.schemas import SensorCreate

Result = TypeVar("Result")
_TIMESTAMPS = itertools.count(1_795_700_000)


@pytest.fixture(scope="module")
def holding_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Keys, customers and customers' devices trusted for ten minutes once read. A database of
    its own, as the caching server's: its device listeners would otherwise compete with the
    shared server's for the ports of the same channels."""
    path: Path = tmp_path_factory.mktemp("holding")
    with (
        fresh_database(backend, path) as url,
        server_with(url, path, api_key_cache_seconds=600, live_cache_seconds=600) as running,
    ):
        yield running


def in_job(
    server: RunningServer,
    tenant: Tenant,
    work: Callable[[AsyncSession, Actor], Awaitable[Result]],
) -> Result:
    """`work` in a transaction of its own on the server's system sessions, committed when it
    returns: a job of the server process acting for the tenant's provider."""
    actor = Actor(provider_id=tenant.provider_id, system="job")

    async def job(runtime: Runtime) -> Result:
        async with system_session(runtime.system_sessions) as session:
            return await work(session, actor)

    return run_in_server(server, job)


def test_key_and_customer_changes_apply_at_once(holding_server: RunningServer) -> None:
    tenant = make_tenant(holding_server, "Job-changed keys")
    customer_id = tenant.customers[0]["id"]
    secret, key = tenant.api.new_key(customer_permissions=["read:devices"])
    api = tenant.module_api(0).with_key(secret)
    assert api.get("/module/devices").status_code == 200  # the key and customer are held

    suspended = CustomerUpdate(status="suspended")
    in_job(holding_server, tenant, lambda s, a: customers.update(s, a, customer_id, suspended))
    assert_problem(api.get("/module/devices"), 403, "customer_suspended")
    active = CustomerUpdate(status="active")
    in_job(holding_server, tenant, lambda s, a: customers.update(s, a, customer_id, active))
    assert api.get("/module/devices").status_code == 200

    in_job(holding_server, tenant, lambda s, a: api_keys.revoke(s, a, key["id"], None))
    assert_problem(api.get("/module/devices"), 401, "api_key_revoked")


def test_device_and_sensor_changes_show_in_the_next_read(holding_server: RunningServer) -> None:
    tenant = make_tenant(holding_server, "Job-changed devices")
    first, second = (customer["id"] for customer in tenant.customers)
    device_id = tenant.devices[first][0]["id"]
    for _ in range(2):  # held from here on
        assert read(tenant, 0, device_id)["name"] == "Vehicle 0-0"

    renamed = DeviceUpdate(name="Renamed by a job")
    in_job(holding_server, tenant, lambda s, a: devices.update(s, a, device_id, renamed))
    assert read(tenant, 0, device_id)["name"] == "Renamed by a job"

    ignition = SensorCreate(
        device_id=device_id, name="Ignition", type=SensorType.IGNITION, parameter="ign"
    )
    in_job(holding_server, tenant, lambda s, a: sensors.create(s, a, ignition))
    assert [sensor["name"] for sensor in read(tenant, 0, device_id)["sensors"]] == ["Ignition"]

    moved = DeviceUpdate(customer_id=second)
    in_job(holding_server, tenant, lambda s, a: devices.update(s, a, device_id, moved))
    assert_problem(tenant.module_api(0).get(f"/module/devices/{device_id}"), 404, "not_found")
    assert read(tenant, 1, device_id)["name"] == "Renamed by a job"


def test_a_validity_rule_applies_to_the_next_message(holding_server: RunningServer) -> None:
    """The pipeline's rules of a device, read at its first message, are forgotten when a job
    changes them: the next message is judged by the new rule."""
    tenant = make_tenant(holding_server, "Job-changed rules")
    channel = create_channel(tenant.api, enabled=True, protocol="osmand", transport="http")
    unique_id = f"rules-{channel['port']}"
    body = tenant.device_body(
        channel_id=channel["id"], unique_id=unique_id, customer_id=tenant.customers[0]["id"]
    )
    device_id = tenant.api.post("/api/devices", json=body).json()["id"]
    try:
        report(channel["port"], unique_id, lat=56.95)
        assert read(tenant, 0, device_id)["position"]["lat"] == pytest.approx(56.95)

        strict = DeviceUpdate(validity=ValidityFilter(min_satellites=50))
        in_job(holding_server, tenant, lambda s, a: devices.update(s, a, device_id, strict))
        report(channel["port"], unique_id, lat=57.5)  # no satellites: refused by the new rule
        assert read(tenant, 0, device_id)["position"]["lat"] == pytest.approx(56.95)
    finally:
        tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def read(tenant: Tenant, customer_index: int, device_id: str) -> dict[str, Any]:
    response = tenant.module_api(customer_index).get(f"/module/devices/{device_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def report(port: int, unique_id: str, *, lat: float) -> None:
    """An OsmAnd position newer than any before, stored once this returns."""
    fields = {"id": unique_id, "lat": str(lat), "lon": "24.1", "timestamp": next(_TIMESTAMPS)}
    deadline = time.monotonic() + 5
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/", params=fields)
            break
        except httpx.TransportError:  # the listener starts just after the channel is saved
            assert time.monotonic() < deadline, "the OsmAnd listener did not start"
            time.sleep(0.05)
    assert answer.status_code == 200, answer.text
