"""Retention: messages older than their customer's retention days are deleted in small
batches, each its own short transaction, so ingestion never waits long behind a purge.

Devices of no customer keep their messages for the platform's default retention. The column
store's chunks of the days a batch cuts into go with the rows (`column_store.forget_before`)."""

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.db import system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.customers import service as customers
from fleetplane.devices import service as devices
from fleetplane.messages import column_store
from fleetplane.messages.models import StoredMessage

log = logging.getLogger("fleetplane.retention")

BATCH_ROWS = 5000
PAUSE_BETWEEN_BATCHES_SECONDS = 0.05


async def purge_once(
    sessions: async_sessionmaker[AsyncSession],
    default_days: int,
    now: datetime | None = None,
) -> int:
    """Deletes every expired message now; how many were deleted."""
    now = now or utcnow()
    async with system_session(sessions) as session:
        plan = await _retention_plan(session, default_days)
    deleted = 0
    for device_ids, days in plan:
        deleted += await _purge_devices(sessions, device_ids, now - timedelta(days=days))
    return deleted


async def _retention_plan(session: AsyncSession, default_days: int) -> list[tuple[list[str], int]]:
    plan = []
    for customer_id, days in await customers.retention_days(session):
        ids = await devices.ids_of_customer(session, customer_id)
        if ids:
            plan.append((ids, days))
    unassigned = await devices.unassigned_ids(session)
    if unassigned:
        plan.append((unassigned, default_days))
    return plan


async def _purge_devices(
    sessions: async_sessionmaker[AsyncSession], device_ids: list[str], cutoff: datetime
) -> int:
    deleted = 0
    for start in range(0, len(device_ids), 500):
        chunk = device_ids[start : start + 500]
        while True:
            async with system_session(sessions) as session:
                count = await _delete_batch(session, chunk, cutoff)
            deleted += count
            if count < BATCH_ROWS:
                break
            await asyncio.sleep(PAUSE_BETWEEN_BATCHES_SECONDS)  # let ingestion write
    return deleted


async def _delete_batch(session: AsyncSession, device_ids: list[str], cutoff: datetime) -> int:
    key = tuple_(StoredMessage.device_seq, StoredMessage.device_time)
    seqs = list((await devices.seqs_of(session, device_ids)).values())
    oldest = (
        select(StoredMessage.device_seq, StoredMessage.device_time)
        .where(StoredMessage.device_seq.in_(seqs), StoredMessage.device_time < cutoff)
        .limit(BATCH_ROWS)
    )
    result = await session.execute(delete(StoredMessage).where(key.in_(oldest)))
    # In the same transaction: a column chunk never outlives a row it was packed from.
    await column_store.forget_before(session, seqs, cutoff)
    # An UPDATE or DELETE gives a CursorResult, which counts its rows; the session's
    # `execute` is typed for any statement.
    return cast(CursorResult[Any], result).rowcount or 0


async def purge_forever(
    sessions: async_sessionmaker[AsyncSession], default_days: int, interval_seconds: float
) -> None:
    while True:
        try:
            deleted = await purge_once(sessions, default_days)
            if deleted:
                log.info("retention: deleted %d expired messages", deleted)
        except Exception:  # try again next time; ingestion goes on regardless
            log.exception("retention purge failed")
        await asyncio.sleep(interval_seconds)
