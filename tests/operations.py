"""Every operation of the Studio and Module APIs, with a way to call it successfully.

The permission and tenancy matrices walk this table; a test fails when an operation in an
OpenAPI document has no entry here, so a new endpoint cannot slip past the matrices.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import Api, Tenant, channel_port, create_channel, run_in_db
from fleetplane.automations.models import Automation
from fleetplane.core.ids import new_id
from fleetplane.trips.models import TripInterval

Call = tuple[str, dict[str, Any] | None]  # concrete path, JSON body


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as in the OpenAPI document
    permission: str
    prepare: Callable[[Tenant], Call]
    success: int = 200
    streams: bool = False  # an endpoint that answers with an endless event stream

    @property
    def is_module(self) -> bool:
        return self.path.startswith("/module/")

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _customer(t: Tenant) -> str:
    return t.customers[0]["id"]


def _device(t: Tenant) -> str:
    return t.devices[_customer(t)][0]["id"]


def _fresh_customer(t: Tenant) -> str:
    response = t.api.post("/api/customers", json={"name": "Short-lived customer"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _fresh_device(t: Tenant) -> str:
    response = t.api.post("/api/devices", json=t.device_body(name="Short-lived"))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _fresh_key(t: Tenant) -> str:
    _, key = t.api.new_key(name="short-lived")
    return key["id"]


def _fresh_channel(t: Tenant) -> str:
    return create_channel(t.api)["id"]


def _fresh_sensor(t: Tenant) -> str:
    body = {"device_id": _device(t), "name": "Fuel", "type": "fuel_level", "parameter": "adc1"}
    response = t.api.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _fresh_driver(t: Tenant) -> str:
    response = t.module_api(0).post("/module/drivers", json={"name": "Short-lived driver"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _assignment_body(t: Tenant) -> dict[str, Any]:
    """A manual assignment of a new driver to the customer's first device from now on (it ends
    the one an earlier call made)."""
    start = datetime.now(UTC).isoformat()
    return {"driver_id": _fresh_driver(t), "device_id": _device(t), "start": start}


def _fresh_assignment(t: Tenant) -> str:
    response = t.module_api(0).post("/module/drivers/assignments", json=_assignment_body(t))
    assert response.status_code == 201, response.text
    return response.json()["id"]


_CIRCLE = {
    "name": "Depot",
    "geometry": {"type": "Point", "coordinates": [24.1052, 56.9496]},
    "radius_m": 150,
}


def _fresh_geofence(t: Tenant) -> str:
    response = t.module_api(0).post("/module/geofences", json=_CIRCLE)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _fresh_geofence_group(t: Tenant) -> str:
    response = t.module_api(0).post("/module/geofences/groups", json={"name": "Depots"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


_RULE = {
    "name": "Speeding",
    "trigger": {"type": "speeding", "speed": 90},
    "actions": [{"type": "notification"}],
}


def _fresh_automation(t: Tenant) -> str:
    response = t.module_api(0).post("/module/automations", json=_RULE)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def _interval(t: Tenant) -> str:
    """A trip of the first customer's first device, stored as the trip step stores one."""
    assert t.settings is not None
    device_id = _device(t)

    async def store(session: AsyncSession) -> str:
        interval_id = new_id("ivl")
        now = datetime.now(UTC)
        row = {
            "id": interval_id, "device_id": device_id, "kind": "trip",
            "start_time": now - timedelta(minutes=20), "end_time": now - timedelta(minutes=5),
            "start_lat": 56.9, "start_lon": 24.1, "end_lat": 56.95, "end_lon": 24.12,
            "distance_m": 6000.0, "max_speed": 50.0, "avg_speed": 24.0, "open": False,
            "resume_state": None,
        }  # fmt: skip
        await session.execute(sa.insert(TripInterval), [row])
        return interval_id

    return run_in_db(t.settings, store)


def store_automation(
    t: Tenant,
    actions: list[dict[str, Any]],
    *,
    customer_index: int = 0,
    secret: str = "whsec_test",
    name: str = "Speeding",
) -> str:
    """An automation stored as it is (its actions unchecked), for the delivery's tests."""
    assert t.settings is not None
    customer_id = t.customers[customer_index]["id"]

    async def store(session: AsyncSession) -> str:
        automation_id = new_id("aut")
        row = {
            "id": automation_id, "provider_id": t.provider_id, "customer_id": customer_id,
            "name": name, "enabled": True, "trigger": {"type": "speeding", "speed": 90},
            "conditions": {}, "actions": actions, "webhook_secret": secret,
        }  # fmt: skip
        await session.execute(sa.insert(Automation), [row])
        return automation_id

    return run_in_db(t.settings, store)


