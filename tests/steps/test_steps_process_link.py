"""The link between the server and its steps process, over a real socket pair: writer turns
granted in the intake's order, given back however the child's writer ends, and change notices
delivered to the server's hub."""

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from fleetplane.config import Settings
from fleetplane.core.changes import Change, ChangeHub
from fleetplane.core.db import WriterTurns
from fleetplane.messages.columns import time_us
from fleetplane.steps import process as steps_process
from fleetplane.steps.contract import NewRows
from fleetplane.steps.process import (
    StepProcess,
    _ForwardingHub,
    _Link,
    _RemoteTurns,
    _TurnsGranted,
    _unwired,
)


@dataclass
class Ends:
    server_turns: WriterTurns  # the server's own turns (its intake takes them urgently)
    server_hub: ChangeHub
    child_link: _Link
    child_turns: _RemoteTurns
    granted: _TurnsGranted


async def _child_reads(link: _Link, turns: _RemoteTurns) -> None:
    while (frame := await link.receive()) is not None:
        if frame[0] == "granted":
            turns.granted()


@asynccontextmanager
async def linked() -> AsyncIterator[Ends]:
    ours, theirs = socket.socketpair()
    server_link = _Link(*await asyncio.open_unix_connection(sock=ours))
    child_link = _Link(*await asyncio.open_unix_connection(sock=theirs))
    turns, hub = WriterTurns(), ChangeHub()
    process = StepProcess(Settings(), ["a_step"], hub, turns)
    granted = _TurnsGranted(turns, server_link)
    child_turns = _RemoteTurns(child_link)
    serving = asyncio.create_task(process._serve(server_link, granted))
    reading = asyncio.create_task(_child_reads(child_link, child_turns))
    try:
        yield Ends(turns, hub, child_link, child_turns, granted)
    finally:
        child_link.close()
        await asyncio.wait_for(serving, 5)  # the server sees the child go
        granted.give_all_back()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        server_link.close()
        gc.enable()  # a child's turn still held keeps its collector off: this is no child


async def turn_is_free(turns: WriterTurns) -> bool:
    """Whether an urgent writer gets the turn at once (then gives it back)."""
    try:
        await asyncio.wait_for(turns.take(urgent=True), 0.5)
    except TimeoutError:
        return False
    turns.give_back()
    return True


def test_the_child_waits_for_the_intake_and_gives_the_turn_back() -> None:
    async def scenario() -> None:
        async with linked() as ends:
            await ends.server_turns.take(urgent=True)  # the intake is writing
            child = asyncio.create_task(ends.child_turns.take(urgent=False))
            await asyncio.sleep(0.2)
            assert not child.done(), "the child's write went ahead of the intake's"
            ends.server_turns.give_back()
            await asyncio.wait_for(child, 5)
            assert not await turn_is_free(ends.server_turns), "the child holds the turn"
            ends.child_turns.give_back()
            await asyncio.sleep(0.1)
            assert await turn_is_free(ends.server_turns)

    asyncio.run(scenario())


def test_a_turn_given_up_while_waiting_goes_back_once_granted() -> None:
    async def scenario() -> None:
        async with linked() as ends:
            await ends.server_turns.take(urgent=True)
            child = asyncio.create_task(ends.child_turns.take(urgent=False))
            await asyncio.sleep(0.1)
            child.cancel()  # the child's writer is cancelled while it waits
            with pytest.raises(asyncio.CancelledError):
                await child
            ends.server_turns.give_back()  # now the server grants it; nobody wants it
            await asyncio.sleep(0.2)
            assert await turn_is_free(ends.server_turns)
            # And the child's next writer gets its own turn.
            await asyncio.wait_for(ends.child_turns.take(urgent=False), 5)
            ends.child_turns.give_back()
            await asyncio.sleep(0.1)
            assert await turn_is_free(ends.server_turns)

    asyncio.run(scenario())


