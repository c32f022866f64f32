"""Retention: messages older than their customer's retention days are deleted in small
batches, each its own short transaction, so ingestion never waits long behind a purge.

Devices of no customer keep their messages for the platform's default retention. The column
store's chunks of the days a batch cuts into go with the rows (`column_store.forget_before`).
What the domains derived from a customer's messages (`registry.RETENTION`: notifications,
geofence visits...) goes by the same retention, each through its own `Purge`."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.db import rows_changed, system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.customers import service as customers
from fleetplane.devices import service as devices
from fleetplane.messages import column_store
from fleetplane.messages.models import StoredMessage

log = logging.getLogger("fleetplane.retention")

BATCH_ROWS = 5000
PAUSE_BETWEEN_BATCHES_SECONDS = 0.05

# A domain's purge of what it derived from a customer's messages: (session, customer id, the
# customer's device ids, cutoff, most rows) -> rows deleted; deletes what ended before the
# cutoff, at most that many rows at a time.
Purge = Callable[[AsyncSession, str, Sequence[str], datetime, int], Awaitable[int]]


async def purge_once(
    sessions: async_sessionmaker[AsyncSession],
    default_days: int,
    now: datetime | None = None,
    derived: Sequence[Purge] = (),
) -> int:
    """Deletes every expired message now, and with `derived` what the domains derived from
    them; how many messages and rows were deleted."""
    now = now or utcnow()
    async with system_session(sessions) as session:
        plan = await _retention_plan(session, default_days)
    deleted = 0
    for customer_id, device_ids, days in plan:
        cutoff = now - timedelta(days=days)
        if device_ids:
            deleted += await _purge_devices(sessions, device_ids, cutoff)
        if customer_id is not None:
            for purge in derived:
                deleted += await _purge_derived(sessions, purge, customer_id, device_ids, cutoff)
    return deleted


async def _retention_plan(
    session: AsyncSession, default_days: int
) -> list[tuple[str | None, list[str], int]]:
    """(customer id, its device ids, retention days) of each customer, and (None, the devices
    of no customer, the default days)."""
    plan: list[tuple[str | None, list[str], int]] = []
    for customer_id, days in await customers.retention_days(session):
        plan.append((customer_id, await devices.ids_of_customer(session, customer_id), days))
    unassigned = await devices.unassigned_ids(session)
    if unassigned:
        plan.append((None, unassigned, default_days))
    return plan


async def _purge_derived(
    sessions: async_sessionmaker[AsyncSession],
    purge: Purge,
    customer_id: str,
    device_ids: list[str],
    cutoff: datetime,
) -> int:
    deleted = 0
    while True:
        async with system_session(sessions) as session:
            count = await purge(session, customer_id, device_ids, cutoff, BATCH_ROWS)
        deleted += count
        if count < BATCH_ROWS:
            return deleted
        await asyncio.sleep(PAUSE_BETWEEN_BATCHES_SECONDS)  # let ingestion write


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
    deleted = await rows_changed(session, delete(StoredMessage).where(key.in_(oldest)))
    # In the same transaction: a column chunk never outlives a row it was packed from.
    await column_store.forget_before(session, seqs, cutoff)
    return deleted


async def purge_forever(
    sessions: async_sessionmaker[AsyncSession],
    default_days: int,
    interval_seconds: float,
    derived: Sequence[Purge] = (),
) -> None:
    while True:
        try:
            deleted = await purge_once(sessions, default_days, derived=derived)
            if deleted:
                log.info("retention: deleted %d expired messages and derived rows", deleted)
        except Exception:  # try again next time; ingestion goes on regardless
            log.exception("retention purge failed")
        await asyncio.sleep(interval_seconds)
