"""The column store: each device-day of messages packed as columns (`column_chunks`), so that a
device-year reads as a few hundred chunks instead of millions of rows (docs/decisions.md, "A
column store for analytics").

The rows stay the truth; a chunk is derived from them, and `columns.read` uses it only while it
is not `stale`. What keeps that exact, each in the transaction that changes the rows:

- the intake (`messages.processor.note_stored`) notes each day a device's valid messages reach
  for the first time (a row, `stale`), and on late data marks the device's days from the late
  message's time on stale again, raising their `version`; a comparison per message, a write
  per device-day or late batch. A day is packed only once a later day of its device has been
  noted, so the live state is past it, and anything stored into it afterwards is late;
- retention (`forget_before`) drops the chunks of the days it deletes and empties the day it
  cuts through;
- a device's chunks go with the device (foreign key, cascade).

The intake is the one writer of messages: a new writer stores through the same two calls
(`messages.service.insert_rows`, then `note_stored`), in one transaction.

The builder (`column_builder`, beside the intake, like retention) packs the stale days that
are over, a day per short transaction: it counts the day's rows, and if they are what the
chunk holds it only clears `stale` (a resend of a stored message), else it reads them and packs
them anew. A chunk is stored only if its row's `version` is still the one read before the rows
were: a change in between raised it.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleetplane.core import bulk
from fleetplane.core.db import rows_changed
from fleetplane.messages.models import MessageColumnsChunk, StoredMessage

DAY = timedelta(days=1)

_Chunk = MessageColumnsChunk


def day_of(at: datetime) -> datetime:
    """The start of the UTC day `at` is in (`at` is aware, in UTC)."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def days_of(times: Iterable[datetime]) -> list[datetime]:
    """The distinct days of `times` (in time order), in order."""
    days: list[datetime] = []
    start = end = None
    for at in times:
        if start is None or end is None or not start <= at < end:
            start = day_of(at)
            end = start + DAY
            if not days or days[-1] != start:
                days.append(start)
    return days


# --- what the intake notes (`messages.processor`) --------------------------------------------


async def note_days(session: AsyncSession, days: Sequence[tuple[int, datetime]]) -> None:
    """Makes sure each (device seq, day start) has its row, in one statement: a day noted for
    the first time is stale, and is packed once it is over; a day already there is left as
    it is (late data goes through `mark_stale_from`). Also for writers other than the intake
    (an import, the benchmark's bulk seeding)."""
    rows = [
        {
            "device_seq": seq,
            "period_start": start,
            "period_end": start + DAY,
            "stale": True,
            "version": 0,
            "message_count": None,
            "packed": None,
        }
        for seq, start in dict.fromkeys(days)
    ]
    if rows:
        await bulk.write_rows(await session.connection(), _Chunk.__table__, rows)


async def mark_stale_from(session: AsyncSession, device_seq: int, from_time: datetime) -> None:
    """Late data from `from_time` on: the device's days from that day on are checked again."""
    await session.execute(
        update(_Chunk)
        .where(_Chunk.device_seq == device_seq, _Chunk.period_end > from_time)
        .values(stale=True, version=_Chunk.version + 1)
    )


# --- what retention writes -----------------------------------------------------------------


async def forget_before(
    session: AsyncSession, device_seqs: Sequence[int], cutoff: datetime
) -> None:
    """Retention deletes these devices' messages older than `cutoff`: the chunks of days wholly
    before it go, a day it cuts through is emptied and packed again from what remains."""
    if not device_seqs:
        return
    of_devices = _Chunk.device_seq.in_(device_seqs)
    await session.execute(delete(_Chunk).where(of_devices, _Chunk.period_end <= cutoff))
    await session.execute(
        update(_Chunk)
        .where(of_devices, _Chunk.period_start < cutoff, _Chunk.period_end > cutoff)
        .values(stale=True, version=_Chunk.version + 1, message_count=None, packed=None)
    )


# --- what reads take -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk that holds every row of its day."""

    start: datetime
    end: datetime
    packed: bytes


async def current_chunks(
    session: AsyncSession, device_seq: int, *, after: datetime | None, until: datetime
) -> list[StoredChunk]:
    """The device's chunks that are not stale, of the days that meet (after, until], oldest
    first."""
    statement = select(_Chunk.period_start, _Chunk.period_end, _Chunk.packed).where(
        _Chunk.device_seq == device_seq,
        _Chunk.packed.is_not(None),
        _Chunk.stale.is_(False),
        _Chunk.period_start <= until,
    )
    if after is not None:
        statement = statement.where(_Chunk.period_end > after)
    statement = statement.order_by(_Chunk.period_start)
    return [
        StoredChunk(start, end, packed)
        for start, end, packed in await session.execute(statement)
        if packed is not None
    ]


# --- what the builder reads and writes -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitingDay:
    """A stale day that is over, as the builder found it (`version` read before any row)."""

    device_seq: int
    start: datetime
    end: datetime
    version: int
    message_count: int | None
    has_chunk: bool


async def waiting_days(session: AsyncSession, limit: int) -> list[WaitingDay]:
    """Stale days that are over, oldest first: a later day of the device has been noted, so
    the device's live state is past them and whatever the intake stores into them from now on
    is late, and marks them stale again (a device's newest day is never over: a device that
    fell silent has that one day read from the rows)."""
    later = aliased(_Chunk)
    followed = exists().where(
        later.device_seq == _Chunk.device_seq, later.period_start > _Chunk.period_start
    )
    statement = (
        select(
            _Chunk.device_seq,
            _Chunk.period_start,
            _Chunk.period_end,
            _Chunk.version,
            _Chunk.message_count,
            _Chunk.packed.is_not(None),
        )
        .where(_Chunk.stale, followed)
        .order_by(_Chunk.period_start)
        .limit(limit)
    )
    return [WaitingDay(*row) for row in await session.execute(statement)]


async def count_rows(session: AsyncSession, device_seq: int, start: datetime, end: datetime) -> int:
    """How many messages the device has with `start` <= device time < `end`."""
    statement = select(func.count()).where(
        StoredMessage.device_seq == device_seq,
        StoredMessage.device_time >= start,
        StoredMessage.device_time < end,
    )
    return int((await session.execute(statement)).scalar_one())


async def store_chunk(
    session: AsyncSession, day: WaitingDay, packed: bytes | None, message_count: int
) -> bool:
    """Stores the day's chunk (None: the one stored still holds its rows) and clears `stale`,
    unless the day changed since `day` was read; whether it did."""
    values: dict[str, Any] = {"stale": False, "version": _Chunk.version + 1}
    if packed is not None:
        values.update(packed=packed, message_count=message_count)
    changed = await rows_changed(
        session,
        update(_Chunk)
        .where(
            _Chunk.device_seq == day.device_seq,
            _Chunk.period_start == day.start,
            _Chunk.version == day.version,
        )
        .values(**values),
    )
    return bool(changed)
