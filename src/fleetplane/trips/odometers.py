"""The device's odometer at each interval's start and end, as the device counters show it at
those moments, worked out by the trips step for the intervals a round writes and kept on their
rows (docs/decisions.md, "Intervals: odometer and driver").

The counters are another domain's step: the question goes to the function the registry hands
the trips step (`devices.counters.odometers_at`), which counts on from the counters' own
checkpoints with their own fold. Each boundary is worked out once: what a stored interval of
the round already holds (an open interval's start, a trip's end once it stops) is taken from
it, as its value cannot have changed since (late data before it deletes the interval)."""

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages.columns import time_of
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message
from fleetplane.trips.detector import Detection, Interval
from fleetplane.trips.models import TripInterval
from fleetplane.trips.service import interval_id

# (device, times, the device's messages in hand) -> {(device id, time): odometer in metres}
OdometersAt = Callable[
    [AsyncSession, Sequence[tuple[StepDevice, Collection[datetime], Sequence[Message]]]],
    Awaitable[dict[tuple[str, datetime], float]],
]
# An interval of a round: (device id, (kind, start µs)).
IntervalKey = tuple[str, tuple[str, int]]
IDS_PER_QUERY = 1000


async def interval_odometers(
    session: AsyncSession,
    odometers_at: OdometersAt,
    batches: Sequence[DeviceMessages],
    detections: Sequence[Detection],
) -> dict[IntervalKey, tuple[float | None, float | None]]:
    """(odometer at the start, at the end) of each interval the round writes; None where the
    counters cannot tell."""
    written = [
        (batch.device, interval)
        for batch, detection in zip(batches, detections, strict=True)
        for interval in detection.intervals
    ]
    if not written:
        return {}
    known = await _stored_boundaries(session, [_id(device, i) for device, i in written])
    asked: dict[str, set[datetime]] = {}
    for device, interval in written:
        for at in (time_of(interval.start_us), time_of(interval.end_us)):
            if (device.id, at) not in known:
                asked.setdefault(device.id, set()).add(at)
    if asked:
        questions = [
            (batch.device, asked[batch.device.id], batch.messages)
            for batch in batches
            if batch.device.id in asked
        ]
        known.update(await odometers_at(session, questions))
    return {
        (device.id, interval.key): (
            known.get((device.id, time_of(interval.start_us))),
            known.get((device.id, time_of(interval.end_us))),
        )
        for device, interval in written
    }


def _id(device: StepDevice, interval: Interval) -> str:
    return interval_id(device, interval.kind.value, interval.start_us)


async def _stored_boundaries(
    session: AsyncSession, interval_ids: list[str]
) -> dict[tuple[str, datetime], float]:
    """The odometers the round's intervals already have stored, by (device, time)."""
    found: dict[tuple[str, datetime], float] = {}
    for start in range(0, len(interval_ids), IDS_PER_QUERY):
        statement = select(
            TripInterval.device_id,
            TripInterval.start_time,
            TripInterval.odometer_start_m,
            TripInterval.end_time,
            TripInterval.odometer_end_m,
        ).where(TripInterval.id.in_(interval_ids[start : start + IDS_PER_QUERY]))
        for device_id, start_time, at_start, end_time, at_end in await session.execute(statement):
            if at_start is not None:
                found[(device_id, start_time)] = at_start
            if at_end is not None:
                found[(device_id, end_time)] = at_end
    return found
