"""Steps' progress in the database: marks, failures, late data. Every function takes a
session and never commits (the runner's transactions do)."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    BindParameter,
    Select,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.ids import new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.steps.contract import StepDevice
from fleetplane.steps.models import StepProgress, StepRewind

OK = "ok"
# A list of device ids bound as one parameter: a round's statements list up to a few hundred,
# and an IN of literal values costs a coercion per value each time the statement is built.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
FAILING = "failing"
MAX_ERROR_LENGTH = 500


class Progress(NamedTuple):
    # A tuple: made for every device and step of every round, at a tuple's cost.
    device_id: str
    mark: datetime | None
    rewind_from: datetime | None
    attempts: int
    retry_at: datetime | None
    updated_at: datetime | None = None  # when the row last changed (claims read it)


def list_query(
    provider_id: str,
    *,
    step: str | None = None,
    device_id: str | None = None,
    status: str | None = None,
) -> Select[StepProgress]:
    statement = select(StepProgress).where(StepProgress.provider_id == provider_id)
    if step is not None:
        statement = statement.where(StepProgress.step == step)
    if device_id is not None:
        statement = statement.where(StepProgress.device_id == device_id)
    if status is not None:
        statement = statement.where(StepProgress.status == status)
    return statement


async def record_late(session: AsyncSession, late: dict[str, datetime]) -> None:
    """Notes late data of these devices (device -> its oldest late message's time)."""
    if late:
        rows = [{"device_id": device_id, "from_time": at} for device_id, at in late.items()]
        await session.execute(insert(StepRewind), rows)


async def devices_with_work(
    session: AsyncSession, steps: Sequence[str], now: datetime, limit: int
) -> list[str]:
    """Devices that some step has not caught up with (and is not waiting to retry), that
    some step has never seen, or that have late data waiting: what a runner starting up, or
    a worker process, looks for."""
    newest = devices.newest_message_query().subquery()
    due = or_(StepProgress.retry_at.is_(None), StepProgress.retry_at <= now)
    behind = exists().where(
        StepProgress.device_id == newest.c.device_id,
        StepProgress.step.in_(steps),
        due,
        or_(
            StepProgress.mark.is_(None),
            StepProgress.mark < newest.c.last_message_at,
            StepProgress.rewind_from.is_not(None),
        ),
    )
    known = (
        select(func.count())
        .where(StepProgress.device_id == newest.c.device_id, StepProgress.step.in_(steps))
        .scalar_subquery()
    )
    statement = select(newest.c.device_id).where(or_(behind, known < len(steps))).limit(limit)
    found = list((await session.execute(statement)).scalars())
    late = select(StepRewind.device_id).distinct().limit(limit)
    found += (await session.execute(late)).scalars()
    return list(dict.fromkeys(found))


async def ensure_progress(
    session: AsyncSession, steps: Sequence[str], devices_: Sequence[StepDevice]
) -> None:
    """Gives each (step, device) a progress row if it has none yet."""
    now = utcnow()
    rows = [
        {
            "id": new_id("stp"),
            "step": step,
            "device_id": device.id,
            "provider_id": device.provider_id,
            "mark": None,
            "rewind_from": None,
            "status": OK,
            "attempts": 0,
            "last_error": None,
            "retry_at": None,
            "updated_at": now,
        }
        for step in steps
        for device in devices_
    ]
    if rows:
        await bulk.write_rows(await session.connection(), StepProgress.__table__, rows)


async def take_late_data(
    session: AsyncSession, steps: Sequence[str], devices_: Sequence[StepDevice]
) -> None:
    """Hands the late data waiting for these devices to each step's progress (`rewind_from`,
    the oldest wins) and removes it from the waiting list."""
    ids = [device.id for device in devices_]
    rows = (
        await session.execute(
            select(StepRewind.id, StepRewind.device_id, StepRewind.from_time).where(
                StepRewind.device_id.in_(_IDS)
            ),
            {"ids": ids},
        )
    ).all()
    if not rows:
        return
    earliest: dict[str, datetime] = {}
    for row in rows:
        if row.device_id not in earliest or row.from_time < earliest[row.device_id]:
            earliest[row.device_id] = row.from_time
    # Rows first: a step that has never run for the device must see the late data too, in
    # case it is reading this device's messages right now in another process.
    await ensure_progress(session, steps, [d for d in devices_ if d.id in earliest])
    for device_id, at in earliest.items():
        await _rewind_from(session, steps, device_id, at)
    await session.execute(delete(StepRewind).where(StepRewind.id.in_([row.id for row in rows])))


async def rewind_step(session: AsyncSession, step: str, device: StepDevice, at: datetime) -> None:
    """Has one step compute this device again from `at` (its settings changed, say), leaving
    the other steps' progress alone: late data rewinds every step, a step's own settings only
    that step."""
    await ensure_progress(session, [step], [device])
    await _rewind_from(session, [step], device.id, at)


async def _rewind_from(
    session: AsyncSession, steps: Sequence[str], device_id: str, at: datetime
) -> None:
    """Moves these steps' rewind point of the device back to `at` (the oldest wins)."""
    await session.execute(
        update(StepProgress)
        .where(
            StepProgress.device_id == device_id,
            StepProgress.step.in_(steps),
            or_(StepProgress.rewind_from.is_(None), StepProgress.rewind_from > at),
        )
        .values(rewind_from=at)
    )


async def claim(
    session: AsyncSession, step: str, device_ids: Sequence[str], now: datetime
) -> dict[str, Progress]:
    """The step's progress on these devices, locked for this transaction, skipping devices
    another process is working on (PostgreSQL; SQLite has one writer) and those waiting to be
    retried."""
    statement = select(
        StepProgress.device_id,
        StepProgress.mark,
        StepProgress.rewind_from,
        StepProgress.attempts,
        StepProgress.retry_at,
        StepProgress.updated_at,
    ).where(
        StepProgress.step == step,
        StepProgress.device_id.in_(_IDS),
        or_(StepProgress.retry_at.is_(None), StepProgress.retry_at <= now),
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    rows = await session.execute(statement, {"ids": list(device_ids)})
    return {row.device_id: Progress(*row) for row in rows}


async def marks_of(
    session: AsyncSession, steps: Sequence[str], device_ids: Sequence[str]
) -> dict[str, dict[str, Progress]]:
    """Each device's progress by step (unlocked: to plan what to read)."""
    statement = select(
        StepProgress.step,
        StepProgress.device_id,
        StepProgress.mark,
        StepProgress.rewind_from,
        StepProgress.attempts,
        StepProgress.retry_at,
    ).where(StepProgress.step.in_(steps), StepProgress.device_id.in_(_IDS))
    found: dict[str, dict[str, Progress]] = {}
    for row in await session.execute(statement, {"ids": list(device_ids)}):
        found.setdefault(row.device_id, {})[row.step] = Progress(*row[1:])
    return found


async def save_marks(
    session: AsyncSession, step: str, marks: dict[str, datetime | None], now: datetime
) -> None:
    """The step took in these devices' messages up to their marks: it is well again."""
    if not marks:
        return
    well = {
        "rewind_from": None,
        "status": OK,
        "attempts": 0,
        "last_error": None,
        "retry_at": None,
        "updated_at": now,
        "step": step,
    }
    rows = [{"device_id": device_id, "mark": mark, **well} for device_id, mark in marks.items()]
    connection = await session.connection()
    await bulk.update_rows(connection, StepProgress.__table__, rows, where=("step", "device_id"))


async def record_failure(
    session: AsyncSession,
    step: str,
    device_id: str,
    error: BaseException,
    retry_in: timedelta,
) -> None:
    now = utcnow()
    text = f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]
    await session.execute(
        update(StepProgress)
        .where(StepProgress.step == step, StepProgress.device_id == device_id)
        .values(
            status=FAILING,
            attempts=StepProgress.attempts + 1,
            last_error=text,
            retry_at=now + retry_in,
            updated_at=now,
        )
    )
