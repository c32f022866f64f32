"""The column store's builder: packs the device-days the pipeline step noted, once they are
over, from the stored rows (`column_store` says how a chunk stays true to them).

It runs beside the intake, like retention: a day per short transaction, the packing itself in a
thread, a pause between days, so the intake neither waits long for the event loop nor, on
SQLite, for the writer lock (held only for the one UPDATE that stores a chunk).
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.db import system_session, writer_session
from fleetplane.messages import column_store, columns
from fleetplane.messages.column_store import WaitingDay

log = logging.getLogger("fleetplane.columns")

# Days packed per pass, and the pause after each.
DAYS_PER_PASS = 500
PAUSE_BETWEEN_DAYS_SECONDS = 0.01


async def build_forever(
    sessions: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    while True:
        try:
            done = await build_once(sessions)
            if done:
                log.info("column store: %d device-days packed or confirmed", done)
        except Exception:  # try again next time; reads use the rows meanwhile
            log.exception("packing message columns failed")
        await asyncio.sleep(interval_seconds)


async def build_once(
    sessions: async_sessionmaker[AsyncSession],
    limit: int = DAYS_PER_PASS,
    pause_seconds: float = PAUSE_BETWEEN_DAYS_SECONDS,
) -> int:
    """Packs, or confirms, up to `limit` stale days that are over; how many it did (a day
    that changed meanwhile is left stale for the next pass)."""
    async with system_session(sessions) as session:
        waiting = await column_store.waiting_days(session, limit)
    done = 0
    for day in waiting:
        done += await build_day(sessions, day)
        await asyncio.sleep(pause_seconds)
    return done


async def build_day(sessions: async_sessionmaker[AsyncSession], day: WaitingDay) -> bool:
    """A day with a chunk has its rows counted: the chunk holds them already, or they are
    read and packed anew, as a day without one is. Stored only if the day's version is still
    the one read before the rows were."""
    async with system_session(sessions) as session:
        count = None
        if day.has_chunk:
            count = await column_store.count_rows(session, day.device_seq, day.start, day.end)
        read = None
        if not (day.has_chunk and day.message_count == count):
            read = await columns.read_day(session, day.device_seq, day.start, day.end)
    packed = None
    if read is not None:
        packed = await asyncio.to_thread(columns.to_chunk, read)
        count = len(read)
    assert count is not None
    async with writer_session(sessions) as session:
        return await column_store.store_chunk(session, day, packed, count)
