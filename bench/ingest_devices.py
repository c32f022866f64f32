"""Simulated Wialon IPS 2.0 trackers for `fleetplane bench ingest`, run in load processes.

A load process holds one TCP connection per device on one event loop. Each device logs in once,
then sends a mix of packets (80% single `#D#`, 20% `#B#` black boxes of 10-50 messages), waits
for each answer before the next packet, as real trackers do, and checks it: `#AD#1`, or `#AB#n`
with n the number of messages sent. Anything else counts as an error and is kept as a sample.

Device times advance one second per message on every device's own clock, so no message
duplicates another and the server stores every one it acknowledges. The fields other than the
time come from the project's route simulator: a few vehicle routes are built once per process
and each device drives one of them from its own offset, so a message costs a few microseconds
to make and the load processes leave the CPUs to the server.

The process is driven by its parent through a pipe: it answers ("ready", PhaseResult) once its
devices are logged in, then runs each PhaseOrder it receives, sending ("progress", acked) a few
times a second and ("done", PhaseResult) at the end, until it receives "stop".
"""

import asyncio
import random
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.simulator.encoding import encode_login, extended_body
from fleetplane.simulator.route import vehicle_fixes
from fleetplane.simulator.stats import LatencyHistogram

SINGLE_SHARE = 0.8  # of packets: one `#D#`; the others are black boxes
BLACK_BOX_SIZES = (10, 50)  # messages in one `#B#`, both ends included
ANSWER_TIMEOUT_SECONDS = 30.0  # batches take seconds under heavy load; later counts as lost
CONNECT_TIMEOUT_SECONDS = 10.0
# The listener's accept backlog is 100: connecting everything at once would overflow it and
# cost seconds of SYN retries.
PARALLEL_CONNECTS = 20
PROGRESS_SECONDS = 0.25
MAX_ERROR_SAMPLES = 5
ROUTE_VEHICLES = 8
ROUTE_FIXES = 512  # per vehicle, one a second; a device starts over at the end of its route
ROUTE_START = datetime(2026, 1, 5, 6, tzinfo=UTC)  # a weekday morning: the vehicles drive
# Device n drives route n % ROUTE_VEHICLES from fix n * ROUTE_STRIDE (a prime), so devices on
# the same route are not in step.
ROUTE_STRIDE = 97
LOGIN_ACCEPTED = b"#AL#1\r\n"
SINGLE_ACCEPTED = b"#AD#1\r\n"


@dataclass(frozen=True)
class LoadPlan:
    """What one load process simulates."""

    host: str
    port: int
    imeis: tuple[str, ...]
    first_device: int  # the number of its first device among all: picks routes and offsets
    clock_start: int  # Unix time of every device's first message
    seed: int


@dataclass(frozen=True)
class PhaseOrder:
    """One phase, the same for every load process."""

    rate: float | None  # messages per second from this process; None: flat out
    start_at: float  # time.time() when every process starts sending
    warmup_seconds: float  # sent and checked, but not measured
    seconds: float  # the measured window, right after the warm-up

    @property
    def window(self) -> tuple[float, float]:
        begin = self.start_at + self.warmup_seconds
        return begin, begin + self.seconds


@dataclass
class PhaseResult:
    """What the devices of one load process saw during one phase (or while logging in)."""

    messages: int = 0  # acknowledged, of packets sent inside the measured window
    packets: int = 0  # answered packets sent inside the window
    acked: int = 0  # every message acknowledged, warm-up included
    unanswered: int = 0  # messages whose packet got no answer: stored or not, nobody knows
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(text)


class DeviceLost(Exception):
    """The connection failed or an answer did not come: the device reconnects."""


def run_load_process(plan: LoadPlan, control: Connection) -> None:
    """The load process's main function."""
    # Ctrl-C reaches the whole process group; the parent handles it and ends this process
    # with SIGTERM, whose handler the fork copied from the parent: back to the default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _event_loop_runner()(_serve(plan, control))


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop when installed (the server uses it too): the load then costs less CPU."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _serve(plan: LoadPlan, control: Connection) -> None:
    routes = vehicle_routes(plan.seed)
    devices = [
        SimulatedDevice(imei, routes[device % len(routes)], device * ROUTE_STRIDE, plan.clock_start)
        for device, imei in enumerate(plan.imeis, start=plan.first_device)
    ]
    login = PhaseResult()
    connects = asyncio.Semaphore(PARALLEL_CONNECTS)
    await asyncio.gather(*(_connect(device, plan, connects, login) for device in devices))
    control.send(("ready", login))
    rng = random.Random(plan.seed)
    while (order := await asyncio.to_thread(control.recv)) != "stop":
        control.send(("done", await _run_phase(devices, order, rng, control)))
    for device in devices:
        device.close()


