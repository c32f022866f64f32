"""The devices step of the telemetry pipeline: advance each device's live state.

Only messages newer than the state move it (late black-box data is stored, but the live state
already knows later news). The odometer sums great-circle distances between successive fixes.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.geo import distance_m
from fleetplane.devices.models import Device, DeviceState
from fleetplane.devices.validity import ValidityRules, mark_filtered
from fleetplane.ingest.message import Message
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, compute_value

STATE_COLUMNS = [column.name for column in DeviceState.__table__.columns]
# Devices send a few parameters per message; the state keeps the last value of each, bounded.
MAX_STATE_PARAMS = 500
# A longer silence than this is not counted as engine time in full (trip rules use the same).
MAX_GAP_SECONDS = 3600.0


async def apply_validity(
    session: AsyncSession, by_device: dict[str, list[Message]], now: datetime
) -> None:
    """Flags the messages each device's validity filter rejects (two queries per batch)."""
    device_ids = list(by_device)
    settings = await session.execute(
        select(Device.id, Device.validity).where(Device.id.in_(device_ids))
    )
    rules = {row[0]: ValidityRules.from_settings(row[1]) for row in settings.all()}
    fixes = await session.execute(
        select(
            DeviceState.device_id, DeviceState.position_at, DeviceState.lat, DeviceState.lon
        ).where(DeviceState.device_id.in_(device_ids), DeviceState.position_at.is_not(None))
    )
    previous = {row[0]: (row[1], row[2], row[3]) for row in fixes.all()}
    for device_id, messages in by_device.items():
        device_rules = rules.get(device_id, ValidityRules())
        mark_filtered(device_rules, messages, previous.get(device_id), now)


async def advance_states(
    session: AsyncSession, by_device: dict[str, list[Message]]
) -> list[dict[str, Any]]:
    """Advances and stores the states; returns the ones that changed."""
    current = await _current_states(session, list(by_device))
    ignitions = await sensors.ignition_sensors(session, list(by_device))
    changed = []
    for device_id, messages in by_device.items():
        state = advance(current.get(device_id), device_id, messages, ignitions.get(device_id))
        if state is not None and state is not current.get(device_id):
            changed.append(state)
    if changed:
        dialect = session.bind.dialect.name
        upsert = _UPSERTS.get(dialect)
        if upsert is None:
            upsert = _UPSERTS[dialect] = _upsert(dialect)
        await session.execute(upsert, changed)
    return changed


def advance(
    state: dict[str, Any] | None,
    device_id: str,
    messages: list[Message],
    ignition_sensor: SensorDefinition | None = None,
) -> dict[str, Any] | None:
    """The state after `messages` (in any order); the same object when nothing is newer."""
    in_time_order = sorted((m for m in messages if not m.filtered), key=lambda m: m.device_time)
    result = state
    for message in in_time_order:
        if result is not None and message.device_time <= result["last_message_at"]:
            continue
        result = _apply(dict(result) if result else _empty(device_id), message, ignition_sensor)
    return result


def state_event(state: dict[str, Any]) -> dict[str, Any]:
    """A live event for a changed state, as the devices module streams it."""
    return {
        "type": "state",
        "device_id": state["device_id"],
        "last_message_at": state["last_message_at"],
        "position": None
        if state["position_at"] is None
        else {
            "time": state["position_at"],
            "lat": state["lat"],
            "lon": state["lon"],
            "altitude": state["altitude"],
            "speed": state["speed"],
            "course": state["course"],
            "satellites": state["satellites"],
            "hdop": state["hdop"],
        },
        "odometer_km": round(state["odometer_m"] / 1000, 3),
        "engine_hours": round(state["engine_seconds"] / 3600, 3),
        "ignition": state["ignition"],
        "inputs": state["inputs"],
        "outputs": state["outputs"],
    }


def _empty(device_id: str) -> dict[str, Any]:
    state = dict.fromkeys(STATE_COLUMNS)
    state.update(device_id=device_id, odometer_m=0.0, engine_seconds=0.0, params={})
    return state


def _apply(
    state: dict[str, Any], message: Message, ignition_sensor: SensorDefinition | None
) -> dict[str, Any]:
    if ignition_sensor is not None:
        _run_engine(state, message, ignition_sensor)
    state["last_message_at"] = message.device_time
    state["last_received_at"] = message.received_at
    state["inputs"] = message.inputs if message.inputs is not None else state["inputs"]
    state["outputs"] = message.outputs if message.outputs is not None else state["outputs"]
    params = {**(state["params"] or {}), **message.params}
    for number, value in enumerate(message.adc, start=1):
        if value is not None:
            params[f"adc{number}"] = value
    if message.driver_key is not None:
        params["driver_key"] = message.driver_key
    state["params"] = dict(list(params.items())[-MAX_STATE_PARAMS:])
    if message.has_position:
        _move(state, message)
    return state


def _run_engine(state: dict[str, Any], message: Message, sensor: SensorDefinition) -> None:
    """Engine hours: time between two messages counts when the engine was on at the first;
    a silence longer than MAX_GAP_SECONDS counts only up to it (the engine may have stopped)."""
    if state["ignition"] and state["last_message_at"] is not None:
        elapsed = (message.device_time - state["last_message_at"]).total_seconds()
        state["engine_seconds"] += min(max(elapsed, 0.0), MAX_GAP_SECONDS)
    value = compute_value(sensor, message.params, message.inputs, message.outputs)
    if value is not None:
        state["ignition"] = bool(value)


def _move(state: dict[str, Any], message: Message) -> None:
    assert message.lat is not None and message.lon is not None
    if state["lat"] is not None and state["lon"] is not None:
        state["odometer_m"] += distance_m(state["lat"], state["lon"], message.lat, message.lon)
    state.update(
        position_at=message.device_time,
        lat=message.lat,
        lon=message.lon,
        altitude=message.altitude,
        speed=message.speed,
        course=message.course,
        satellites=None if message.satellites is None else int(message.satellites),
        hdop=message.hdop,
    )


async def _current_states(
    session: AsyncSession, device_ids: list[str]
) -> dict[str, dict[str, Any]]:
    columns = [DeviceState.__table__.c[name] for name in STATE_COLUMNS]
    result = await session.execute(select(*columns).where(DeviceState.device_id.in_(device_ids)))
    return {row["device_id"]: dict(row) for row in result.mappings()}


# Built once per dialect: building one costs about as much as upserting a few hundred states.
_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    insert = postgres_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(DeviceState.__table__)
    updates = {name: statement.excluded[name] for name in STATE_COLUMNS if name != "device_id"}
    return statement.on_conflict_do_update(index_elements=["device_id"], set_=updates)
