"""Sensor rules: a sensor belongs to a device of the caller's provider, its valid range is in
order, and live state gets every sensor of a page of devices in one query."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.changes import Change, note
from fleetplane.core.errors import ApiError, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.devices import service as devices
from fleetplane.sensors.calculation import (
    CalibrationTable,
    OutOfTable,
    SensorDefinition,
    SensorType,
)
from fleetplane.sensors.models import Sensor
from fleetplane.sensors.schemas import SensorCreate, SensorUpdate

REQUIRED_FIELDS = ("name", "type", "parameter", "unit", "out_of_table")
# Bound parameters per query stay far below every engine's limit; a page of devices is one query.
DEVICES_PER_QUERY = 1000
# The kind of change notice (core.changes) raised when a sensor changes.
SENSOR_CHANGE = "sensor"


async def _note_changed(session: AsyncSession, sensor: Sensor) -> None:
    """Raises the sensor's notice, naming its device and the device's customer (whose reads
    show the sensor's values)."""
    device = await devices.get(session, sensor.provider_id, sensor.device_id)
    customers = () if device.customer_id is None else (device.customer_id,)
    change = Change(
        SENSOR_CHANGE, (sensor.id,), sensor.provider_id, customers, device_ids=(device.id,)
    )
    note(session, change)


def list_query(
    provider_id: str, *, device_id: str | None = None, sensor_type: SensorType | None = None
) -> Select[Sensor]:
    statement = select(Sensor).where(Sensor.provider_id == provider_id)
    if device_id is not None:
        statement = statement.where(Sensor.device_id == device_id)
    if sensor_type is not None:
        statement = statement.where(Sensor.type == sensor_type.value)
    return statement


async def get(session: AsyncSession, provider_id: str, sensor_id: str) -> Sensor:
    sensor = None
    if looks_like_id(sensor_id):
        statement = list_query(provider_id).where(Sensor.id == sensor_id)
        sensor = (await session.execute(statement)).scalar_one_or_none()
    if sensor is None:
        raise not_found("sensor")
    return sensor


async def create(session: AsyncSession, actor: Actor, data: SensorCreate) -> Sensor:
    values = data.model_dump(mode="json")
    await _require_device(session, actor.provider_id, data.device_id)
    _require_ordered_range(data.min, data.max, "max")
    sensor = Sensor(id=new_id("sen"), provider_id=actor.provider_id, **values)
    session.add(sensor)
    await audit.record(session, actor, "sensor.create", "sensor", sensor.id, values)
    await session.flush()
    await _note_changed(session, sensor)
    return sensor


async def update(session: AsyncSession, actor: Actor, sensor_id: str, data: SensorUpdate) -> Sensor:
    sensor = await get(session, actor.provider_id, sensor_id)
    changes: dict[str, Any] = data.model_dump(mode="json", exclude_unset=True)
    for field in REQUIRED_FIELDS:
        if field in changes and changes[field] is None:
            raise validation_error(["body", field], "may not be null")
    _require_ordered_range(
        changes.get("min", sensor.min),
        changes.get("max", sensor.max),
        "max" if "max" in changes else "min",
    )
    for field, value in changes.items():
        setattr(sensor, field, value)
    await audit.record(session, actor, "sensor.update", "sensor", sensor.id, changes)
    await session.flush()
    await _note_changed(session, sensor)
    return sensor


async def delete(session: AsyncSession, actor: Actor, sensor_id: str) -> Sensor:
    """Deletes the sensor; returns it as it was."""
    sensor = await get(session, actor.provider_id, sensor_id)
    await session.delete(sensor)
    details = {"device_id": sensor.device_id, "name": sensor.name}
    await audit.record(session, actor, "sensor.delete", "sensor", sensor.id, details)
    await session.flush()
    await _note_changed(session, sensor)
    return sensor


_DEFINITION_COLUMNS = (
    Sensor.id,
    Sensor.device_id,
    Sensor.name,
    Sensor.type,
    Sensor.parameter,
    Sensor.unit,
    Sensor.calibration,
    Sensor.out_of_table,
    Sensor.min,
    Sensor.max,
)


async def values_for_devices(
    session: AsyncSession, provider_id: str, device_ids: Sequence[str]
) -> dict[str, list[SensorDefinition]]:
    """The sensor definitions of each device (oldest sensor first), every device id a key;
    feed them to `calculation.compute_value` with a message's params and masks."""
    by_device: dict[str, list[SensorDefinition]] = {device_id: [] for device_id in device_ids}
    unique_ids = list(by_device)
    for start in range(0, len(unique_ids), DEVICES_PER_QUERY):
        chunk = unique_ids[start : start + DEVICES_PER_QUERY]
        statement = (
            select(*_DEFINITION_COLUMNS)
            .where(Sensor.provider_id == provider_id, Sensor.device_id.in_(chunk))
            .order_by(Sensor.device_id, Sensor.id)
        )
        for row in await session.execute(statement):
            by_device[row.device_id].append(definition_of(row))
    return by_device


async def definitions_by_id(
    session: AsyncSession, sensor_ids: Sequence[str]
) -> dict[str, SensorDefinition]:
    """The sensors found of these ids, whoever's (for pipeline steps and checks that filter
    by the sensor's device themselves)."""
    found: dict[str, SensorDefinition] = {}
    unique_ids = [sensor_id for sensor_id in dict.fromkeys(sensor_ids) if looks_like_id(sensor_id)]
    for start in range(0, len(unique_ids), DEVICES_PER_QUERY):
        chunk = unique_ids[start : start + DEVICES_PER_QUERY]
        statement = select(*_DEFINITION_COLUMNS).where(Sensor.id.in_(chunk))
        found.update((row.id, definition_of(row)) for row in await session.execute(statement))
    return found


async def ignition_sensors(
    session: AsyncSession, device_ids: Sequence[str]
) -> dict[str, SensorDefinition]:
    """The first ignition sensor of each device that has one (for the telemetry pipeline,
    which serves every provider)."""
    return await first_sensors_of_type(session, device_ids, SensorType.IGNITION)


async def first_sensors_of_type(
    session: AsyncSession, device_ids: Sequence[str], sensor_type: SensorType
) -> dict[str, SensorDefinition]:
    """The first sensor of the type of each device that has one (for pipeline steps, which
    serve every provider)."""
    found: dict[str, SensorDefinition] = {}
    unique_ids = list(dict.fromkeys(device_ids))
    for start in range(0, len(unique_ids), DEVICES_PER_QUERY):
        statement = (
            select(*_DEFINITION_COLUMNS)
            .where(
                Sensor.device_id.in_(bindparam("ids", expanding=True)),
                Sensor.type == sensor_type.value,
            )
            .order_by(Sensor.device_id, Sensor.id)
        )
        chunk = unique_ids[start : start + DEVICES_PER_QUERY]
        for row in await session.execute(statement, {"ids": chunk}):
            found.setdefault(row.device_id, definition_of(row))
    return found


def definition_of(row: Row[Any] | Sensor) -> SensorDefinition:
    """The computation's view of a stored sensor (a row of its columns, or the object)."""
    return SensorDefinition(
        id=row.id,
        device_id=row.device_id,
        name=row.name,
        type=SensorType(row.type),
        parameter=row.parameter,
        unit=row.unit,
        calibration=CalibrationTable.of(row.calibration) if row.calibration else None,
        out_of_table=OutOfTable(row.out_of_table),
        min=row.min,
        max=row.max,
    )


async def _require_device(session: AsyncSession, provider_id: str, device_id: str) -> None:
    # Another provider's device is answered exactly like a missing one.
    try:
        await devices.get(session, provider_id, device_id)
    except ApiError as error:
        raise validation_error(["body", "device_id"], f"No such device {device_id!r}.") from error


def _require_ordered_range(low: float | None, high: float | None, field: str) -> None:
    if low is not None and high is not None and low > high:
        raise validation_error(["body", field], f"min ({low}) is greater than max ({high})")