async def _connect(
    device: "SimulatedDevice", plan: LoadPlan, connects: asyncio.Semaphore, result: PhaseResult
) -> None:
    async with connects:
        try:
            await device.connect(plan.host, plan.port)
        except DeviceLost as lost:
            result.error(f"{device.imei}: {lost}")


# --- phases -------------------------------------------------------------------------------


async def _run_phase(
    devices: list["SimulatedDevice"], order: PhaseOrder, rng: random.Random, control: Connection
) -> PhaseResult:
    result = PhaseResult()
    reporter = asyncio.create_task(_report_progress(result, control))
    try:
        if order.rate is None:
            await asyncio.gather(*(_flat_out(device, order, rng, result) for device in devices))
        else:
            await _paced(devices, order, order.rate, rng, result)
    finally:
        reporter.cancel()
    return result


async def _report_progress(result: PhaseResult, control: Connection) -> None:
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        control.send(("progress", result.acked))


async def _paced(
    devices: list["SimulatedDevice"],
    order: PhaseOrder,
    rate: float,
    rng: random.Random,
    result: PhaseResult,
) -> None:
    """Packets leave on one schedule for the whole process, each from the device that has
    been idle longest; a device is busy until its answer comes. One schedule, not one per
    device, keeps the rate even: per device, a black box of 50 would leave a gap of seconds.
    When every device waits for an answer the schedule slips and then catches up, so an
    unreachable rate shows as a lower achieved rate."""
    loop = asyncio.get_running_loop()
    start, window_begin, window_end = _loop_times(loop, order)
    idle: asyncio.Queue[SimulatedDevice] = asyncio.Queue()
    for device in devices:
        idle.put_nowait(device)
    sending: set[asyncio.Task[None]] = set()
    due = start
    while due < window_end:
        await _sleep_until(loop, due)
        device = await idle.get()
        sent_at = loop.time()
        if sent_at >= window_end:
            break
        count = _packet_size(rng)
        task = asyncio.create_task(
            _send_and_release(device, count, result, window_begin <= sent_at, idle)
        )
        sending.add(task)
        task.add_done_callback(sending.discard)
        due += count / rate
    await asyncio.gather(*sending)


async def _send_and_release(
    device: "SimulatedDevice",
    count: int,
    result: PhaseResult,
    measured: bool,
    idle: "asyncio.Queue[SimulatedDevice]",
) -> None:
    if device.connected or await _reconnect(device, result):
        await _send_one(device, count, result, measured)
    # Back in line even after a failed reconnect (the next turn tries again, and counts another
    # error): with no device left in line the schedule would wait forever.
    idle.put_nowait(device)


async def _flat_out(
    device: "SimulatedDevice", order: PhaseOrder, rng: random.Random, result: PhaseResult
) -> None:
    """One device sending its next packet as soon as the previous one is answered."""
    loop = asyncio.get_running_loop()
    start, window_begin, window_end = _loop_times(loop, order)
    await _sleep_until(loop, start)
    while (sent_at := loop.time()) < window_end:
        if not device.connected and not await _reconnect(device, result):
            return
        await _send_one(device, _packet_size(rng), result, window_begin <= sent_at)


def _loop_times(loop: asyncio.AbstractEventLoop, order: PhaseOrder) -> tuple[float, ...]:
    """The phase's start and its measured window, converted from wall clock to loop time."""
    to_loop_time = loop.time() - time.time()
    return tuple(instant + to_loop_time for instant in (order.start_at, *order.window))


def _packet_size(rng: random.Random) -> int:
    return 1 if rng.random() < SINGLE_SHARE else rng.randint(*BLACK_BOX_SIZES)


async def _reconnect(device: "SimulatedDevice", result: PhaseResult) -> bool:
    """One attempt after a lost connection; False leaves the device out of the phase."""
    try:
        await device.reconnect()
    except DeviceLost as lost:
        result.error(f"{device.imei}: reconnecting failed: {lost}")
        return False
    return True


