"""The pipeline steps in a process of their own, beside the process that takes in device data.

The steps are work in Python: run in the intake's process they share its one interpreter lock,
and every moment a round of steps computes is a moment no device is answered (measured in
docs/benchmarks.md, "The pipeline steps in a process of their own"). So the server starts a
child process (`python -m fleetplane.step_worker`) that runs the same `StepRunner` on an
engine of its own, and the two talk over a socket pair:

- the server says which devices have newly stored messages, with the rows it just wrote of
  them (`NewRows`: the child decodes them as it would read back from storage, and reads back
  only what it was not sent, as after a restart);
- the child sends back the change notices its steps raise (the device counters, say), and the
  server delivers them to its own hub: its live cache and event streams learn of them as of a
  change made in the server itself;
- on SQLite, whose one writer lock both processes need, the child's writers take the server's
  writer turns (`core.db`): it asks for a turn before its transaction's first write and gives
  it back at the end, so the intake goes first and never waits in SQLite's busy handler behind
  the steps. PostgreSQL has row locks: no turns.

Nothing the child does lives only in its memory (the steps' progress is in the database), so
when it exits it is started again after a pause, and it picks up from the marks. When the
server goes, the socket closes and the child stops.
"""

import asyncio
import contextlib
import gc
import logging
import pickle
import socket
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fleetplane.config import Settings
from fleetplane.core.changes import Change, ChangeHub
from fleetplane.core.db import (
    Turns,
    create_system_engine,
    session_factory,
    use_writer_turns,
)
from fleetplane.steps.contract import HandOver, NewMessages, NewRows, Step
from fleetplane.steps.runner import StepRunner

log = logging.getLogger("fleetplane.steps")

# A frame: its length (4 bytes, big-endian), then a pickled tuple whose first item names it.
_LENGTH = struct.Struct(">I")
# The largest frame either side accepts: a notice, or the rows of MAX_WAITING_ROWS
# messages, is far smaller.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# The new messages' rows waiting to be sent, over all devices; beyond it they are dropped, and
# the child reads those messages back (as the runner does with its own bound).
MAX_WAITING_ROWS = 200_000
# How long a stopping server waits for the child before it kills it.
STOP_SECONDS = 10.0
# The pause before a child that exited is started again, doubled while it keeps exiting soon
# after its start, up to the longest.
RESTART_SECONDS = 1.0
RESTART_MAX_SECONDS = 60.0


class _Link:
    """Frames both ways over one end of the socket pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def send(self, *frame: Any) -> None:
        body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_LENGTH.pack(len(body)) + body)

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> tuple[Any, ...] | None:
        """The next frame; None once the other side has gone."""
        try:
            (length,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
            if length > MAX_FRAME_BYTES:
                raise ValueError(f"a frame of {length} bytes")
            frame: tuple[Any, ...] = pickle.loads(await self._reader.readexactly(length))
            return frame
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def close(self) -> None:
        self._writer.close()


class StepProcess:
    """The server's side: starts and watches the child, tells it of new messages, grants it
    writer turns and delivers its change notices. Stands where an in-process `StepRunner`
    would (`ingest.pipeline.StepNotifier`)."""

    # The intake hands over the rows it wrote: cheaper for it than messages, to make and to
    # send, and the child need not read them back.
    hand_over: HandOver = "rows"

    def __init__(
        self,
        settings: Settings,
        step_names: Sequence[str],
        changes: ChangeHub,
        turns: Turns | None,
    ) -> None:
        self._settings = settings
        self.steps = list(step_names)
        self._changes = changes
        self._turns = turns  # the server's writer turns on SQLite; None on PostgreSQL
        self._waiting: set[str] = set()
        self._waiting_rows: dict[str, NewRows] = {}
        self._waiting_row_count = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0  # children started so far (the first, then each restart)

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return None if self._process is None else self._process.pid

    def notify(
        self,
        device_ids: Iterable[str],
        new: Mapping[str, NewMessages | NewRows] | None = None,
    ) -> None:
        """New messages of these devices are committed; `new`: their rows, sent on with them
        (what the intake hands over as messages, `NewMessages`, is not: the child reads)."""
        if self.steps:
            self._waiting.update(device_ids)
            if new:
                self._keep_rows(new)
            self._wake.set()

    def _keep_rows(self, new: Mapping[str, NewMessages | NewRows]) -> None:
        """Adds each device's new rows to those waiting to be sent: after them when they follow
        on, else instead of them (the child reads the gap back)."""
        waiting = self._waiting_rows
        for device_id, news in new.items():
            if not isinstance(news, NewRows):
                continue
            kept = waiting.get(device_id)
            if kept is not None and kept.until == news.after:
                waiting[device_id] = kept.extend(news)
            else:
                if kept is not None:
                    self._waiting_row_count -= len(kept)
                waiting[device_id] = news
            self._waiting_row_count += len(news)
        if self._waiting_row_count > MAX_WAITING_ROWS:
            waiting.clear()
            self._waiting_row_count = 0

    def start(self) -> None:
        if self.steps and self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="pipeline-steps-process")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run_forever(self) -> None:
        pause = RESTART_SECONDS
        while True:
            started = time.monotonic()
            try:
                code = await self._run_child()
                log.error("the pipeline steps' process exited (code %s)", code)
            except Exception:
                log.exception("the pipeline steps' process failed")
            if time.monotonic() - started > RESTART_MAX_SECONDS:
                pause = RESTART_SECONDS  # it had run a while: a new failure, not the same one
            log.error("starting the pipeline steps' process again in %.0f s", pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX_SECONDS)

    async def _run_child(self) -> int | None:
        """Runs one child to its end; its exit code."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleetplane.step_worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._process = process
        self.starts += 1
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        link = _Link(reader, writer)
        link.send("start", self._settings.model_dump_json(), self.steps)
        self._wake.set()  # whatever waited while no child ran
        sender = asyncio.create_task(self._send_waiting(link), name="pipeline-steps-notices")
        turns = _TurnsGranted(self._turns, link)
        try:
            await self._serve(link, turns)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            turns.give_all_back()
            link.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            if process.returncode is None:
                log.error("the pipeline steps' process did not stop: killed")
                process.kill()
                await process.wait()
            self._process = None
        return process.returncode

    async def _send_waiting(self, link: _Link) -> None:
        # The waiting devices go over as one set: however often the intake commits, what waits
        # is at most every device once.
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._waiting:
                device_ids, self._waiting = self._waiting, set()
                rows, self._waiting_rows = self._waiting_rows, {}
                self._waiting_row_count = 0
                link.send("devices", list(device_ids), _wire(rows))
                await link.drain()

    async def _serve(self, link: _Link, turns: "_TurnsGranted") -> None:
        while (frame := await link.receive()) is not None:
            kind = frame[0]
            if kind == "changes":
                self._changes.deliver(frame[1])
            elif kind == "turn":
                turns.asked()
            elif kind == "done":
                turns.given_back()
            else:
                log.error("the pipeline steps' process sent an unknown %r", kind)


