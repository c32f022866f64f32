"""The device counters step: odometer, counted engine hours and ignition, summed up from each
device's valid messages after they are stored (a pipeline step, `steps.contract`).

Summed in the pipeline rather than in the intake, they take in late data: a black box sent
after a reconnect rewinds the counters to the last hourly checkpoint before it and counts
again from there, with the result of counting everything in order. Their values go to the
device's live state (`device_states`, columns the intake never writes) with a change notice,
which the device reads and the live event stream take in.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.changes import Change, note
from fleetplane.core.events import EventHub
from fleetplane.core.geo import distance_reduced_m, reduced
from fleetplane.devices.models import DeviceCounterCheckpoint, DeviceState
from fleetplane.devices.service import DEVICE_COUNTERS_CHANGE, MAX_GAP_SECONDS
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, compute_value
from fleetplane.steps.contract import DeviceMessages, StepDevice, in_slices
from fleetplane.telemetry import Message

STEP_NAME = "device_counters"
# A rewind to before every checkpoint counts again from the device's first message.
_BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
_CHECKPOINT = DeviceCounterCheckpoint.__table__
_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Counters:
    """A device's counters after its message of `counted_at` (None: before any)."""

    counted_at: datetime | None = None
    odometer_m: float = 0.0
    engine_seconds: float = 0.0
    ignition: bool | None = None
    lat: float | None = None  # the last valid fix, where the next distance starts
    lon: float | None = None


def count(
    counters: Counters, messages: Sequence[Message], ignition: SensorDefinition | None
) -> tuple[Counters, list[Counters]]:
    """The counters after `messages` (valid ones, oldest first, newer than `counted_at`), and
    the checkpoints on the way: the counters after the last message of each hour the messages
    leave.

    Engine time between two messages counts when the engine was on at the first; a silence
    longer than MAX_GAP_SECONDS counts only up to it (the engine may have stopped). The
    odometer sums the distances between successive fixes."""
    # Plain locals, one `Counters` per checkpoint: this runs for every message.
    at, odometer_m, engine_seconds, on, lat, lon = (
        counters.counted_at,
        counters.odometer_m,
        counters.engine_seconds,
        counters.ignition,
        counters.lat,
        counters.lon,
    )
    next_hour = None if at is None else _hour(at) + _HOUR
    last_reduced = None if lat is None else reduced(lat)  # each fix's terms computed once
    checkpoints = []
    for message in messages:
        time = message.device_time
        if next_hour is None or time >= next_hour:
            if next_hour is not None:
                checkpoints.append(Counters(at, odometer_m, engine_seconds, on, lat, lon))
            next_hour = _hour(time) + _HOUR
        if ignition is not None:
            if on and at is not None:
                engine_seconds += min(max((time - at).total_seconds(), 0.0), MAX_GAP_SECONDS)
            value = compute_value(ignition, message.params, message.inputs, message.outputs)
            if value is not None:
                on = bool(value)
        if message.lat is not None and message.lon is not None:
            here = reduced(message.lat)
            if last_reduced is not None and lon is not None:
                odometer_m += distance_reduced_m(last_reduced, lon, here, message.lon)
            lat, lon, last_reduced = message.lat, message.lon, here
        at = time
    return Counters(at, odometer_m, engine_seconds, on, lat, lon), checkpoints