_SETTINGS = {"method": "speed", "min_moving_speed": 6, "min_parking_s": 240}

OPERATIONS: list[Operation] = [
    # Studio: customers
    Operation("GET", "/api/customers", "read:customers", lambda t: ("/api/customers", None)),
    Operation(
        "POST", "/api/customers", "create:customers",
        lambda t: ("/api/customers", {"name": "New customer"}), 201,
    ),
    Operation(
        "GET", "/api/customers/{customer_id}", "read:customers",
        lambda t: (f"/api/customers/{_customer(t)}", None),
    ),
    Operation(
        "PATCH", "/api/customers/{customer_id}", "update:customers",
        lambda t: (f"/api/customers/{_customer(t)}", {"plan": "gold"}),
    ),
    Operation(
        "DELETE", "/api/customers/{customer_id}", "delete:customers",
        lambda t: (f"/api/customers/{_fresh_customer(t)}", None), 204,
    ),
    # Studio: API keys
    Operation("GET", "/api/api-keys", "read:api_keys", lambda t: ("/api/api-keys", None)),
    Operation(
        "POST", "/api/api-keys", "create:api_keys",
        lambda t: ("/api/api-keys", {"name": "no permissions"}), 201,
    ),
    Operation(
        "GET", "/api/api-keys/{key_id}", "read:api_keys",
        lambda t: (f"/api/api-keys/{_fresh_key(t)}", None),
    ),
    Operation(
        "PATCH", "/api/api-keys/{key_id}", "update:api_keys",
        lambda t: (f"/api/api-keys/{_fresh_key(t)}", {"name": "renamed"}),
    ),
    Operation(
        "DELETE", "/api/api-keys/{key_id}", "delete:api_keys",
        lambda t: (f"/api/api-keys/{_fresh_key(t)}", None), 204,
    ),
    # Studio: devices
    Operation("GET", "/api/devices", "read:devices", lambda t: ("/api/devices", None)),
    Operation(
        "POST", "/api/devices", "create:devices",
        lambda t: ("/api/devices", t.device_body()), 201,
    ),
    Operation(
        "GET", "/api/devices/{device_id}", "read:devices",
        lambda t: (f"/api/devices/{_device(t)}", None),
    ),
    Operation(
        "PATCH", "/api/devices/{device_id}", "update:devices",
        lambda t: (f"/api/devices/{_device(t)}", {"name": "Renamed"}),
    ),
    Operation(
        "DELETE", "/api/devices/{device_id}", "delete:devices",
        lambda t: (f"/api/devices/{_fresh_device(t)}", None), 204,
    ),
    # Studio: channels
    Operation("GET", "/api/channels", "read:channels", lambda t: ("/api/channels", None)),
    Operation(
        "POST", "/api/channels", "create:channels",
        lambda t: ("/api/channels", {"name": "New", "protocol": "osmand",
                                     "port": channel_port(), "enabled": False}), 201,
    ),
    Operation(
        "GET", "/api/channels/{channel_id}", "read:channels",
        lambda t: (f"/api/channels/{t.channel_id}", None),
    ),
    Operation(
        "PATCH", "/api/channels/{channel_id}", "update:channels",
        lambda t: (f"/api/channels/{t.channel_id}", {"name": "Renamed"}),
    ),
    Operation(
        "DELETE", "/api/channels/{channel_id}", "delete:channels",
        lambda t: (f"/api/channels/{_fresh_channel(t)}", None), 204,
    ),
    # Studio: sensors
    Operation("GET", "/api/sensors", "read:sensors", lambda t: ("/api/sensors", None)),
    Operation(
        "POST", "/api/sensors", "create:sensors",
        lambda t: ("/api/sensors", {"device_id": _device(t), "name": "Ignition",
                                    "type": "ignition", "parameter": "in1"}), 201,
    ),
    Operation(
        "GET", "/api/sensors/{sensor_id}", "read:sensors",
        lambda t: (f"/api/sensors/{_fresh_sensor(t)}", None),
    ),
    Operation(
        "PATCH", "/api/sensors/{sensor_id}", "update:sensors",
        lambda t: (f"/api/sensors/{_fresh_sensor(t)}", {"name": "Renamed"}),
    ),
    Operation(
        "DELETE", "/api/sensors/{sensor_id}", "delete:sensors",
        lambda t: (f"/api/sensors/{_fresh_sensor(t)}", None), 204,
    ),
    # Studio: audit log
    Operation("GET", "/api/audit-log", "read:audit_log", lambda t: ("/api/audit-log", None)),
    # Studio: pipeline steps
    Operation(
        "GET", "/api/pipeline/steps", "read:devices", lambda t: ("/api/pipeline/steps", None)
    ),
    # Module: devices
    Operation("GET", "/module/devices", "read:devices", lambda t: ("/module/devices", None)),
    Operation(
        "GET", "/module/devices/events", "read:devices",
        lambda t: ("/module/devices/events", None), streams=True,
    ),
    Operation(
        "GET", "/module/devices/{device_id}", "read:devices",
        lambda t: (f"/module/devices/{_device(t)}", None),
    ),
    Operation(
        "GET", "/module/devices/{device_id}/messages", "read:messages",
        lambda t: (f"/module/devices/{_device(t)}/messages", None),
    ),
    Operation(
        "POST", "/module/devices/{device_id}/commands", "create:commands",
        lambda t: (f"/module/devices/{_device(t)}/commands",
                   {"type": "driver_message", "text": "Call the office"}), 201,
    ),
    Operation(
        "GET", "/module/devices/{device_id}/commands", "read:commands",
        lambda t: (f"/module/devices/{_device(t)}/commands", None),
    ),
    # Module: drivers
    Operation("GET", "/module/drivers", "read:drivers", lambda t: ("/module/drivers", None)),
    Operation(
        "POST", "/module/drivers", "create:drivers",
        lambda t: ("/module/drivers", {"name": "New driver", "key_codes": []}), 201,
    ),
    Operation(
        "GET", "/module/drivers/{driver_id}", "read:drivers",
        lambda t: (f"/module/drivers/{_fresh_driver(t)}", None),
    ),
    Operation(
        "PATCH", "/module/drivers/{driver_id}", "update:drivers",
        lambda t: (f"/module/drivers/{_fresh_driver(t)}", {"phone": "+371 2000 0000"}),
    ),
    Operation(
        "DELETE", "/module/drivers/{driver_id}", "delete:drivers",
        lambda t: (f"/module/drivers/{_fresh_driver(t)}", None), 204,
    ),
    Operation(
        "GET", "/module/drivers/assignments", "read:drivers",
        lambda t: ("/module/drivers/assignments", None),
    ),
    Operation(
        "POST", "/module/drivers/assignments", "create:drivers",
        lambda t: ("/module/drivers/assignments", _assignment_body(t)), 201,
    ),
    Operation(
        "GET", "/module/drivers/assignments/{assignment_id}", "read:drivers",
        lambda t: (f"/module/drivers/assignments/{_fresh_assignment(t)}", None),
    ),
    Operation(
        "PATCH", "/module/drivers/assignments/{assignment_id}", "update:drivers",
        lambda t: (f"/module/drivers/assignments/{_fresh_assignment(t)}", {"end": _in_an_hour()}),
    ),
    Operation(
        "DELETE", "/module/drivers/assignments/{assignment_id}", "delete:drivers",
        lambda t: (f"/module/drivers/assignments/{_fresh_assignment(t)}", None), 204,
    ),
    # Module: trips
    Operation(
        "GET", "/module/trips/intervals", "read:trips",
        lambda t: (f"/module/trips/intervals?device_id={_device(t)}", None),
    ),
    Operation(
        "GET", "/module/trips/intervals/{interval_id}/track", "read:trips",
        lambda t: (f"/module/trips/intervals/{_interval(t)}/track", None),
    ),
    Operation(
        "GET", "/module/trips/settings/{device_id}", "read:trips",
        lambda t: (f"/module/trips/settings/{_device(t)}", None),
    ),
    Operation(
        "PUT", "/module/trips/settings/{device_id}", "update:trips",
        lambda t: (f"/module/trips/settings/{_device(t)}", _SETTINGS),
    ),
    # Module: geofences
    Operation("GET", "/module/geofences", "read:geofences", lambda t: ("/module/geofences", None)),
    Operation(
        "POST", "/module/geofences", "create:geofences",
        lambda t: ("/module/geofences", _CIRCLE), 201,
    ),
    Operation(
        "GET", "/module/geofences/contains", "read:geofences",
        lambda t: ("/module/geofences/contains?lat=56.9496&lon=24.1052", None),
    ),
    Operation(
        "GET", "/module/geofences/visits", "read:geofences",
        lambda t: (f"/module/geofences/visits?geofence_id={_fresh_geofence(t)}", None),
    ),
    Operation(
        "GET", "/module/geofences/export", "read:geofences",
        lambda t: ("/module/geofences/export", None),
    ),
    Operation(
        "POST", "/module/geofences/import", "create:geofences",
        lambda t: ("/module/geofences/import", {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": _CIRCLE["geometry"],
             "properties": {"name": "Imported", "radius_m": 80}}]}),
    ),
    Operation(
        "GET", "/module/geofences/{geofence_id}", "read:geofences",
        lambda t: (f"/module/geofences/{_fresh_geofence(t)}", None),
    ),
    Operation(
        "PATCH", "/module/geofences/{geofence_id}", "update:geofences",
        lambda t: (f"/module/geofences/{_fresh_geofence(t)}", {"radius_m": 200}),
    ),
    Operation(
        "DELETE", "/module/geofences/{geofence_id}", "delete:geofences",
        lambda t: (f"/module/geofences/{_fresh_geofence(t)}", None), 204,
    ),
    Operation(
        "GET", "/module/geofences/groups", "read:geofences",
        lambda t: ("/module/geofences/groups", None),
    ),
    Operation(
        "POST", "/module/geofences/groups", "create:geofences",
        lambda t: ("/module/geofences/groups", {"name": "Customers' sites"}), 201,
    ),
    Operation(
        "GET", "/module/geofences/groups/{group_id}", "read:geofences",
        lambda t: (f"/module/geofences/groups/{_fresh_geofence_group(t)}", None),
    ),
    Operation(
        "PATCH", "/module/geofences/groups/{group_id}", "update:geofences",
        lambda t: (f"/module/geofences/groups/{_fresh_geofence_group(t)}", {"name": "Renamed"}),
    ),
    Operation(
        "DELETE", "/module/geofences/groups/{group_id}", "delete:geofences",
        lambda t: (f"/module/geofences/groups/{_fresh_geofence_group(t)}", None), 204,
    ),
    # Module: automations
    Operation(
        "GET", "/module/automations", "read:automations",
        lambda t: ("/module/automations", None),
    ),
    Operation(
        "POST", "/module/automations", "create:automations",
        lambda t: ("/module/automations", _RULE), 201,
    ),
    Operation(
        "GET", "/module/automations/{automation_id}", "read:automations",
        lambda t: (f"/module/automations/{_fresh_automation(t)}", None),
    ),
    Operation(
        "PATCH", "/module/automations/{automation_id}", "update:automations",
        lambda t: (f"/module/automations/{_fresh_automation(t)}", {"enabled": False}),
    ),
    Operation(
        "DELETE", "/module/automations/{automation_id}", "delete:automations",
        lambda t: (f"/module/automations/{_fresh_automation(t)}", None), 204,
    ),
    Operation(
        "POST", "/module/automations/{automation_id}/secret", "update:automations",
        lambda t: (f"/module/automations/{_fresh_automation(t)}/secret", None),
    ),
    # Module: automations (what the rules fired, and the test of a rule)
    Operation(
        "GET", "/module/automations/notifications", "read:notifications",
        lambda t: ("/module/automations/notifications", None),
    ),
    Operation(
        "POST", "/module/automations/{automation_id}/test", "update:automations",
        lambda t: (f"/module/automations/{_fresh_automation(t)}/test", None), 202,
    ),
    # Module: analytics
    Operation(
        "GET", "/module/analytics/reports/{report}", "read:analytics",
        lambda t: ("/module/analytics/reports/engine_hours?from=2026-11-01T00:00:00Z"
                   f"&to=2026-11-02T00:00:00Z&group_by=day&device_id={_device(t)}", None),
    ),
]  # fmt: skip

STUDIO_OPERATIONS = [op for op in OPERATIONS if not op.is_module]
MODULE_OPERATIONS = [op for op in OPERATIONS if op.is_module]


def call(api: Api, operation: Operation, path: str, body: dict[str, Any] | None) -> httpx.Response:
    """Calls the operation; an event stream is opened, its status read, and closed again."""
    if not operation.streams:
        return api.request(operation.method, path, json=body)
    with api.http.stream(operation.method, path, headers=api.headers()) as response:
        if response.status_code >= 400:
            response.read()
        return response


def module_of(operation: Operation) -> str:
    return operation.path.split("/")[2]
