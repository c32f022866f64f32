import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from conftest import RunningServer, Tenant, assert_problem
from fleetplane.core.db import create_engine, session_factory, set_tenant_scope
from fleetplane.sensors import service
from fleetplane.sensors.calculation import SensorDefinition, SensorType, compute_value

FUEL_TABLE = [{"x": 0, "y": 0}, {"x": 1000, "y": 60}, {"x": 2000, "y": 80}]


def device_of(tenant: Tenant, customer_index: int = 0, number: int = 0) -> str:
    return tenant.devices[tenant.customers[customer_index]["id"]][number]["id"]


def add_sensor(tenant: Tenant, device_id: str, **fields: Any) -> dict[str, Any]:
    body = {"device_id": device_id, "name": "Fuel tank", "type": "fuel_level", "parameter": "adc1"}
    response = tenant.api.post("/api/sensors", json=body | fields)
    assert response.status_code == 201, response.text
    return response.json()


def error_locs(response: Any) -> list[list[Any]]:
    return [error["loc"] for error in assert_problem(response, 422, "validation_failed")["errors"]]


def test_add_read_update_delete(tenant: Tenant) -> None:
    body = {
        "device_id": device_of(tenant),
        "name": "Fuel tank",
        "type": "fuel_level",
        "parameter": "adc1",
        "unit": "l",
        "calibration": FUEL_TABLE,
        "out_of_table": "reject",
        "min": 0,
        "max": 75,
    }
    created = tenant.api.post("/api/sensors", json=body)
    assert created.status_code == 201, created.text
    sensor = created.json()
    path = f"/api/sensors/{sensor['id']}"
    assert created.headers["location"] == path
    assert sensor["calibration"] == [{"x": p["x"], "y": p["y"]} for p in FUEL_TABLE]
    assert {k: sensor[k] for k in ("unit", "out_of_table", "min", "max")} == {
        "unit": "l", "out_of_table": "reject", "min": 0.0, "max": 75.0,
    }  # fmt: skip
    assert tenant.api.get(path).json() == sensor

    patched = tenant.api.patch(path, json={"name": "Main tank", "calibration": None, "max": None})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Main tank"
    assert patched.json()["calibration"] is None and patched.json()["max"] is None
    assert patched.json()["parameter"] == "adc1" and patched.json()["min"] == 0.0

    assert tenant.api.delete(path).status_code == 204
    assert_problem(tenant.api.get(path), 404, "not_found")
    audit = tenant.api.get("/api/audit-log", params={"object_id": sensor["id"]}).json()["items"]
    assert [entry["action"] for entry in audit] == [
        "sensor.create",
        "sensor.update",
        "sensor.delete",
    ]


def test_defaults_of_a_minimal_sensor(tenant: Tenant) -> None:
    sensor = add_sensor(tenant, device_of(tenant), type="ignition", parameter="in1")
    assert sensor["unit"] == "" and sensor["calibration"] is None
    assert sensor["out_of_table"] == "clamp"
    assert sensor["min"] is None and sensor["max"] is None