class DeviceCountersStep:
    name = STEP_NAME
    reads_filtered = False

    def __init__(self) -> None:
        # Each device's counters after its last round here (its newest checkpoint), trusted
        # for the devices that follow on: the checkpoint is not read back every round.
        self._held: dict[str, Counters] = {}

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        ids = [batch.device.id for batch in batches]
        held = self._held
        unknown = {b.device.id for b in batches if not b.follows_on or b.device.id not in held}
        if unknown:  # from the database: the newest checkpoint, or nothing counted yet
            found = await _newest_checkpoints(session, list(unknown))
            held.update({device_id: found.get(device_id, Counters()) for device_id in unknown})
        ignitions = await sensors.ignition_sensors(session, ids)
        rows, newest, moved = [], [], []
        async for part in in_slices(batches):
            for batch in part:
                device_id = batch.device.id
                before = held[device_id]
                counters, passed = count(before, batch.messages, ignitions.get(device_id))
                held[device_id] = counters
                rows += [_checkpoint_row(device_id, c) for c in (*passed, counters)]
                newest.append((batch.device, counters))
                if _shown(counters) != _shown(before):
                    moved.append((batch.device, counters))
        connection = await session.connection()
        await bulk.write_rows(connection, _CHECKPOINT, rows, update_on=("device_id", "hour"))
        await _write_live(session, newest, moved)

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Back to the newest checkpoint before `from_time`: the messages after it are
        counted again."""
        self._held.pop(device.id, None)
        await session.execute(
            delete(DeviceCounterCheckpoint).where(
                DeviceCounterCheckpoint.device_id == device.id,
                DeviceCounterCheckpoint.counted_at >= from_time,
            )
        )
        kept = await session.execute(
            select(func.max(DeviceCounterCheckpoint.counted_at)).where(
                DeviceCounterCheckpoint.device_id == device.id
            )
        )
        counted_at = kept.scalar_one_or_none()
        if counted_at is None:
            return _BEGINNING
        return counted_at + timedelta(microseconds=1)


async def _newest_checkpoints(session: AsyncSession, device_ids: list[str]) -> dict[str, Counters]:
    newest = (
        select(DeviceCounterCheckpoint.device_id, func.max(DeviceCounterCheckpoint.hour))
        .where(DeviceCounterCheckpoint.device_id.in_(bindparam("ids", expanding=True)))
        .group_by(DeviceCounterCheckpoint.device_id)
    )
    statement = select(
        DeviceCounterCheckpoint.device_id,
        DeviceCounterCheckpoint.counted_at,
        DeviceCounterCheckpoint.odometer_m,
        DeviceCounterCheckpoint.engine_seconds,
        DeviceCounterCheckpoint.ignition,
        DeviceCounterCheckpoint.lat,
        DeviceCounterCheckpoint.lon,
    ).where(tuple_(DeviceCounterCheckpoint.device_id, DeviceCounterCheckpoint.hour).in_(newest))
    rows = await session.execute(statement, {"ids": device_ids})
    return {row[0]: Counters(*row[1:]) for row in rows}


def _checkpoint_row(device_id: str, counters: Counters) -> dict[str, Any]:
    assert counters.counted_at is not None  # a checkpoint follows a message
    return {
        "device_id": device_id,
        "hour": _hour(counters.counted_at),
        "counted_at": counters.counted_at,
        "odometer_m": counters.odometer_m,
        "engine_seconds": counters.engine_seconds,
        "ignition": counters.ignition,
        "lat": counters.lat,
        "lon": counters.lon,
    }


async def _write_live(
    session: AsyncSession,
    newest: list[tuple[StepDevice, Counters]],
    moved: list[tuple[StepDevice, Counters]],
) -> None:
    """The devices' live counters, and the notice of those whose shown values moved (what
    the device reads and the event stream take in: `live_values`); a parked device's counters
    count on quietly."""
    rows = [
        {
            "device_id": device.id,
            "odometer_m": counters.odometer_m,
            "engine_seconds": counters.engine_seconds,
            "ignition": counters.ignition,
            "counted_at": counters.counted_at,
        }
        for device, counters in newest
    ]
    connection = await session.connection()
    await bulk.update_rows(connection, DeviceState.__table__, rows, where=("device_id",))
    if moved:
        ids = tuple(device.id for device, _ in moved)
        values = tuple(live_values(device, counters) for device, counters in moved)
        note(session, Change(DEVICE_COUNTERS_CHANGE, ids, device_ids=ids, values=values))


def _shown(counters: Counters) -> tuple[float, float]:
    """What the device reads show of the counters (the live state's odometer and counted
    engine hours)."""
    return (counters.odometer_m, counters.engine_seconds)


def live_values(device: StepDevice, counters: Counters) -> dict[str, Any]:
    """The counters as the live state holds them, with whose device it is (for the event
    stream's audience)."""
    return {
        "device_id": device.id,
        "provider_id": device.provider_id,
        "customer_id": device.customer_id,
        "counted_at": counters.counted_at,
        "odometer_m": counters.odometer_m,
        "engine_seconds": counters.engine_seconds,
    }


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def announce(events: EventHub, change: Change) -> None:
    """Tells the live event streams of new counters (a committed `device_counters` notice),
    as `state` events: each stream shapes them as the device reads do."""
    if not events.subscribers:
        return
    for values in change.values:
        event = {"type": "state", "device_id": values["device_id"], "state": values}
        events.publish(event, (values["provider_id"], values["customer_id"]))
