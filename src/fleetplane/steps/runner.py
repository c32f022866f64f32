"""Runs the pipeline steps over the stored messages, after their devices were answered.

Work is found two ways: the intake says which devices it just stored messages of (`notify`),
and every `poll_seconds` the database is asked which devices some step is behind on (what a
restart, or a worker process of its own, relies on: nothing here lives only in memory).
Passes over the waiting devices start at most every `interval_seconds`, so that under load a
device brings many messages to each.

A round takes up to DEVICES_PER_ROUND devices, reads their new messages once, and then gives
them to each step in a transaction of that step's own, which claims the step's progress rows (on
PostgreSQL `FOR UPDATE SKIP LOCKED`, so two runners never work on the same device and step),
runs the step and moves its marks. A step that raises has its transaction undone, is tried
again device by device, and for each device it still fails on is recorded as failing (log,
`GET /api/pipeline/steps`) and left alone until its retry time, which doubles with each
failure in a row up to a ceiling. Other steps, other devices and the intake go on.

What the intake just committed it also hands over (`NewMessages`; to a runner in a process of
its own, `steps.process`, as the stored rows, `NewRows`), and the runner keeps it in memory,
bounded, until the device's next round: a step whose mark is within that span takes its
messages from there and nothing is read back. Reading back is for a restart, a rewind, a step
that fell behind, and a step that reads filtered messages too.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.db import system_session, writer_session
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.messages import service as messages
from fleetplane.messages.columns import time_of
from fleetplane.steps import service
from fleetplane.steps.contract import (
    DeviceMessages,
    HandOver,
    NewMessages,
    NewRows,
    Step,
    StepDevice,
)
from fleetplane.steps.service import Progress
from fleetplane.telemetry import Message

log = logging.getLogger("fleetplane.steps")

DEVICES_PER_ROUND = 200
# A device's messages read at once; a device with more goes on in the next round.
MESSAGES_PER_DEVICE = 2000
# Messages the intake handed over kept in memory for the steps, over all devices; beyond it they
# are dropped, and read back from storage when their round comes.
MAX_FRESH_MESSAGES = 200_000


@dataclass(slots=True)
class _Batch:
    """One device's new messages, read once for every step."""

    device: StepDevice
    newest: datetime  # the device's newest message time its live state took in
    progress: dict[str, Progress]  # by step, as planned (unlocked)
    after: datetime | None = None  # the messages are those after this time...
    messages: list[Message] = field(default_factory=list)  # ...oldest first
    read: bool = False
    valid_only: bool = False  # handed over by the intake: the filtered ones are not there

    def covers(self, mark: datetime | None) -> bool:
        return self.read and (self.after is None or (mark is not None and mark >= self.after))


