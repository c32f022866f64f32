"""Tenants never see each other's data: every module endpoint, every Studio object."""

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, assert_problem, run_in_db
from fleetplane.devices import service as devices
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message
from operations import MODULE_OPERATIONS, STUDIO_OPERATIONS, Operation, call

# Every list of what a device did: messages, commands, and whatever history joins them.
HISTORY_OPERATIONS = [
    op
    for op in MODULE_OPERATIONS
    if op.method == "GET" and op.path.startswith("/module/devices/{device_id}/")
]


@pytest.mark.parametrize("operation", MODULE_OPERATIONS, ids=str)
def test_other_providers_key_with_this_customer_is_not_found(
    tenant: Tenant, other_tenant: Tenant, operation: Operation
) -> None:
    path, body = operation.prepare(tenant)
    intruder = other_tenant.api.as_customer(tenant.customers[0]["id"])
    assert_problem(call(intruder, operation, path, body), 404, "customer_not_found")


@pytest.mark.parametrize("operation", MODULE_OPERATIONS, ids=str)
def test_this_key_with_other_providers_customer_is_not_found(
    tenant: Tenant, other_tenant: Tenant, operation: Operation
) -> None:
    path, body = operation.prepare(tenant)
    wrong_customer = tenant.api.as_customer(other_tenant.customers[0]["id"])
    response = call(wrong_customer, operation, path, body)
    assert_problem(response, 404, "customer_not_found")


@pytest.mark.parametrize("operation", MODULE_OPERATIONS, ids=str)
def test_key_restricted_to_one_customer_cannot_reach_another(
    tenant: Tenant, operation: Operation
) -> None:
    first, second = (c["id"] for c in tenant.customers)
    secret, _ = tenant.api.new_key(
        customer_permissions=[operation.permission], customer_ids=[first]
    )
    path, body = operation.prepare(tenant)
    restricted = tenant.api.with_key(secret)
    allowed = call(restricted.as_customer(first), operation, path, body)
    assert allowed.status_code == operation.success, allowed.text
    denied = call(restricted.as_customer(second), operation, path, body)
    assert_problem(denied, 404, "customer_not_found")


@pytest.mark.parametrize("operation", [op for op in MODULE_OPERATIONS if "{" in op.path], ids=str)
def test_objects_of_another_customer_are_not_found(tenant: Tenant, operation: Operation) -> None:
    path, body = operation.prepare(tenant)  # names objects of customer 0
    response = call(tenant.module_api(1), operation, path, body)
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("operation", [op for op in STUDIO_OPERATIONS if "{" in op.path], ids=str)
def test_studio_objects_of_another_provider_are_not_found(
    tenant: Tenant, other_tenant: Tenant, operation: Operation
) -> None:
    path, body = operation.prepare(tenant)
    response = call(other_tenant.api, operation, path, body)
    assert_problem(response, 404, "not_found")
    assert tenant.api.get(path).status_code == 200  # untouched for its owner


@pytest.mark.parametrize(
    "path", ["/api/customers", "/api/devices", "/api/api-keys", "/api/audit-log"]
)
def test_studio_lists_hold_only_the_callers_objects(
    tenant: Tenant, other_tenant: Tenant, path: str
) -> None:
    mine = {item["id"] for item in tenant.api.get(path, params={"limit": 1000}).json()["items"]}
    theirs = {
        item["id"] for item in other_tenant.api.get(path, params={"limit": 1000}).json()["items"]
    }
    assert mine and theirs
    assert not mine & theirs


def test_module_list_holds_only_the_customers_devices(tenant: Tenant) -> None:
    for index, customer in enumerate(tenant.customers):
        items = tenant.module_api(index).get("/module/devices").json()["items"]
        assert {d["id"] for d in items} == {d["id"] for d in tenant.devices[customer["id"]]}


def record_history(server: RunningServer, tenant: Tenant, device_id: str, mark: str) -> None:
    """A message (stored as the gateway stores it, timed now) and a command of the device's
    current customer, each carrying `mark`."""
    now = datetime.now(UTC)

    async def store(session: AsyncSession) -> None:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        message = Message(device_time=now, received_at=now, lat=56.9, lon=24.1)
        message.params["mark"] = mark
        await messages.insert_rows(session, [messages.to_row(seq, message)])

    run_in_db(server.settings, store)
    owner = tenant.api.get(f"/api/devices/{device_id}").json()["customer_id"]
    command = {"type": "driver_message", "text": mark}
    response = tenant.api.as_customer(owner).post(
        f"/module/devices/{device_id}/commands", json=command
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("operation", HISTORY_OPERATIONS, ids=str)
def test_a_moved_devices_history_stays_with_the_customer_it_happened_for(
    server: RunningServer, tenant: Tenant, operation: Operation
) -> None:
    old, new = tenant.module_api(0), tenant.module_api(1)
    device = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    path = operation.path.format(device_id=device)
    record_history(server, tenant, device, "private to the first customer")
    assert "private to the first customer" in old.get(path).text

    moved = tenant.api.patch(f"/api/devices/{device}", json={"customer_id": new.customer_id})
    assert moved.status_code == 200, moved.text
    record_history(server, tenant, device, "after the move")

    seen = new.get(path)
    assert seen.status_code == 200, seen.text
    assert "private to the first customer" not in seen.text
    assert len(seen.json()["items"]) == 1 and "after the move" in seen.text
    assert_problem(old.get(path), 404, "not_found")
    assert device not in {d["id"] for d in old.get("/module/devices").json()["items"]}
