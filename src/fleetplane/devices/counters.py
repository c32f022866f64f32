"""The device counters step: odometer, counted engine hours and ignition, summed up from each
device's valid messages after they are stored (a pipeline step, `steps.contract`).

Summed in the pipeline rather than in the intake, they take in late data: a black box sent
after a reconnect rewinds the counters to the last hourly checkpoint before it and counts
again from there, with the result of counting everything in order. Their values go to the
device's live state (`device_states`, columns the intake never writes) with a change notice,
which the device reads and the live event stream take in.

`odometers_at` answers what the odometer was just after given messages (the trips step keeps
it on each interval's start and end), counted on from these checkpoints with the same fold.
"""

from collections.abc import Collection, Sequence
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
from fleetplane.messages import service as messages
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, compute_value
from fleetplane.steps.contract import DeviceMessages, StepDevice, in_slices
from fleetplane.telemetry import Message

# A device's odometer known after one of its messages with a position, from an earlier
# answer: (time, odometer in metres, lat, lon of the message).
KnownOdometer = tuple[datetime, float, float, float]

STEP_NAME = "device_counters"
# A rewind to before every checkpoint counts again from the device's first message.
_BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
_CHECKPOINT = DeviceCounterCheckpoint.__table__
_HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
# Stored messages read at once when counting on from a checkpoint to a time asked about.
_MESSAGES_PER_READ = 5000
# Checkpoints asked for in one `IN (...)` list.
_KEYS_PER_QUERY = 1000


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

    async def odometers_at(
        self,
        session: AsyncSession,
        questions: Sequence[
            tuple[StepDevice, Collection[datetime], Sequence[Message], Sequence[KnownOdometer]]
        ],
    ) -> dict[tuple[str, datetime], float]:
        """`odometers_at`, answering at once a time that is a device's newest message this
        step has counted (an open interval's end, every round) from what it holds."""
        found: dict[tuple[str, datetime], float] = {}
        rest = []
        for device, times, in_hand, known in questions:
            held = self._held.get(device.id)
            newest = None if held is None else held.counted_at
            if held is not None and newest is not None and newest in times:
                found[(device.id, newest)] = held.odometer_m
                times = [at for at in times if at != newest]
            if times:
                rest.append((device, times, in_hand, known))
        if rest:
            found.update(await odometers_at(session, rest))
        return found

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
    statement = select(*_CHECKPOINT_COLUMNS).where(
        tuple_(DeviceCounterCheckpoint.device_id, DeviceCounterCheckpoint.hour).in_(newest)
    )
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


# --- the odometer at given moments ----------------------------------------------------------


async def odometers_at(
    session: AsyncSession,
    questions: Sequence[
        tuple[StepDevice, Collection[datetime], Sequence[Message], Sequence[KnownOdometer]]
    ],
) -> dict[tuple[str, datetime], float]:
    """The odometer the counters showed just after a device's message at each of the times
    (device, times, messages in hand, odometers known): counted on with `count` from the
    newest point at or before the time where the counters are known (one of their
    checkpoints, or an odometer known after a message with a position), over the valid
    messages after it, so the same sum the step makes. The messages in hand are all of the
    device's valid messages over their span, oldest first (a pipeline round's); stored ones
    are read only outside it. A time the counters cannot answer (none of theirs before it,
    and messages before their first checkpoint: counted from a device's live state by
    migration 0016) is left out.

    One query for the checkpoints of the hours asked about; a device then usually needs no
    more: a time that is its checkpoint's, or followed in hand up to the checkpoint only by
    messages without a position (which move no odometer), is answered from it."""
    keys = {(question[0].id, _hour(at)) for question in questions for at in question[1]}
    held = await _checkpoints_of_hours(session, keys)
    found: dict[tuple[str, datetime], float] = {}
    counts = []
    for device, times, in_hand, known in questions:
        answered, counting = await _answered(session, device, times, in_hand, known, held)
        found.update(((device.id, at), odometer_m) for at, odometer_m in answered.items())
        if counting is not None:
            counts.append(counting)
    # Whether stored messages between a starting point and what is in hand move the odometer:
    # asked for all the devices at once, read only where they do.
    gaps = [c.gap for c in counts if c.gap is not None]
    moved = await messages.with_positions_between(session, gaps) if gaps else set()
    for counting in counts:
        answered = await counting.counted(session, counting.device.seq in moved)
        found.update(((counting.device.id, at), odometer_m) for at, odometer_m in answered.items())
    return found