def test_a_child_that_goes_while_holding_a_turn_gives_it_back() -> None:
    async def scenario() -> None:
        async with linked() as ends:
            await asyncio.wait_for(ends.child_turns.take(urgent=False), 5)
            assert not await turn_is_free(ends.server_turns)
        assert await turn_is_free(ends.server_turns)

    asyncio.run(scenario())


def test_the_childs_notices_reach_the_servers_hub() -> None:
    async def scenario() -> None:
        async with linked() as ends:
            seen: list[Change] = []
            ends.server_hub.subscribe(("device_counters",), seen.append)
            change = Change("device_counters", ("dev_1",), "prv_1", ("cus_1",), ("dev_1",))
            _ForwardingHub(ends.child_link).deliver([change])
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert seen == [change]

    asyncio.run(scenario())


T = [datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=n) for n in range(8)]


def new_rows(after: datetime | None, until: datetime, times: list[datetime]) -> NewRows:
    count = len(times)
    packed = [bytes([0, n]) for n in range(count)]
    return NewRows(after, until, [time_us(at) for at in times], [1] * count, [2] * count, packed)


async def frames_sent(process: StepProcess) -> list[tuple[object, ...]]:
    """What the server's side sends to the child, over a real socket pair, for the devices
    and rows waiting now."""
    ours, theirs = socket.socketpair()
    server_link = _Link(*await asyncio.open_unix_connection(sock=ours))
    child_link = _Link(*await asyncio.open_unix_connection(sock=theirs))
    sender = asyncio.create_task(process._send_waiting(server_link))
    try:
        frame = await asyncio.wait_for(child_link.receive(), 5)
        assert frame is not None
        return [frame]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        server_link.close()
        child_link.close()


def test_the_rows_the_intake_wrote_go_over_with_their_devices() -> None:
    async def scenario() -> None:
        process = StepProcess(Settings(), ["a_step"], ChangeHub(), None)
        process.notify(
            ["d1", "d2"],
            {"d1": new_rows(None, T[1], T[:2]), "d2": new_rows(T[0], T[1], T[1:2])},
        )
        # d1's next rows follow on from its first; d2's leave a gap (read back by the child).
        process.notify(
            ["d1", "d2", "d3"],
            {"d1": new_rows(T[1], T[3], T[2:4]), "d2": new_rows(T[2], T[3], T[3:4])},
        )
        [frame] = await frames_sent(process)
        assert frame[0] == "devices"
        assert sorted(frame[1]) == ["d1", "d2", "d3"]  # type: ignore[call-overload]
        sent = _unwired(frame[2])  # type: ignore[arg-type]
        first, second = new_rows(None, T[1], T[:2]), new_rows(T[1], T[3], T[2:4])
        assert sent["d1"] == NewRows(
            None,
            T[3],
            first.times_us + second.times_us,
            [1] * 4,
            [2] * 4,
            first.packed + second.packed,
        )
        assert sent["d2"] == new_rows(T[2], T[3], T[3:4])
        assert "d3" not in sent  # nothing handed over: the child reads

    asyncio.run(scenario())


def test_rows_beyond_the_bound_are_dropped_and_their_devices_still_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps_process, "MAX_WAITING_ROWS", 3)

    async def scenario() -> None:
        process = StepProcess(Settings(), ["a_step"], ChangeHub(), None)
        process.notify(["d1"], {"d1": new_rows(None, T[1], T[:2])})
        process.notify(["d2"], {"d2": new_rows(None, T[1], T[:2])})
        [frame] = await frames_sent(process)
        assert sorted(frame[1]) == ["d1", "d2"]  # type: ignore[call-overload]
        assert frame[2] == {}
        # The count starts again: what comes next goes over.
        process.notify(["d1"], {"d1": new_rows(T[1], T[2], T[2:3])})
        [frame] = await frames_sent(process)
        assert _unwired(frame[2]) == {"d1": new_rows(T[1], T[2], T[2:3])}  # type: ignore[arg-type]

    asyncio.run(scenario())
