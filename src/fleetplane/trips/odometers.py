"""The device's odometer at each interval's start and end, as the device counters show it at
those moments, worked out by the trips step for the intervals a round writes and kept on their
rows (docs/decisions.md, "Intervals: odometer and driver").

The counters are another domain's step: the question goes to the function the registry hands
the trips step (`devices.counters.odometers_at`), which counts on from the counters' own
checkpoints with their own fold. Each boundary is worked out once: what the devices' open
intervals already hold (an open interval's start, a trip's end while it pauses) is taken from
them, as its value cannot have changed since (late data before it deletes the interval), and
is handed over as starting points for the rest."""

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages.columns import time_of
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message
from fleetplane.trips.detector import Detection
from fleetplane.trips.models import TripInterval

# (time, odometer in metres, lat, lon) after one of a device's messages with a position.
KnownOdometer = tuple[datetime, float, float, float]
# (device, times, the device's messages in hand, its odometers known)
# -> {(device id, time): odometer in metres}
OdometersAt = Callable[
    [
        AsyncSession,
        Sequence[
            tuple[StepDevice, Collection[datetime], Sequence[Message], Sequence[KnownOdometer]]
        ],
    ],
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
        (batch.device.id, interval.key, time_of(interval.start_us), time_of(interval.end_us))
        for batch, detection in zip(batches, detections, strict=True)
        for interval in detection.intervals
    ]
    if not written:
        return {}
    stored = await _open_boundaries(session, [batch.device.id for batch in batches])
    known = {(device_id, k[0]): k[1] for device_id, found in stored.items() for k in found}
    asked: dict[str, set[datetime]] = {}
    for device_id, _, start, end in written:
        for at in (start, end):
            if (device_id, at) not in known:
                asked.setdefault(device_id, set()).add(at)
    if asked:
        questions = [
            (batch.device, asked[batch.device.id], batch.messages, stored.get(batch.device.id, []))
            for batch in batches
            if batch.device.id in asked
        ]
        known.update(await odometers_at(session, questions))
    return {
        (device_id, key): (known.get((device_id, start)), known.get((device_id, end)))
        for device_id, key, start, end in written
    }


async def _open_boundaries(
    session: AsyncSession, device_ids: list[str]
) -> dict[str, list[KnownOdometer]]:
    """The odometers the devices' open intervals have stored, by device: what a round
    rewrites (an open interval's start, a trip's end while it pauses) and the newest
    starting points for counting. A closed interval is written once, when it closes (or again
    after late data, which deletes it first): only open ones can be stored already."""
    found: dict[str, list[KnownOdometer]] = {}
    for start in range(0, len(device_ids), IDS_PER_QUERY):
        statement = select(
            TripInterval.device_id,
            TripInterval.start_time,
            TripInterval.odometer_start_m,
            TripInterval.start_lat,
            TripInterval.start_lon,
            TripInterval.end_time,
            TripInterval.odometer_end_m,
            TripInterval.end_lat,
            TripInterval.end_lon,
        ).where(
            TripInterval.open, TripInterval.device_id.in_(device_ids[start : start + IDS_PER_QUERY])
        )
        for row in await session.execute(statement):
            known = found.setdefault(row.device_id, [])
            if row.odometer_start_m is not None:
                known.append((row.start_time, row.odometer_start_m, row.start_lat, row.start_lon))
            if row.odometer_end_m is not None:
                known.append((row.end_time, row.odometer_end_m, row.end_lat, row.end_lon))
    return found