async def _checkpoints_of_hours(
    session: AsyncSession, keys: Collection[tuple[str, datetime]]
) -> dict[tuple[str, datetime], Counters]:
    """The checkpoints of these (device, hour)s: asked as the devices' rows of the hours
    named (a round's times lie in an hour or two), which the primary key finds."""
    hours = sorted({hour for _, hour in keys})
    device_ids = sorted({device_id for device_id, _ in keys})
    found: dict[tuple[str, datetime], Counters] = {}
    for start in range(0, len(device_ids), _KEYS_PER_QUERY):
        statement = select(DeviceCounterCheckpoint.hour, *_CHECKPOINT_COLUMNS).where(
            DeviceCounterCheckpoint.device_id.in_(device_ids[start : start + _KEYS_PER_QUERY]),
            DeviceCounterCheckpoint.hour.in_(hours),
        )
        for row in await session.execute(statement):
            found[(row[1], row[0])] = Counters(*row[2:])
    return found


_CHECKPOINT_COLUMNS = (
    DeviceCounterCheckpoint.device_id,
    DeviceCounterCheckpoint.counted_at,
    DeviceCounterCheckpoint.odometer_m,
    DeviceCounterCheckpoint.engine_seconds,
    DeviceCounterCheckpoint.ignition,
    DeviceCounterCheckpoint.lat,
    DeviceCounterCheckpoint.lon,
)


async def _answered(
    session: AsyncSession,
    device: StepDevice,
    times: Collection[datetime],
    in_hand: Sequence[Message],
    known: Sequence[KnownOdometer],
    held: dict[tuple[str, datetime], Counters],
) -> tuple[dict[datetime, float], "_Counting | None"]:
    """The times answered from a checkpoint at once, and the counting the others need."""
    found: dict[datetime, float] = {}
    left = []
    for at in sorted(set(times)):
        checkpoint = held.get((device.id, _hour(at)))
        if checkpoint is not None and _unmoved_until(checkpoint, at, in_hand):
            found[at] = checkpoint.odometer_m
        else:
            left.append(at)
    if not left:
        return found, None
    # The rest: counted on from the newest known counters at or before the first of them.
    start = await _start_before(session, device, left[0], known, held)
    if start is None:
        return found, None
    if start.counted_at is None and not await _stored_before(session, device, left[0]):
        found[left.pop(0)] = 0.0  # the device's first message: nothing counted yet
        if not left:
            return found, None
    return found, _Counting(device, start, left, in_hand)


@dataclass(slots=True)
class _Counting:
    """Counting on from `start` through the times `left` (oldest first)."""

    device: StepDevice
    start: Counters
    left: list[datetime]
    in_hand: Sequence[Message]

    @property
    def gap(self) -> tuple[int, datetime | None, datetime] | None:
        """(device seq, after, before): the stored messages between the start and what is
        in hand, when they may count."""
        if not self.in_hand:
            return None
        first = self.in_hand[0].device_time
        after = self.start.counted_at
        if after is not None and after >= first:
            return None
        return (self.device.seq, after, min(first, self.left[-1] + _MICROSECOND))

    async def counted(self, session: AsyncSession, gap_moved: bool) -> dict[datetime, float]:
        """The odometer at each time left; `gap_moved`: stored messages with a position lie
        in `gap`."""
        following = await _messages_after(
            session, self.device, self.start.counted_at, self.left[-1], self.in_hand, gap_moved
        )
        found: dict[datetime, float] = {}
        counters, index = self.start, 0
        for at in self.left:
            end = index
            while end < len(following) and following[end].device_time <= at:
                end += 1
            counters, _ = count(counters, following[index:end], None)
            index = end
            found[at] = counters.odometer_m
        return found