async def _sleep_until(loop: asyncio.AbstractEventLoop, due: float) -> None:
    delay = due - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _send_one(
    device: "SimulatedDevice", count: int, result: PhaseResult, measured: bool
) -> None:
    """Sends one packet of `count` messages, checks its answer and counts it."""
    packet, expected = device.packet(count)
    try:
        answer, seconds = await device.exchange(packet)
    except DeviceLost as lost:
        result.unanswered += count
        result.error(f"{device.imei}: {lost}")
        return
    acked = acknowledged(answer)
    result.acked += acked
    if answer != expected:
        result.error(f"{device.imei}: answered {answer!r} to {count} messages, not {expected!r}")
    elif measured:
        result.messages += acked
        result.packets += 1
        result.latency.add(seconds)


def acknowledged(answer: bytes) -> int:
    """Messages an answer confirms as stored: 1 for `#AD#1`, n for `#AB#n`, else 0."""
    if answer == SINGLE_ACCEPTED:
        return 1
    if answer.startswith(b"#AB#"):
        number = answer[4:].strip()
        return int(number) if number.isdigit() else 0
    return 0


# --- one device ---------------------------------------------------------------------------


class SimulatedDevice:
    """One tracker on one connection; its clock gives each message the next second."""

    def __init__(self, imei: str, route: list[str], offset: int, clock_start: int) -> None:
        self.imei = imei
        self._route = route
        self._next_fix = offset % len(route)
        self._clock = clock_start
        self._address: tuple[str, int] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self, host: str, port: int) -> None:
        """Connects and logs in; raises DeviceLost when either fails."""
        self._address = (host, port)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                self._reader, self._writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as error:
            raise DeviceLost(f"cannot connect: {error!r}") from None
        answer, _ = await self.exchange(encode_login(self.imei))
        if answer != LOGIN_ACCEPTED:
            self.close()
            raise DeviceLost(f"login answered {answer!r}")

    async def reconnect(self) -> None:
        """Connects again to the same listener and logs in again; raises DeviceLost."""
        if self._address is None:
            raise DeviceLost("never connected")
        await self.connect(*self._address)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def packet(self, count: int) -> tuple[bytes, bytes]:
        """The next packet of `count` messages and the answer that acknowledges all of them."""
        bodies = [self._next_body() for _ in range(count)]
        if count == 1:
            return _with_crc(b"D", bodies[0], ";"), SINGLE_ACCEPTED
        return _with_crc(b"B", "|".join(bodies), "|"), f"#AB#{count}\r\n".encode()

    async def exchange(self, packet: bytes) -> tuple[bytes, float]:
        """Writes a packet and reads its answer line; (answer, seconds from write to answer)."""
        if self._reader is None or self._writer is None:
            raise DeviceLost("not connected")
        began = time.perf_counter()
        try:
            self._writer.write(packet)
            async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
                answer = await self._reader.readline()
        except (OSError, TimeoutError) as error:
            self.close()  # a late answer would be taken for the next packet's
            raise DeviceLost(f"no answer: {error!r}") from None
        if not answer:
            self.close()
            raise DeviceLost("the server closed the connection")
        return answer, time.perf_counter() - began

    def _next_body(self) -> str:
        tail = self._route[self._next_fix]
        self._next_fix = (self._next_fix + 1) % len(self._route)
        stamp = device_time_fields(self._clock)
        self._clock += 1
        return f"{stamp};{tail}"


def _with_crc(kind: bytes, content: str, separator: str) -> bytes:
    # As simulator.encoding writes packets: the CRC covers the content and its separator.
    covered = f"{content}{separator}".encode()
    return b"#" + kind + b"#" + covered + crc_text(covered).encode() + b"\r\n"


# --- message fields -----------------------------------------------------------------------


def vehicle_routes(seed: int) -> list[list[str]]:
    """For each simulated vehicle, its fixes one second apart as `#D#` fields after the date
    and the time (the devices put in their own clock)."""
    routes = []
    for vehicle in range(ROUTE_VEHICLES):
        fixes = vehicle_fixes(f"bench-{seed}:{vehicle}", ROUTE_START, interval=1)
        routes.append([extended_body(next(fixes)).split(";", 2)[2] for _ in range(ROUTE_FIXES)])
    return routes


def device_time_fields(unix_seconds: int) -> str:
    """`DDMMYY;HHMMSS` in UTC, without strftime, which would cost more than the CRC."""
    day, second = divmod(unix_seconds, 86_400)
    hours, rest = divmod(second, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{_date_field(day)};{hours:02d}{minutes:02d}{seconds:02d}"


@lru_cache(maxsize=64)
def _date_field(day: int) -> str:
    return f"{datetime.fromtimestamp(day * 86_400, UTC):%d%m%y}"
