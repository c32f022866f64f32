"""The messages domain's part of the intake transaction: telling the column store what was
just stored (`column_store`). The packing itself is the builder's (`column_builder`), later."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages.column_store import DAY, day_of, days_of, mark_stale_from, note_days
from fleetplane.telemetry import Message


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One device's messages the intake has just written (before its commit)."""

    device_seq: int
    messages: Sequence[Message]
    # The device's newest valid message time before the batch (its live state's), or None.
    newest_before: datetime | None


async def note_stored(session: AsyncSession, batches: Iterable[StoredBatch]) -> None:
    """Tells the column store what the intake stored, in its transaction: the days a device's
    valid messages reached for the first time (in the usual batch, none: the device's day has
    its row already), and late data, which marks the device's days from its time on stale.
    Costs a comparison per message; writes only when a day begins or late data came."""
    days: list[tuple[int, datetime]] = []
    for batch in batches:
        late, noted = _late_and_new(batch)
        if late is not None:
            await mark_stale_from(session, batch.device_seq, late)
        days += [(batch.device_seq, day) for day in noted]
    await note_days(session, days)


def _late_and_new(batch: StoredBatch) -> tuple[datetime | None, list[datetime]]:
    """(the oldest late message time: not newer than the newest before, and the days to
    note: of the valid messages, those outside the day of the newest before)."""
    before = batch.newest_before
    if before is None:
        # A device without a live state has no packed day, unless its state was lost: then
        # all of the batch counts as late, which only costs checking its days again.
        late = min((message.device_time for message in batch.messages), default=None)
        valid = [message.device_time for message in batch.messages if not message.filtered]
        return late, days_of(sorted(valid))
    day_start = day_of(before)
    day_end = day_start + DAY
    late = None
    outside: list[datetime] = []
    for message in batch.messages:  # chained comparisons: no timedelta made per message
        at = message.device_time
        if at <= before and (late is None or at < late):
            late = at
        if not day_start <= at < day_end and not message.filtered:
            outside.append(at)
    return late, days_of(sorted(outside))