def _unmoved_until(checkpoint: Counters, at: datetime, in_hand: Sequence[Message]) -> bool:
    """Whether the counters after the message at `at` had the checkpoint's odometer: it is
    that message's, or every message after it up to the checkpoint is in hand and has no
    position."""
    counted_at = checkpoint.counted_at
    if counted_at is None or counted_at < at:
        return False
    if counted_at == at:
        return True
    if not in_hand or at < in_hand[0].device_time or counted_at > in_hand[-1].device_time:
        return False
    return not any(
        m.lat is not None and m.lon is not None for m in in_hand if at < m.device_time <= counted_at
    )


async def _start_before(
    session: AsyncSession,
    device: StepDevice,
    at: datetime,
    known: Sequence[KnownOdometer],
    held: dict[tuple[str, datetime], Counters],
) -> Counters | None:
    """The newest counters known at or before `at`: the hour's checkpoint, an odometer the
    caller knows, or (read only when neither is in the hour) an earlier checkpoint."""
    found = [
        Counters(time, odometer_m, 0.0, None, lat, lon)
        for time, odometer_m, lat, lon in known
        if time <= at
    ]
    checkpoint = held.get((device.id, _hour(at)))
    if checkpoint is not None and checkpoint.counted_at is not None and checkpoint.counted_at <= at:
        found.append(checkpoint)
    newest = max(found, key=_counted_at, default=None)
    if newest is not None and _counted_at(newest) >= _hour(at):
        return newest  # no checkpoint of an earlier hour is newer
    earlier = await _checkpoint_before(session, device, at)
    if earlier is not None:
        found.append(earlier)
    return max(found, key=_counted_at, default=None)


def _counted_at(counters: Counters) -> datetime:
    return _BEGINNING if counters.counted_at is None else counters.counted_at


async def _checkpoint_before(
    session: AsyncSession, device: StepDevice, at: datetime
) -> Counters | None:
    """The newest checkpoint at or before `at`; with none, the counters before the device's
    first message when they counted from it (none of its stored messages lies before their
    first checkpoint's hour); else None."""
    newest = (
        select(*_CHECKPOINT_COLUMNS[1:])
        .where(
            DeviceCounterCheckpoint.device_id == device.id,
            DeviceCounterCheckpoint.hour <= _hour(at),
            DeviceCounterCheckpoint.counted_at <= at,
        )
        .order_by(DeviceCounterCheckpoint.hour.desc())
        .limit(1)
    )
    row = (await session.execute(newest)).one_or_none()
    if row is not None:
        return Counters(*row)
    first_hour = (
        await session.execute(
            select(func.min(DeviceCounterCheckpoint.hour)).where(
                DeviceCounterCheckpoint.device_id == device.id
            )
        )
    ).scalar_one_or_none()
    if first_hour is None:
        return None  # not counted yet
    if await _stored_before(session, device, first_hour):
        return None  # counted on from a live state, not from its first message
    return Counters()


async def _messages_after(
    session: AsyncSession,
    device: StepDevice,
    after: datetime | None,
    until: datetime,
    in_hand: Sequence[Message],
    gap_moved: bool,
) -> list[Message]:
    """The device's valid messages with `after` < time <= `until` that move the odometer:
    those in hand taken from there, the others (before or after them) read from storage;
    those before them only when `gap_moved` (else none there has a position)."""
    if not in_hand:
        return await _stored(session, device, after, until)
    first, last = in_hand[0].device_time, in_hand[-1].device_time
    found: list[Message] = []
    if gap_moved and (after is None or after < first):
        found += await _stored(session, device, after, min(until, first - _MICROSECOND))
    found += [
        m for m in in_hand if (after is None or m.device_time > after) and m.device_time <= until
    ]
    if until > last:
        found += await _stored(session, device, last if after is None else max(after, last), until)
    return found


async def _stored_before(session: AsyncSession, device: StepDevice, at: datetime) -> bool:
    return await messages.newest_before(session, device.seq, at) is not None


async def _stored(
    session: AsyncSession, device: StepDevice, after: datetime | None, until: datetime
) -> list[Message]:
    found: list[Message] = []
    while after is None or after < until:
        page = await messages.stored_since(
            session, device.seq, after=after, until=until, limit=_MESSAGES_PER_READ
        )
        found += [m for m in page if not m.filtered]
        if len(page) < _MESSAGES_PER_READ:
            break
        after = page[-1].device_time
    return found
