"""The durable write path: messages from every connection are written in batches, and each
sender learns its messages are stored only after the batch is committed.

The transaction holds what the answer depends on: the messages and the devices' live state
(docs/decisions.md, "Pipeline steps after the durable write"). Everything derived from the
messages runs after the commit, as pipeline steps (`steps.runner`), which this writer tells
which devices have new messages; late data is noted here for them, in the same transaction.

A connection hands over one packet's messages and waits; so a device's messages are written
in the order it sent them, and its answer leaves only after the commit. The queue is bounded:
when the database is slower than the devices, connections wait in `store` (and stop reading
their sockets) instead of memory growing.
"""

import asyncio
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.db import system_session, writer_session
from fleetplane.core.events import Audience, EventHub
from fleetplane.core.files import FileStore
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import processor as device_states
from fleetplane.devices import service as devices
from fleetplane.messages import processor as message_columns
from fleetplane.messages import service as messages
from fleetplane.messages.columns import time_us
from fleetplane.steps import service as steps
from fleetplane.steps.contract import HandOver, NewMessages, NewRows
from fleetplane.tachograph import service as tachograph
from fleetplane.telemetry import DriverMessage, ImageFile, Message, TachographFile
from fleetplane.video import service as video

log = logging.getLogger("fleetplane.ingest")


class StepNotifier(Protocol):
    """What the writer needs of the pipeline steps' runner (`steps.runner.StepRunner`)."""

    @property
    def steps(self) -> Sequence[Any]:
        """The registered steps (read only here, so any sequence of them will do)."""

    @property
    def hand_over(self) -> HandOver:
        """What it takes of the new messages the writer has in hand (`notify`'s `new`): the
        messages, their rows, or nothing."""

    def notify(
        self,
        device_ids: Iterable[str],
        new: Mapping[str, NewMessages | NewRows] | None = None,
    ) -> None:
        """These devices have newly stored messages for the steps; `new` hands over the ones
        the writer has in hand, so the steps need not read them back."""


@dataclass(slots=True)
class _Pending:
    device_id: str
    messages: list[Message]
    stored: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MessageStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        events: EventHub,
        files: FileStore,
        *,
        rules: device_states.DeviceRulesCache | None = None,
        step_runner: StepNotifier | None = None,
        max_batch_messages: int = 5000,
        max_waiting_packets: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._rules = rules if rules is not None else device_states.DeviceRulesCache()
        self._events = events
        self._files = files
        self._step_runner = step_runner
        self._max_batch = max_batch_messages
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(max_waiting_packets)
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="message-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def store(self, device_id: str, batch: list[Message]) -> None:
        """Returns once `batch` is committed; raises if it could not be."""
        pending = _Pending(device_id, batch)
        await self._queue.put(pending)
        await pending.stored

    async def store_extra(
        self, device_id: str, chat: DriverMessage | None, file: ImageFile | TachographFile | None
    ) -> None:
        """A driver's chat message or a whole file from a device, committed before it returns.
        They are rare and large, so they go straight to the database, not through batches."""
        async with system_session(self._sessions) as session:
            provider_id = await devices.provider_of(session, device_id)
            if chat is not None:
                await messages.store_chat(session, device_id, chat)
            if isinstance(file, ImageFile):
                await video.store_device_image(session, self._files, provider_id, device_id, file)
            elif isinstance(file, TachographFile):
                await tachograph.store_device_file(
                    session, self._files, provider_id, device_id, file
                )

    async def _write_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._write(batch)
            except Exception:
                # One bad packet must not fail its neighbours: write them one by one, so only
                # the packets that cannot be stored are refused (their devices send again).
                await self._write_one_by_one(batch)
            else:
                for pending in batch:
                    _settle(pending, None)

    async def _write_one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            try:
                await self._write([pending])
            except Exception as error:  # this packet cannot be stored: its sender is told
                log.exception(
                    "storing %d messages of %s failed", len(pending.messages), pending.device_id
                )
                _settle(pending, error)
            else:
                _settle(pending, None)

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        count = len(batch[0].messages)
        while count < self._max_batch and not self._queue.empty():
            pending = self._queue.get_nowait()
            batch.append(pending)
            count += len(pending.messages)
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        """Stores the batch and runs each domain's step on it, in one transaction."""
        by_device: dict[str, list[Message]] = {}
        for pending in batch:
            by_device.setdefault(pending.device_id, []).extend(pending.messages)
        device_ids = list(by_device)
        async with writer_session(self._sessions, urgent=True) as session:
            rules = await self._rules.rules_of(session, device_ids)
            states = await device_states.current_states(session, device_ids)
            device_states.apply_validity(by_device, states, rules, utcnow())
            seqs = await devices.seqs_of(session, by_device)
            runner = self._step_runner
            with_steps = runner is not None and bool(runner.steps)
            hand_over = runner.hand_over if with_steps and runner is not None else None
            rows, stored = _rows(by_device, seqs, hand_over)
            await messages.insert_rows(session, rows)
            await message_columns.note_stored(session, _stored_batches(by_device, states, seqs))
            changed = await device_states.advance_states(session, by_device, states, rules)
            new: dict[str, NewMessages | NewRows] = {}
            if with_steps:
                await steps.record_late(session, _late_data(by_device, states))
            if hand_over is not None:
                new = _new_messages(by_device, stored, states, changed, hand_over)
            owners: dict[str, Audience] = {}
            if self._events.subscribers:
                # Read last, in the transaction that stored the messages: whose events they are.
                owners = await devices.owners_of(session, device_ids)
        self._announce(changed, owners)
        if self._step_runner is not None:
            self._step_runner.notify(device_ids, new)

    def _announce(self, changed: list[dict[str, Any]], owners: dict[str, Audience]) -> None:
        """Tells live subscribers; the batch is committed, so a failure here is only logged."""
        if not self._events.subscribers:
            return
        try:
            for state in changed:
                owner = owners.get(state["device_id"])
                if owner is not None:
                    self._events.publish(device_states.state_changed(state), owner)
        except Exception:
            log.exception("announcing %d state changes failed", len(changed))