class StepRunner:
    # Keeps what the intake hands over (`notify`'s `new`) for the steps' next round: in this
    # process, the messages as they read back.
    hand_over: HandOver = "messages"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        steps: Sequence[Step],
        *,
        retry_seconds: float = 5.0,
        retry_max_seconds: float = 600.0,
        poll_seconds: float = 5.0,
        interval_seconds: float = 1.0,
    ) -> None:
        names = [step.name for step in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline step names must be unique: {names}")
        self._sessions = sessions
        self.steps = list(steps)
        self._names = names
        self._retry_seconds = retry_seconds
        self._retry_max_seconds = retry_max_seconds
        self._poll_seconds = poll_seconds
        self._interval_seconds = interval_seconds
        self._waiting: set[str] = set()
        self._fresh: dict[str, _Fresh] = {}
        self._fresh_count = 0
        # By step, each device's progress (mark, updated_at) as this runner last committed it:
        # while the database still says so, the step's memory of the device is current.
        self._committed: dict[str, dict[str, tuple[datetime | None, datetime | None]]] = {
            name: {} for name in names
        }
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(
        self,
        device_ids: Iterable[str],
        new: Mapping[str, NewMessages | NewRows] | None = None,
    ) -> None:
        """New messages of these devices are committed; `new`: those the intake has in hand."""
        if self.steps:
            self._waiting.update(device_ids)
            if new:
                self._keep_fresh(new)
            self._wake.set()

    def _keep_fresh(self, new: Mapping[str, NewMessages | NewRows]) -> None:
        for device_id, given in new.items():
            news = _as_messages(given)
            kept = self._fresh.get(device_id)
            if (
                kept is not None
                and kept.until == news.after
                and len(kept.messages) + len(news.messages) <= MESSAGES_PER_DEVICE
            ):
                kept.messages.extend(news.messages)
                kept.until = news.until
                self._fresh_count += len(news.messages)
                continue
            if kept is not None:  # a gap, or too many: what it held is read back instead
                self._fresh_count -= len(kept.messages)
            self._fresh[device_id] = _Fresh(news.after, news.until, list(news.messages))
            self._fresh_count += len(news.messages)
        if self._fresh_count > MAX_FRESH_MESSAGES:
            self._drop_fresh()

    def _drop_fresh(self) -> None:
        self._fresh.clear()
        self._fresh_count = 0

    def _take_fresh(self, device_id: str) -> "_Fresh | None":
        fresh = self._fresh.pop(device_id, None)
        if fresh is not None:
            self._fresh_count -= len(fresh.messages)
        return fresh

    def start(self) -> None:
        if self.steps and self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="pipeline-steps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._drop_fresh()

    async def _run_forever(self) -> None:
        next_scan = next_round = 0.0
        while True:
            try:
                if time.monotonic() >= next_scan:
                    self._waiting.update(await self.devices_with_work())
                    next_scan = time.monotonic() + self._poll_seconds
                if self._waiting:
                    # Passes at most every interval: under load each device then brings a
                    # second's messages, not one or two, and the cost per pass is shared.
                    await asyncio.sleep(max(0.0, next_round - time.monotonic()))
                    next_round = time.monotonic() + self._interval_seconds
                    await self.run_pass()
                    continue
                self._wake.clear()
                timeout = max(0.0, next_scan - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            except Exception:  # the database is away, say: try again later, do not die
                log.exception("a round of pipeline steps failed")
                await asyncio.sleep(self._poll_seconds)

    async def devices_with_work(self, limit: int = 10_000) -> list[str]:
        async with system_session(self._sessions) as session:
            return await service.devices_with_work(session, self._names, utcnow(), limit)

    async def run_pass(self) -> None:
        """Runs every step on every device waiting, DEVICES_PER_ROUND at a time; devices
        that get new messages meanwhile wait for the next pass."""
        waiting = list(self._waiting)
        self._waiting.clear()
        for start in range(0, len(waiting), DEVICES_PER_ROUND):
            await self.run_round(waiting[start : start + DEVICES_PER_ROUND])

    async def run_round(self, device_ids: list[str]) -> None:
        """Runs every step on these devices."""
        try:
            batches = await self._read(device_ids)
        except BaseException:
            self._waiting.update(device_ids)  # not done: the next pass takes them again
            raise
        for step in self.steps:
            await self._run_step(step, batches)
            await asyncio.sleep(0)  # the intake's turn on the event loop between two steps

    async def _read(self, device_ids: list[str]) -> list[_Batch]:
        """Hands late data to the steps' progress, then reads each device's messages from the
        oldest mark of the steps due on it."""
        async with writer_session(self._sessions) as session:
            found = await devices.for_pipeline_steps(session, device_ids)
            step_devices = [StepDevice(row[0], row[1], row[2], row[3]) for row in found]
            await service.take_late_data(session, self._names, step_devices)
        now = utcnow()
        batches = []
        async with system_session(self._sessions) as session:
            progress = await service.marks_of(session, self._names, device_ids)
            for device, row in zip(step_devices, found, strict=True):
                batch = _Batch(device, row[4], progress.get(device.id, {}))
                await self._read_messages(session, batch, now)
                batches.append(batch)
        return batches

    async def _read_messages(self, session: AsyncSession, batch: _Batch, now: datetime) -> None:
        due = [
            (step, batch.progress.get(step.name))
            for step in self.steps
            if step.name not in batch.progress or _due(batch.progress[step.name], now)
        ]
        if not due:
            return  # every step waits to retry: what the intake handed over waits too
        fresh = self._take_fresh(batch.device.id)
        if any(p is not None and p.rewind_from is not None for _, p in due):
            return  # a rewind: the step reads for itself
        marks = [None if p is None else p.mark for _, p in due]
        if fresh is not None and fresh.serves(marks, [step for step, _ in due]):
            batch.after, batch.messages, batch.newest = fresh.after, fresh.messages, fresh.until
            batch.read = batch.valid_only = True
            return
        after = None if None in marks else min(m for m in marks if m is not None)
        if after is not None and after >= batch.newest:
            return
        batch.after = after
        batch.messages = await self._messages(session, batch.device, after, batch.newest)
        batch.read = True

    async def _messages(
        self, session: AsyncSession, device: StepDevice, after: datetime | None, until: datetime
    ) -> list[Message]:
        found = await messages.stored_since(
            session, device.seq, after=after, until=until, limit=MESSAGES_PER_DEVICE
        )
        if len(found) == MESSAGES_PER_DEVICE:
            self._waiting.add(device.id)  # more in the next round
        return found

    async def _run_step(self, step: Step, batches: list[_Batch]) -> None:
        now = utcnow()
        wanted = [b for b in batches if _wants(step, b, now)]
        if not wanted:
            return
        try:
            await self._in_transaction(step, wanted)
            return
        except Exception as error:
            if len(wanted) == 1:
                await self._failed(step, wanted[0], error)
                return
        # One device's data must not hold the step back on the others: each on its own.
        for batch in wanted:
            try:
                await self._in_transaction(step, [batch])
            except Exception as error:
                await self._failed(step, batch, error)

    async def _in_transaction(self, step: Step, batches: list[_Batch]) -> None:
        now = utcnow()
        committed = self._committed[step.name]
        marks: dict[str, datetime | None] = {}
        new = [b.device for b in batches if step.name not in b.progress]
        if new:
            # A transaction of its own: on SQLite a write takes the writer turn up to the
            # commit, and the step's computation must not run inside it.
            async with writer_session(self._sessions) as session:
                await service.ensure_progress(session, [step.name], new)
        try:
            async with writer_session(self._sessions) as session:
                device_ids = [b.device.id for b in batches]
                claimed = await service.claim(session, step.name, device_ids, now)
                round_ = []
                for batch in batches:
                    progress = claimed.get(batch.device.id)
                    if progress is not None:
                        given = await self._next_messages(session, step, batch, progress, marks)
                        if given:
                            follows_on = progress.rewind_from is None and committed.get(
                                batch.device.id
                            ) == (progress.mark, progress.updated_at)
                            round_.append(DeviceMessages(batch.device, given, follows_on))
                if round_:
                    await step.process(session, round_)
                await service.save_marks(session, step.name, marks, now)
        except BaseException:
            for batch in batches:  # the step's memory of them may be ahead of the database
                committed.pop(batch.device.id, None)
            raise
        for device_id, mark in marks.items():
            committed[device_id] = (mark, now)

    async def _next_messages(
        self,
        session: AsyncSession,
        step: Step,
        batch: _Batch,
        progress: Progress,
        marks: dict[str, datetime | None],
    ) -> list[Message]:
        """This device's messages after the step's mark (rewound first for late data), as the
        step reads them; notes its new mark when anything changed."""
        device, mark = batch.device, progress.mark
        if progress.rewind_from is not None:
            if mark is not None and progress.rewind_from <= mark:
                resume = await step.rewind(session, device, progress.rewind_from)
                mark = await messages.newest_before(session, device.seq, resume)
            # Read now, under the claim: the late messages are committed by now.
            found = await self._messages(session, device, mark, batch.newest)
        elif batch.covers(mark) and not (batch.valid_only and step.reads_filtered):
            found = batch.messages
            if mark is not None and found and found[0].device_time <= mark:
                found = [m for m in found if m.device_time > mark]
        else:  # its mark moved since the round read (another runner, a rewind)
            found = await self._messages(session, device, mark, batch.newest)
        given: list[Message] = []
        if found:
            given = found
            if not step.reads_filtered and not (found is batch.messages and batch.valid_only):
                given = [m for m in found if not m.filtered]
            mark = found[-1].device_time
        if found or mark != progress.mark or progress.rewind_from or progress.attempts:
            marks[device.id] = mark
        return given

    async def _failed(self, step: Step, batch: _Batch, error: Exception) -> None:
        progress = batch.progress.get(step.name)
        attempts = 0 if progress is None else progress.attempts
        retry_in = min(self._retry_seconds * 2**attempts, self._retry_max_seconds)
        log.error(
            "pipeline step %s failed on device %s (%d failures in a row); next try in %.1f s",
            step.name,
            batch.device.id,
            attempts + 1,
            retry_in,
            exc_info=error,
        )
        try:
            async with writer_session(self._sessions) as session:
                # Its row may have been made in the transaction that was undone.
                await service.ensure_progress(session, [step.name], [batch.device])
                retry = timedelta(seconds=retry_in)
                await service.record_failure(session, step.name, batch.device.id, error, retry)
        except Exception:
            log.exception("recording the failure of step %s failed", step.name)


@dataclass(slots=True)
class _Fresh:
    """A device's messages the intake handed over since its last round (`NewMessages`)."""

    after: datetime | None
    until: datetime
    messages: list[Message]

    def serves(self, marks: list[datetime | None], steps: list[Step]) -> bool:
        """Whether every one of these steps, at its mark, finds all it needs here."""
        if any(step.reads_filtered for step in steps):
            return False
        return self.after is None or all(m is not None and m >= self.after for m in marks)


def _as_messages(new: NewMessages | NewRows) -> NewMessages:
    if isinstance(new, NewMessages):
        return new
    decode = messages.from_stored_row
    found = [
        decode(time_of(at), lat_e7, lon_e7, packed)
        for at, lat_e7, lon_e7, packed in zip(
            new.times_us, new.lat_e7, new.lon_e7, new.packed, strict=True
        )
    ]
    return NewMessages(new.after, new.until, [m for m in found if not m.filtered])


def _due(progress: Progress, now: datetime) -> bool:
    return progress.retry_at is None or progress.retry_at <= now


def _wants(step: Step, batch: _Batch, now: datetime) -> bool:
    progress = batch.progress.get(step.name)
    if progress is None:
        return True
    if not _due(progress, now):
        return False
    return progress.rewind_from is not None or progress.mark is None or progress.mark < batch.newest
