"""One simulated tracker: a Wialon IPS 2.0 device on a real TCP connection.

It behaves as real trackers do. Reports become due on a fixed real-time schedule and go into
the device's memory; while online, the memory is sent and a report is deleted only once the
server has answered it: one waiting report as `#D#`, several (after an outage, or when sending
fell behind) as `#B#` black boxes of up to 5,000. The tracker waits for each answer before
the next packet. A lost connection or a missing answer keeps the reports for the next
connection, so the server may see a report again when only its answer was lost (the platform
counts that as a duplicate). Coverage losses are simulated: the tracker hangs up, keeps
recording for a while, then reconnects and sends the backlog. When the server cannot be
reached or refuses the login, it retries with exponential back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from fleetplane.simulator.encoding import (
    MAX_BLACK_BOX,
    Answer,
    encode_black_box,
    encode_data,
    encode_login,
    parse_answer,
)
from fleetplane.simulator.route import Fix
from fleetplane.simulator.stats import TrackerCounters

LOGIN_REFUSALS = {
    "0": "login refused (unknown device, bad version or structure)",
    "01": "login refused: wrong password",
    "10": "login refused: CRC error",
}


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    host: str
    port: int
    imei: str
    password: str | None = None
    send_interval: float = 1.0  # real seconds between reports
    first_report_delay: float = 0.0  # staggers devices so the total rate is even
    disconnect_probability: float = 0.0  # after each answered packet
    offline_reports: tuple[int, int] = (5, 30)  # reports recorded during a coverage loss
    answer_timeout: float = 10.0
    connect_timeout: float = 5.0
    backoff: tuple[float, float] = (0.5, 30.0)  # first and longest wait before reconnecting
    max_black_box: int = MAX_BLACK_BOX
    memory: int = 100_000  # reports the device can hold; the oldest go first


class ProtocolError(Exception):
    """The server answered something a device cannot make sense of."""


class LoginRefused(Exception):
    """The server answered the login with anything but `#AL#1`."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Tracker:
    """Run with `await tracker.run()` until `stop` is set (or the task is cancelled).

    After `stop` the exchange in progress is finished, so no answer is left unread.
    """

    _CONNECTION_ERRORS: ClassVar = (OSError, TimeoutError, EOFError, ProtocolError, ValueError)

    def __init__(
        self,
        settings: TrackerSettings,
        reports: Iterator[Fix],
        rng: random.Random,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.counters = TrackerCounters()
        self._reports = reports
        self._rng = rng
        self._stop = stop
        self._memory: deque[Fix] = deque()
        self._connection: _Connection | None = None
        self._offline_left = 0  # reports still to record before reconnecting
        self._backoff = settings.backoff[0]
        self._next_connect = 0.0
        self._next_due = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_due = loop.time() + self.settings.first_report_delay
        try:
            while not self._stop.is_set():
                await self._sleep_until(self._next_due)
                if self._stop.is_set():
                    break
                self._record_due_reports(loop.time())
                if self._connection is None and self._may_connect(loop.time()):
                    await self._connect()
                if self._connection is not None:
                    await self._send_memory()
        finally:
            await self._hang_up()

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - asyncio.get_running_loop().time()
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    def _record_due_reports(self, now: float) -> None:
        while self._next_due <= now:
            self._memory.append(next(self._reports))
            self._next_due += self.settings.send_interval
            self._offline_left = max(0, self._offline_left - 1)
            if len(self._memory) > self.settings.memory:
                self._memory.popleft()
                self.counters.dropped += 1
        self.counters.buffered = len(self._memory)

    def _may_connect(self, now: float) -> bool:
        return self._offline_left == 0 and now >= self._next_connect

    # -- connection ------------------------------------------------------------------------

    async def _connect(self) -> None:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout):
                reader, writer = await asyncio.open_connection(settings.host, settings.port)
        except (OSError, TimeoutError) as error:
            self._failed(f"cannot connect to {settings.host}:{settings.port}: {_describe(error)}")
            return
        self._connection = _Connection(reader, writer)
        try:
            await self._log_in()
        except LoginRefused as refusal:
            self.counters.login_refusals += 1
            await self._give_up(str(refusal))
            return
        except self._CONNECTION_ERRORS as error:
            await self._give_up(f"login: {_describe(error)}")
            return
        self.counters.logins += 1
        self.counters.connected = True
        self._backoff = settings.backoff[0]

    async def _log_in(self) -> None:
        login = encode_login(self.settings.imei, self.settings.password)
        answer = await self._exchange(login, "AL")
        if answer.value != "1":
            reason = LOGIN_REFUSALS.get(answer.value, f"login answered #AL#{answer.value}")
            raise LoginRefused(f"{self.settings.imei}: {reason}")

    async def _give_up(self, reason: str) -> None:
        """Closes the connection after a failure and waits before the next attempt."""
        await self._hang_up()
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = reason
        self.counters.last_error_at = asyncio.get_running_loop().time()
        # Jitter keeps devices that failed together from all coming back at the same moment.
        wait = self._backoff * self._rng.uniform(0.8, 1.2)
        self._next_connect = asyncio.get_running_loop().time() + wait
        self._backoff = min(self.settings.backoff[1], self._backoff * 2)

    async def _hang_up(self) -> None:
        connection, self._connection = self._connection, None
        self.counters.connected = False
        if connection is None:
            return
        connection.writer.close()
        with contextlib.suppress(OSError, EOFError):  # the peer went first: closed either way
            await connection.writer.wait_closed()

    # -- sending -----------------------------------------------------------------------------

    async def _send_memory(self) -> None:
        """Sends what the device holds, oldest first, until it is empty or the link is lost."""
        while self._memory and self._connection is not None:
            batch = list(itertools.islice(self._memory, self.settings.max_black_box))
            try:
                await self._send(batch)
            except self._CONNECTION_ERRORS as error:
                await self._give_up(f"{self.settings.imei}: {_describe(error)}")
                return
            for _ in batch:
                self._memory.popleft()
            self.counters.buffered = len(self._memory)
            if self._stop.is_set():
                return
            if self._rng.random() < self.settings.disconnect_probability:
                await self._lose_coverage()

    async def _send(self, batch: list[Fix]) -> None:
        counters = self.counters
        counters.sent += len(batch)
        if len(batch) == 1:
            answer = await self._exchange(encode_data(batch[0]), "AD")
            stored = 1 if answer.value == "1" else 0
        else:
            answer = await self._exchange(encode_black_box(batch), "AB")
            counters.black_boxes += 1
            stored = min(len(batch), answer.number or 0)  # `#AB#` alone: CRC error
        counters.acked += stored
        if stored < len(batch):
            # A device deletes refused messages too: sending them again would not help.
            counters.rejected += len(batch) - stored
            counters.last_error = f"{self.settings.imei}: answered #{answer.kind}#{answer.value}"
            counters.last_error_at = asyncio.get_running_loop().time()

    async def _lose_coverage(self) -> None:
        self.counters.disconnects += 1
        self._offline_left = self._rng.randint(*self.settings.offline_reports)
        await self._hang_up()

    async def _exchange(self, packet: bytes, answer_kind: str) -> Answer:
        """Writes a packet and reads lines until its answer, timing the round trip."""
        connection = self._connection
        assert connection is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(self.settings.answer_timeout):
            connection.writer.write(packet)
            await connection.writer.drain()
            while True:
                line = await connection.reader.readline()
                if not line.endswith(b"\n"):
                    raise EOFError("the server closed the connection")
                answer = parse_answer(line)
                if answer is None:
                    raise ProtocolError(f"not a Wialon IPS answer: {line[:40]!r}")
                if answer.kind == answer_kind:
                    break
                # A server command (a driver message, a photo request, ...) came first.
                self.counters.commands += 1
        self.counters.latency.add(loop.time() - started)
        return answer


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__