def _rows(
    by_device: dict[str, list[Message]], seqs: dict[str, int], hand_over: HandOver
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The batch's rows, in the order the devices sent them, and what the steps are handed of
    each message (`hand_over`), by device in the order of `by_device`: the message as it reads
    back (`messages.stored_form`, made from the same work), or its row."""
    rows: list[dict[str, Any]] = []
    stored: dict[str, list[Any]] = {}
    for device_id, batch in by_device.items():
        seq = seqs[device_id]
        if hand_over != "messages":
            first = len(rows)
            rows += [messages.to_row(seq, message) for message in batch]
            if hand_over == "rows":
                stored[device_id] = rows[first:]
            continue
        stored[device_id] = forms = []
        for message in batch:
            row, form = messages.to_row_and_stored(seq, message)
            rows.append(row)
            forms.append(form)
    return rows, stored


def _stored_batches(
    by_device: dict[str, list[Message]],
    states: dict[str, dict[str, Any]],
    seqs: dict[str, int],
) -> list[message_columns.StoredBatch]:
    batches = []
    for device_id, batch in by_device.items():
        state = states.get(device_id)
        newest = None if state is None else state["last_message_at"]
        batches.append(message_columns.StoredBatch(seqs[device_id], batch, newest))
    return batches


def _late_data(
    by_device: dict[str, list[Message]], states: dict[str, dict[str, Any]]
) -> dict[str, datetime]:
    """Devices whose batch holds messages not newer than the newest their state had taken
    in (a black box, a resend): the oldest such time of each. Steps are only ever as far as
    that newest time, so anything newer reaches them in order anyway."""
    late = {}
    for device_id, batch in by_device.items():
        state = states.get(device_id)
        newest = None if state is None else state["last_message_at"]
        if newest is not None:
            oldest = min(message.device_time for message in batch)
            if oldest <= newest:
                late[device_id] = oldest
    return late


def _new_messages(
    by_device: dict[str, list[Message]],
    stored: dict[str, list[Any]],
    states: dict[str, dict[str, Any]],
    changed: list[dict[str, Any]],
    hand_over: HandOver,
) -> dict[str, NewMessages | NewRows]:
    """For each device whose live state moved, the valid messages it moved over, as they are
    stored (`_rows`' forms or rows): every valid message of the device in (newest before,
    newest after] is in this batch (any earlier one is at or before the newest before). Of two
    with the same time the first one of the batch is stored, as here."""
    new: dict[str, NewMessages | NewRows] = {}
    for state in changed:
        device_id, until = state["device_id"], state["last_message_at"]
        before = states.get(device_id)
        after = None if before is None else before["last_message_at"]
        if hand_over == "rows":
            new[device_id] = _new_rows(stored[device_id], after, until)
            continue
        span: dict[datetime, Message] = {}
        for message in stored[device_id]:
            at = message.device_time
            if (after is None or at > after) and at <= until and at not in span:
                span[at] = message
        if all(a < b for a, b in itertools.pairwise(span)):  # the usual: sent in order
            kept = [m for m in span.values() if not m.filtered]
        else:
            kept = [m for at, m in sorted(span.items()) if not m.filtered]
        new[device_id] = NewMessages(after, until, kept)
    return new


def _new_rows(rows: list[dict[str, Any]], after: datetime | None, until: datetime) -> NewRows:
    """`_new_messages` of one device's rows, with the filtered ones (they are told apart once
    decoded): a check per row in the usual case, all of them in order and in the span."""
    times = [row["device_time"] for row in rows]
    if not (
        (after is None or times[0] > after)
        and times[-1] <= until
        and all(a < b for a, b in itertools.pairwise(times))
    ):
        span: dict[datetime, dict[str, Any]] = {}
        for row in rows:
            at = row["device_time"]
            if (after is None or at > after) and at <= until and at not in span:
                span[at] = row
        times = sorted(span)
        rows = [span[at] for at in times]
    return NewRows(
        after,
        until,
        [time_us(at) for at in times],
        [row["lat_e7"] for row in rows],
        [row["lon_e7"] for row in rows],
        [row["packed"] for row in rows],
    )


def _settle(pending: _Pending, error: Exception | None) -> None:
    if pending.stored.done():
        return  # its sender gave up waiting (the connection closed)
    if error is None:
        pending.stored.set_result(None)
    else:
        pending.stored.set_exception(error)