# A device's `NewRows` over the link: its fields (a dataclass instance pickles at several times
# the cost, per device in every frame).
_WireRows = tuple[
    datetime | None, datetime, list[int], list[int | None], list[int | None], list[bytes]
]


def _wire(rows: Mapping[str, NewRows]) -> dict[str, _WireRows]:
    return {
        device_id: (new.after, new.until, new.times_us, new.lat_e7, new.lon_e7, new.packed)
        for device_id, new in rows.items()
    }


def _unwired(rows: Mapping[str, _WireRows]) -> dict[str, NewRows]:
    return {device_id: NewRows(*fields) for device_id, fields in rows.items()}


class _TurnsGranted:
    """The server's writer turns as the child takes them: each turn it asks for is waited for
    (after the intake's, `urgent`) and granted; at the child's end, the ones it held go back."""

    def __init__(self, turns: Turns | None, link: _Link) -> None:
        self._turns = turns
        self._link = link
        self._held = 0
        self._asking: set[asyncio.Task[None]] = set()

    def asked(self) -> None:
        task = asyncio.create_task(self._grant())
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _grant(self) -> None:
        if self._turns is not None:
            await self._turns.take(urgent=False)
            self._held += 1
        self._link.send("granted")

    def given_back(self) -> None:
        if self._turns is not None and self._held:
            self._held -= 1
            self._turns.give_back()

    def give_all_back(self) -> None:
        for task in self._asking:
            task.cancel()  # a turn handed over just as it is cancelled is passed on (core.db)
        while self._held:
            self.given_back()


class _RemoteTurns:
    """The child's writers' turns: each is the server's, asked for over the link. One at a
    time: the child's writers wait here for each other first."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._lock = asyncio.Lock()
        self._grant: asyncio.Future[None] | None = None
        self._abandoned = 0  # asked for, then no longer wanted: given back when granted

    async def take(self, *, urgent: bool) -> None:
        await self._lock.acquire()
        self._grant = asyncio.get_running_loop().create_future()
        self._link.send("turn")
        try:
            await self._grant
        except BaseException:
            if self._grant.done() and not self._grant.cancelled():
                self._link.send("done")
            else:
                self._abandoned += 1
            self._lock.release()
            raise
        # A full garbage collection of this process takes over 100 ms: not while the intake
        # waits for the turn (measured: one such pause in a turn in most benchmark runs).
        gc.disable()

    def granted(self) -> None:
        if self._abandoned:
            self._abandoned -= 1
            self._link.send("done")
        elif self._grant is not None and not self._grant.done():
            self._grant.set_result(None)

    def give_back(self) -> None:
        self._link.send("done")
        gc.enable()
        self._lock.release()


class _ForwardingHub(ChangeHub):
    """The child's notices go to the server, whose hub delivers them."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link

    def deliver(self, changes: Iterable[Change]) -> None:
        changes = list(changes)
        if changes:
            self._link.send("changes", changes)


async def run_child(fd: int, registered: Sequence[Step]) -> None:
    """The child (`fleetplane.step_worker`): runs the steps the server names, of `registered`,
    until the server closes the link on `fd`."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    link = _Link(reader, writer)
    start = await link.receive()
    if start is None or start[0] != "start":
        return
    settings = Settings.model_validate_json(start[1])
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    by_name = {step.name: step for step in registered}
    steps = [by_name[name] for name in start[2]]
    engine = create_system_engine(settings, pool_size=2)
    turns = None
    if not settings.is_postgres:
        turns = _RemoteTurns(link)
        use_writer_turns(engine, turns)
    runner = StepRunner(
        session_factory(engine, _ForwardingHub(link)),
        steps,
        retry_seconds=settings.step_retry_seconds,
        retry_max_seconds=settings.step_retry_max_seconds,
        poll_seconds=settings.step_poll_seconds,
        interval_seconds=settings.step_interval_seconds,
    )
    runner.start()
    try:
        while (frame := await link.receive()) is not None:
            if frame[0] == "devices":
                runner.notify(frame[1], _unwired(frame[2]))
            elif frame[0] == "granted" and turns is not None:
                turns.granted()
    finally:
        await runner.stop()
        await engine.dispose()