def test_another_providers_device_is_refused_like_a_missing_one(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    body = {"name": "Fuel", "type": "fuel_level", "parameter": "adc1"}
    for device_id in [device_of(other_tenant), "dev_00000000000000000000000000", "not-an-id"]:
        response = tenant.api.post("/api/sensors", json=body | {"device_id": device_id})
        assert error_locs(response) == [["body", "device_id"]]
    assert (
        tenant.api.get("/api/sensors", params={"device_id": device_of(other_tenant)}).json()[
            "items"
        ]
        == []
    )


def test_other_providers_sensors_are_not_found(tenant: Tenant, other_tenant: Tenant) -> None:
    sensor = add_sensor(tenant, device_of(tenant))
    path = f"/api/sensors/{sensor['id']}"
    assert_problem(other_tenant.api.get(path), 404, "not_found")
    assert_problem(other_tenant.api.patch(path, json={"name": "x"}), 404, "not_found")
    assert_problem(other_tenant.api.delete(path), 404, "not_found")
    theirs = {s["id"] for s in other_tenant.api.get("/api/sensors").json()["items"]}
    assert sensor["id"] not in theirs
    assert tenant.api.get(path).json()["name"] == "Fuel tank"


def test_calibration_x_must_increase_strictly(tenant: Tenant) -> None:
    flat = [{"x": 0, "y": 0}, {"x": 5, "y": 1}, {"x": 5, "y": 2}]
    response = tenant.api.post(
        "/api/sensors",
        json={"device_id": device_of(tenant), "name": "F", "type": "fuel_level",
              "parameter": "adc1", "calibration": flat},
    )  # fmt: skip
    assert error_locs(response) == [["body", "calibration", 2, "x"]]
    sensor = add_sensor(tenant, device_of(tenant))
    falling = [{"x": 3, "y": 0}, {"x": 1, "y": 1}]
    response = tenant.api.patch(f"/api/sensors/{sensor['id']}", json={"calibration": falling})
    assert error_locs(response) == [["body", "calibration", 1, "x"]]


@pytest.mark.parametrize(
    ("calibration", "loc"),
    [
        ([{"x": 0, "y": 0}], ["body", "calibration"]),
        ([], ["body", "calibration"]),
        ([{"x": i, "y": i} for i in range(1001)], ["body", "calibration"]),
        ([{"x": 0, "y": 0}, {"x": 1}], ["body", "calibration", 1, "y"]),
        ([{"x": 0, "y": 0}, {"x": 1, "y": 1, "z": 2}], ["body", "calibration", 1, "z"]),
        ([{"x": "a", "y": 0}, {"x": 1, "y": 1}], ["body", "calibration", 0, "x"]),
    ],
)
def test_bad_calibration_tables_name_the_field(
    tenant: Tenant, calibration: list[Any], loc: list[Any]
) -> None:
    sensor = add_sensor(tenant, device_of(tenant))
    response = tenant.api.patch(f"/api/sensors/{sensor['id']}", json={"calibration": calibration})
    assert error_locs(response) == [loc]


def test_a_thousand_points_are_accepted(tenant: Tenant) -> None:
    table = [{"x": i, "y": i * 0.5} for i in range(1000)]
    sensor = add_sensor(tenant, device_of(tenant), calibration=table)
    assert len(tenant.api.get(f"/api/sensors/{sensor['id']}").json()["calibration"]) == 1000


def test_non_finite_numbers_are_refused(tenant: Tenant) -> None:
    sensor = add_sensor(tenant, device_of(tenant))
    response = tenant.api.patch(
        f"/api/sensors/{sensor['id']}",
        content=b'{"calibration": [{"x": NaN, "y": 0}, {"x": 1, "y": 1}], "min": Infinity}',
        headers={"content-type": "application/json"},
    )
    assert sorted(error_locs(response)) == [["body", "calibration", 0, "x"], ["body", "min"]]


def test_valid_range_must_be_in_order(tenant: Tenant) -> None:
    body = {"device_id": device_of(tenant), "name": "T", "type": "temperature", "parameter": "t"}
    response = tenant.api.post("/api/sensors", json=body | {"min": 10, "max": -10})
    assert error_locs(response) == [["body", "max"]]
    sensor = add_sensor(tenant, device_of(tenant), min=0, max=100)
    path = f"/api/sensors/{sensor['id']}"
    assert error_locs(tenant.api.patch(path, json={"min": 101})) == [["body", "min"]]
    assert error_locs(tenant.api.patch(path, json={"max": -1})) == [["body", "max"]]
    assert tenant.api.patch(path, json={"min": 100}).json()["min"] == 100.0  # one valid value


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"name": None}, ["body", "name"]),
        ({"type": None}, ["body", "type"]),
        ({"parameter": None}, ["body", "parameter"]),
        ({"unit": None}, ["body", "unit"]),
        ({"out_of_table": None}, ["body", "out_of_table"]),
        ({"type": "thermometer"}, ["body", "type"]),
        ({"out_of_table": "extrapolate"}, ["body", "out_of_table"]),
        ({"parameter": "p" * 39}, ["body", "parameter"]),
        ({"parameter": "adc\n1"}, ["body", "parameter"]),
        ({"parameter": ""}, ["body", "parameter"]),
        ({"device_id": "dev_00000000000000000000000000"}, ["body", "device_id"]),
    ],
)
def test_bad_updates_name_the_field(
    tenant: Tenant, changes: dict[str, Any], loc: list[Any]
) -> None:
    sensor = add_sensor(tenant, device_of(tenant))
    response = tenant.api.patch(f"/api/sensors/{sensor['id']}", json=changes)
    assert error_locs(response) == [loc]
    assert tenant.api.get(f"/api/sensors/{sensor['id']}").json() == sensor


def test_parameter_names_are_kept_as_devices_send_them(tenant: Tenant) -> None:
    for name in ["p" * 38, "CAN.fuel_level", "Temp 1", "io_239"]:
        assert add_sensor(tenant, device_of(tenant), parameter=name)["parameter"] == name


