"""Reading devices with their live state, shaped for the customer's API."""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, Row, RowMapping, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.channels import service as channels
from fleetplane.core.db import UTCDateTime
from fleetplane.core.timeutil import as_utc, utcnow
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
    DeviceState.counted_at,
    DeviceState.inputs,
    DeviceState.outputs,
    DeviceState.params,
)

# The live-state names of a row of `customer_devices_query`, as the pipeline writes them.
STATE_FIELDS = frozenset(column.key for column in _STATE)
IDENTITY_FIELDS = tuple(column.key for column in _DEVICE)


def _state_casts() -> dict[str, Any]:
    """How a written state value reads back from the database: floats stay floats, times UTC."""
    casts: dict[str, Any] = {}
    for column in DeviceState.__table__.columns:
        if isinstance(column.type, Float):
            casts[column.name] = float
        elif isinstance(column.type, Integer | BigInteger):
            casts[column.name] = int
        elif isinstance(column.type, UTCDateTime):
            casts[column.name] = as_utc
    return casts


_STATE_CASTS = _state_casts()


# A row of `customer_devices_query` by column name: as read, or a dict of the same names.
DeviceRow = RowMapping | Mapping[str, Any]


def customer_devices_query(provider_id: str, customer_id: str) -> Select[*tuple[Any, ...]]:
    channel = channels.online_timeouts()
    return (
        select(*_DEVICE, *_STATE, channel.c.online_timeout_seconds)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .outerjoin(channel, channel.c.id == Device.channel_id)
        .where(Device.provider_id == provider_id, Device.customer_id == customer_id)
    )


async def shape_with_sensors(
    session: AsyncSession, provider_id: str, rows: list[Row[*tuple[Any, ...]]]
) -> list[dict[str, Any]]:
    """Devices with their live state and sensor values (one sensor query for the page)."""
    definitions = await sensors.values_for_devices(session, provider_id, [row.id for row in rows])
    return [shape_device(row._mapping, definitions.get(row.id, [])) for row in rows]


def shape_device(row: DeviceRow, definitions: list[SensorDefinition]) -> dict[str, Any]:
    """One device (a row of `customer_devices_query`) with its live state, as
    `CustomerDeviceOut`."""
    item = {name: row[name] for name in IDENTITY_FIELDS}
    item.update(live_state(row, definitions))
    return item


def state_event(row: DeviceRow, definitions: list[SensorDefinition]) -> dict[str, Any]:
    """The event stream's `state` event of a device: its live state exactly as its read
    shows it, with the event's type and the device's id."""
    return {"type": "state", "device_id": row["id"], **live_state(row, definitions)}


def live_state(row: DeviceRow, definitions: list[SensorDefinition]) -> dict[str, Any]:
    """A device's live state as the customer sees it: the one shaping behind the device
    read, the list and the event stream, so they never disagree. `row` is a row of
    `customer_devices_query` (with a newer state put in by `with_state` for an event)."""
    values = [_sensor_value(sensor, row) for sensor in definitions]
    until = online_until(row)
    odometer_m, engine_seconds = row["odometer_m"], row["engine_seconds"]
    # The vehicle's own odometer, when a mileage sensor reads it, beats summed GPS distances.
    odometer_km = _first_number(values, SensorType.MILEAGE)
    if odometer_km is None and odometer_m is not None:
        odometer_km = round(odometer_m / 1000, 3)
    return {
        "last_message_at": row["last_message_at"],
        "online": until is not None and utcnow() <= until,
        "position": _position(row),
        "odometer_km": odometer_km,
        "engine_hours_counted": None if engine_seconds is None else round(engine_seconds / 3600, 3),
        "engine_hours_sensor": _first_number(values, SensorType.ENGINE_HOURS),
        "inputs": row["inputs"],
        "outputs": row["outputs"],
        "params": row["params"] or {},
        "ignition": _first_value(values, SensorType.IGNITION),
        "sensors": values,
    }


def with_state(row: DeviceRow, state: Mapping[str, Any]) -> dict[str, Any]:
    """A device's row with another live state (one the pipeline wrote) in place of its own."""
    return {**row, **state_values(state)}


def state_values(state: Mapping[str, Any]) -> dict[str, Any]:
    """The live-state values of a state the pipeline wrote, as they read back from the
    database: floats stay floats, times are UTC. The intake writes all but the counters, the
    counters step only those: each takes the values it has."""
    values = {}
    for name in STATE_FIELDS & state.keys():
        value = state[name]
        cast = _STATE_CASTS.get(name)
        values[name] = value if value is None or cast is None else cast(value)
    return values


async def read_state_event(
    session: AsyncSession, provider_id: str, customer_id: str, state: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The `state` event of a new state of one of the customer's devices, read from the
    database; None when the customer has no such device."""
    statement = customer_devices_query(provider_id, customer_id)
    statement = statement.where(Device.id == state["device_id"])
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    definitions = await sensors.values_for_devices(session, provider_id, [row.id])
    return state_event(with_state(row._mapping, state), definitions[row.id])


def _first_value(values: list[dict[str, Any]], kind: SensorType) -> Any:
    return next((v["value"] for v in values if v["type"] == kind.value), None)


def _first_number(values: list[dict[str, Any]], kind: SensorType) -> float | None:
    value = _first_value(values, kind)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sensor_value(sensor: SensorDefinition, row: DeviceRow) -> dict[str, Any]:
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


def online_until(row: DeviceRow) -> datetime | None:
    """The moment the device goes offline unless it reports again: it is online while the
    time since its last message received is within its channel's timeout. None: never seen."""
    if row["last_received_at"] is None:
        return None
    return row["last_received_at"] + timedelta(seconds=row["online_timeout_seconds"] or 600)


def _position(row: DeviceRow) -> dict[str, Any] | None:
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
