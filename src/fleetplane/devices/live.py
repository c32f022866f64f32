"""Reading devices with their live state, shaped for the customer's API."""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.channels.models import Channel
from fleetplane.core.timeutil import utcnow
from fleetplane.devices.models import Device, DeviceState
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType, compute_value

_DEVICE = (Device.id, Device.unique_id, Device.name, Device.phone, Device.created_at)
_STATE = (
    DeviceState.last_message_at,
    DeviceState.last_received_at,
    DeviceState.position_at,
    DeviceState.lat,
    DeviceState.lon,
    DeviceState.altitude,
    DeviceState.speed,
    DeviceState.course,
    DeviceState.satellites,
    DeviceState.hdop,
    DeviceState.odometer_m,
    DeviceState.engine_seconds,
    DeviceState.inputs,
    DeviceState.outputs,
    DeviceState.params,
)

# The live-state names of a row of `customer_devices_query`, as the pipeline writes them.
STATE_FIELDS = frozenset(column.key for column in _STATE)


def customer_devices_query(provider_id: str, customer_id: str) -> Select[Any]:
    return (
        select(*_DEVICE, *_STATE, Channel.online_timeout_seconds)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .outerjoin(Channel, Channel.id == Device.channel_id)
        .where(Device.provider_id == provider_id, Device.customer_id == customer_id)
    )


async def shape_with_sensors(
    session: AsyncSession, provider_id: str, rows: list[Row[Any]]
) -> list[dict[str, Any]]:
    """Devices with their live state and sensor values (one sensor query for the page)."""
    definitions = await sensors.values_for_devices(session, provider_id, [row.id for row in rows])
    return [shape_device(row._mapping, definitions.get(row.id, [])) for row in rows]


def shape_device(row: Mapping[str, Any], definitions: list[SensorDefinition]) -> dict[str, Any]:
    """One device (a row of `customer_devices_query`) with its sensor values, as
    `CustomerDeviceOut`."""
    item = shape(row)
    values = [_sensor_value(sensor, row) for sensor in definitions]
    item["sensors"] = values
    item["ignition"] = _first_value(values, SensorType.IGNITION)
    mileage = _first_value(values, SensorType.MILEAGE)
    if isinstance(mileage, int | float) and not isinstance(mileage, bool):
        item["odometer_km"] = mileage  # the vehicle's own odometer beats summed GPS
    return item


def _first_value(values: list[dict[str, Any]], kind: SensorType) -> Any:
    return next((v["value"] for v in values if v["type"] == kind.value), None)


def _sensor_value(sensor: SensorDefinition, row: Mapping[str, Any]) -> dict[str, Any]:
    value = None
    if row["params"] is not None or row["inputs"] is not None:
        value = compute_value(sensor, row["params"] or {}, row["inputs"], row["outputs"])
    return {
        "id": sensor.id,
        "name": sensor.name,
        "type": str(sensor.type),
        "unit": sensor.unit or None,
        "value": value,
    }


def shape(row: Mapping[str, Any]) -> dict[str, Any]:
    """One device with its live state, as `CustomerDeviceOut` without the sensors."""
    item = {name: row[name] for name in ("id", "unique_id", "name", "phone", "created_at")}
    item["last_message_at"] = row["last_message_at"]
    until = online_until(row)
    item["online"] = until is not None and utcnow() <= until
    item["position"] = _position(row)
    odometer_m, engine_seconds = row["odometer_m"], row["engine_seconds"]
    item["odometer_km"] = None if odometer_m is None else round(odometer_m / 1000, 3)
    item["engine_hours"] = None if engine_seconds is None else round(engine_seconds / 3600, 3)
    item["inputs"] = row["inputs"]
    item["outputs"] = row["outputs"]
    item["params"] = row["params"] or {}
    return item


def online_until(row: Mapping[str, Any]) -> datetime | None:
    """The moment the device goes offline unless it reports again: it is online while the
    time since its last message received is within its channel's timeout. None: never seen."""
    if row["last_received_at"] is None:
        return None
    return row["last_received_at"] + timedelta(seconds=row["online_timeout_seconds"] or 600)


def _position(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row["position_at"] is None:
        return None
    return {
        "time": row["position_at"],
        "lat": row["lat"],
        "lon": row["lon"],
        "altitude": row["altitude"],
        "speed": row["speed"],
        "course": row["course"],
        "satellites": row["satellites"],
        "hdop": row["hdop"],
    }