def test_list_filters_and_pages(tenant: Tenant) -> None:
    first, second = device_of(tenant, 0, 0), device_of(tenant, 0, 1)
    fuel = add_sensor(tenant, first)
    ignition = add_sensor(tenant, first, name="Ignition", type="ignition", parameter="in1")
    other = add_sensor(tenant, second, name="Ignition", type="ignition", parameter="in1")

    def ids(**params: Any) -> list[str]:
        response = tenant.api.get("/api/sensors", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids(device_id=first) == [fuel["id"], ignition["id"]]
    assert ids(type="ignition") == [ignition["id"], other["id"]]
    assert ids(device_id=second, type="fuel_level") == []
    page = tenant.api.get("/api/sensors", params={"limit": 1}).json()
    assert page["items"][0] == fuel and page["next_cursor"]
    rest = tenant.api.get("/api/sensors", params={"cursor": page["next_cursor"]}).json()
    assert [item["id"] for item in rest["items"]] == [ignition["id"], other["id"]]
    assert error_locs(tenant.api.get("/api/sensors", params={"type": "nope"})) == [
        ["query", "type"]
    ]


def test_deleting_a_device_deletes_its_sensors(tenant: Tenant) -> None:
    device = tenant.api.post("/api/devices", json=tenant.device_body()).json()
    sensor = add_sensor(tenant, device["id"])
    assert tenant.api.delete(f"/api/devices/{device['id']}").status_code == 204
    assert_problem(tenant.api.get(f"/api/sensors/{sensor['id']}"), 404, "not_found")


def sensor_ids_seen_without_filters(server: RunningServer, **scope: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(server.settings)
        try:
            async with session_factory(engine)() as session, session.begin():
                await set_tenant_scope(session, **scope)
                return set((await session.execute(text("SELECT id FROM sensors"))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_row_level_security_hides_other_providers_sensors(
    backend: str, server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only; this is the SQLite run")
    mine = add_sensor(tenant, device_of(tenant))["id"]
    theirs = add_sensor(other_tenant, device_of(other_tenant))["id"]
    seen = sensor_ids_seen_without_filters(server, provider_id=tenant.provider_id)
    assert mine in seen and theirs not in seen
    assert sensor_ids_seen_without_filters(server) == set()


def definitions_in_scope(
    server: RunningServer, device_ids: list[str], provider_id: str, **scope: str
) -> dict[str, list[SensorDefinition]]:
    """values_for_devices as the application runs it: as the app role, in a tenant scope."""

    async def run() -> dict[str, list[SensorDefinition]]:
        engine = create_engine(server.settings)
        try:
            async with session_factory(engine)() as session, session.begin():
                await set_tenant_scope(session, provider_id=provider_id, **scope)
                return await service.values_for_devices(session, provider_id, device_ids)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_definitions_for_a_page_of_devices(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    first, second, bare = device_of(tenant, 0, 0), device_of(tenant, 1, 0), device_of(tenant, 0, 1)
    fuel = add_sensor(tenant, first, unit="l", calibration=FUEL_TABLE, out_of_table="reject")
    ignition = add_sensor(tenant, first, name="Ignition", type="ignition", parameter="in1")
    door = add_sensor(tenant, second, name="Door", type="digital_input", parameter="in2")
    theirs = device_of(other_tenant)
    add_sensor(other_tenant, theirs)

    found = definitions_in_scope(server, [first, second, bare, theirs], tenant.provider_id)
    assert set(found) == {first, second, bare, theirs}
    assert [d.id for d in found[first]] == [fuel["id"], ignition["id"]]
    assert [d.id for d in found[second]] == [door["id"]]
    assert found[bare] == [] and found[theirs] == []

    tank, engine = found[first]
    assert (tank.name, tank.type, tank.unit) == ("Fuel tank", SensorType.FUEL_LEVEL, "l")
    assert compute_value(tank, {"adc1": 1500}, None) == pytest.approx(70.0)
    assert compute_value(tank, {"adc1": 2500}, None) is None
    assert compute_value(engine, {}, 0b1) is True
    assert compute_value(found[second][0], {}, 0b1) is False


def test_definitions_are_read_in_a_customer_scope(server: RunningServer, tenant: Tenant) -> None:
    # Live state of the devices module runs in a customer-level transaction.
    device = device_of(tenant, 1, 1)
    sensor = add_sensor(tenant, device)
    found = definitions_in_scope(
        server, [device], tenant.provider_id, customer_id=tenant.customers[1]["id"]
    )
    assert [d.id for d in found[device]] == [sensor["id"]]


def test_no_devices_need_no_query(server: RunningServer, tenant: Tenant) -> None:
    assert definitions_in_scope(server, [], tenant.provider_id) == {}
