"""The ingest benchmark behind `fleetplane bench ingest`.

It seeds a fresh database (one provider, one Wialon IPS channel on a free port, N devices on it),
starts the real server (`fleetplane serve`) in its own process with rate limiting off, and
drives the channel from load processes of simulated Wialon IPS 2.0 trackers
(bench/ingest_devices.py): every device logs in once, sends single `#D#` packets and `#B#` black
boxes, waits for each answer and checks it. The server answers only after the batch holding the
messages is committed, so the figures are those of durable ingestion.

Phases:

1. fixed rates (1,000, 5,000 and 10,000 msg/s, paced): achieved msg/s, p50/p99 from writing a
   packet to reading its answer, errors;
2. flat out for `--duration` seconds: sustained msg/s, p50/p99, the server's CPU, and the
   messages stored (rows counted at the end) against the messages acknowledged;
3. the same number of rows written with `messages.service.insert_rows` in batches of 5,000, in
   this process, without network or protocol: the database's own ceiling, so the ratio shows
   what the rest of the pipeline costs.

Missing the design target is a finding, not a failure: the exit code stays 0. An answer that
is not the expected one, a lost connection, or stored rows that differ from the acknowledged
messages make the figures invalid: the run says so loudly and exits 1.
"""

import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane import registry
from fleetplane.cli import load_bench
from fleetplane.config import Settings
from fleetplane.core.db import (
    create_system_engine,
    migrate,
    run_platform_work,
    session_factory,
    system_session,
)
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.devices.models import Device
from fleetplane.ingest.protocols.wialon_ips import crc_text, decode_extended_data
from fleetplane.messages import service as messages
from fleetplane.messages.models import StoredMessage
from fleetplane.simulator.runner import device_imeis
from fleetplane.steps import service as steps_service

# bench/ is not a package: the shared helpers and the load processes' code are loaded by path,
# and registered in sys.modules, so results cross a pipe as their classes.
support = load_bench("support")
simulated = load_bench("ingest_devices")
rules_bench = load_bench("rules")
BenchError = support.BenchError
Server = support.Server

# DESIGN.md, "Performance budget": ingest over Wialon IPS, acknowledged after the durable write.
DESIGN_SUSTAINED_RATE = 50_000
DESIGN_P99_MS = 100.0
DESIGN_P99_AT_RATE = 10_000

FIXED_RATES = (1_000, 5_000, DESIGN_P99_AT_RATE)
# The longest wait for the pipeline steps to catch up after the load.
CATCH_UP_SECONDS = 300
FIXED_RATE_SECONDS = 10
# Each phase starts with this many seconds that are sent and checked but not measured, so the
# figures describe a steady state, not the ramp.
WARMUP_SECONDS = 2
# Below this share of the asked rate, the rate counts as not reached.
REACHED_SHARE = 0.97
# Two processes, each an event loop with half the connections: enough to outrun one server
# process, while leaving it most of a two-core machine.
LOAD_PROCESSES = 2
RAW_BATCH_ROWS = 5_000  # the pipeline's own largest batch (MessageStore.max_batch_messages)
IMEI_PREFIX = "35"
# Device clocks start a week back, so even long runs stay in the past; the raw insert writes a
# year earlier still, so its rows never collide with the ones the server stored.
CLOCK_START_AGO = timedelta(days=7)
RAW_CLOCK_BEFORE = timedelta(days=365)
LOGIN_SECONDS = 120
SEED = 1


@dataclass(frozen=True)
class Fleet:
    api_key: str
    channel_id: str
    port: int
    device_ids: list[str]
    imeis: list[str]


@dataclass(frozen=True)
class Rules:
    """The devices' customer's geofences and automations."""

    geofences: int
    automations: int


@dataclass(frozen=True)
class Phase:
    label: str
    rate: int | None  # messages per second asked of all load processes; None: flat out
    seconds: float


@dataclass(frozen=True)
class PhaseFigures:
    phase: Phase
    result: Any  # ingest_devices.PhaseResult, merged over the load processes
    cpu: "CpuUse"

    @property
    def per_second(self) -> float:
        return self.result.messages / self.phase.seconds

    @property
    def reached(self) -> bool:
        return self.phase.rate is None or self.per_second >= REACHED_SHARE * self.phase.rate

    def latency_ms(self, share: float) -> float | None:
        seconds = self.result.latency.percentile(share)
        return None if seconds is None else seconds * 1000


@dataclass(frozen=True)
class RawInsert:
    rows: int
    seconds: float  # inside insert_rows and the commits only
    stored: int  # rows that were new in the table afterwards

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Report:
    logins: Any  # ingest_devices.PhaseResult of the logins
    fixed: list[PhaseFigures]
    flat_out: PhaseFigures
    acked: int  # every message acknowledged during the run
    unanswered: int
    stored: int  # rows of the benchmark's devices at the end
    raw: RawInsert
    steps_caught_up: float | None  # seconds after the load until no step was behind
    # The steps process's CPU seconds from the first phase until caught up (None: not read)
    steps_cpu: float | None = None

    @property
    def errors(self) -> int:
        return self.logins.errors + sum(p.result.errors for p in [*self.fixed, self.flat_out])

    @property
    def valid(self) -> bool:
        return self.errors == 0 and self.stored == self.acked and self.raw.stored == self.raw.rows


def main(
    *,
    duration: int = 30,
    device_count: int = 200,
    database_url: str | None = None,
    steps: int = 0,
    without: Sequence[str] = (),
    rules: "Rules | None" = None,
    console: Console | None = None,
) -> int:
    """Runs the benchmark and prints its figures; returns the process exit code. With `rules`,
    the devices are a customer's that has that many geofences and automations."""
    console = console or Console()
    try:
        with support.cleanup_on_terminate():
            _print_header(console, duration, device_count, steps, without, rules)
            report = _run(duration, device_count, database_url, (steps, without), rules, console)
    except BenchError as error:
        console.print(f"[bold red]Benchmark not run:[/] {error}")
        return 2
    _print_report(console, report)
    return 0 if report.valid else 1


def _run(
    duration: int,
    device_count: int,
    database_url: str | None,
    steps: tuple[int, Sequence[str]],
    rules: "Rules | None",
    console: Console,
) -> Report:
    """Seed, serve, load, count, insert raw; the server, the load processes and the temporary
    files are gone after, also after Ctrl-C."""
    clock_start = int((datetime.now(UTC) - CLOCK_START_AGO).timestamp())
    with support.work_dir("fleetplane-bench-ingest-") as work_dir:
        url = database_url or f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        fleet = asyncio.run(_seed(url, device_count, rules, console))
        support.warn_if_busy(console)
        with _server(url, work_dir, steps, console) as server:
            _wait_until_listening(server, fleet)
            with _load_processes(fleet, clock_start, console) as (workers, logins):
                phases = [
                    Phase(f"{rate:,} msg/s", rate, FIXED_RATE_SECONDS) for rate in FIXED_RATES
                ]
                phases.append(Phase("flat out", None, duration))
                steps_before = _children_cpu(server.pid)
                figures = [_run_phase(workers, server, phase, console) for phase in phases]
            caught_up = asyncio.run(_steps_catch_up(url, _step_names(steps), console))
            steps_after = _children_cpu(server.pid)
        acked = sum(f.result.acked for f in figures)
        unanswered = sum(f.result.unanswered for f in figures)
        stored = asyncio.run(_count_stored(url, fleet.channel_id))
        raw_start = clock_start - int(RAW_CLOCK_BEFORE.total_seconds())
        flat_out = figures[-1]
        raw = asyncio.run(_insert_raw(url, fleet, flat_out.result.acked, raw_start, console))
    steps_cpu = None
    if steps_before is not None and steps_after is not None:
        steps_cpu = steps_after - steps_before
    return Report(
        logins, figures[:-1], flat_out, acked, unanswered, stored, raw, caught_up, steps_cpu
    )


def _children_cpu(server_pid: int) -> float | None:
    """The CPU seconds of the server's children (its steps process) so far; None: it has
    none, or they could not be read."""
    found = [support.process_cpu_seconds(pid) for pid in support.children(server_pid)]
    if not found or None in found:
        return None
    return sum(value or 0.0 for value in found)


def _step_names(steps: tuple[int, Sequence[str]]) -> list[str]:
    count, without = steps
    names = [step.name for step in registry.STEPS if step.name not in without]
    return names + [f"do_nothing_{number}" for number in range(1, count + 1)]


async def _steps_catch_up(
    database_url: str, step_names: list[str], console: Console
) -> float | None:
    """Seconds from the end of the load until no pipeline step is behind on any device (the
    steps run after the answers: under load they may fall behind, and this says how far);
    None when they have not caught up within CATCH_UP_SECONDS."""
    if not step_names:
        return 0.0
    began = time.monotonic()
    engine = create_system_engine(Settings(database_url=database_url))
    sessions = session_factory(engine)
    try:
        with console.status("waiting for the pipeline steps to catch up"):
            while time.monotonic() - began < CATCH_UP_SECONDS:
                async with system_session(sessions) as session:
                    waiting = await steps_service.devices_with_work(
                        session, step_names, utcnow(), 1
                    )
                if not waiting:
                    return time.monotonic() - began
                await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
    return None


# --- data ---------------------------------------------------------------------------------


async def _seed(
    database_url: str, device_count: int, rules: "Rules | None", console: Console
) -> Fleet:
    settings = Settings(database_url=database_url)
    await migrate(settings)
    return await run_platform_work(
        settings, lambda session: _seed_fleet(session, device_count, rules, console)
    )


async def _seed_fleet(
    session: AsyncSession, device_count: int, rules: "Rules | None", console: Console
) -> Fleet:
    """A provider, its Wialon IPS channel on a free port, the devices (with `rules`, a
    customer's, and the customer's geofences and automations): the project's own code."""
    seeded = await support.provider_with_channel(session, "Ingest benchmark")
    customer_id = None
    if rules is not None:
        customer_id = await rules_bench.customer_with_rules(
            session, seeded.actor, rules.geofences, rules.automations, console
        )
    imeis = device_imeis(IMEI_PREFIX, device_count)
    device_ids = await support.create_devices(session, seeded, imeis, console, customer_id)
    api_key = seeded.provider.api_key or ""
    return Fleet(api_key, seeded.channel_id, seeded.port, device_ids, imeis)


async def _count_stored(database_url: str, channel_id: str) -> int:
    return await run_platform_work(
        Settings(database_url=database_url), lambda session: _count_rows(session, channel_id)
    )


async def _count_rows(session: AsyncSession, channel_id: str) -> int:
    """Rows of the channel's devices: the benchmark's own, even in a shared database."""
    on_channel = select(Device.seq).where(Device.channel_id == channel_id)
    statement = select(func.count()).where(StoredMessage.device_seq.in_(on_channel))
    return int((await session.execute(statement)).scalar_one())


# --- server -------------------------------------------------------------------------------


def _server(
    database_url: str, work_dir: Path, steps: tuple[int, Sequence[str]], console: Console
) -> Any:
    """`fleetplane serve` with the gateway, in its own process; stopped on the way out.
    `steps`: how many pipeline steps that do nothing run after the durable write, and the
    names of registered steps left out."""
    settings = {
        "FLEETPLANE_DATA_DIR": str(work_dir),
        "FLEETPLANE_GATEWAY": "true",
        "FLEETPLANE_DEVICE_HOST": "127.0.0.1",  # the simulated devices are local
    }
    count, without = steps
    if not count and not without:
        return support.server(database_url, work_dir, console, settings, "")
    launcher = Path(__file__).with_name("serve_with_steps.py")
    command = [sys.executable, str(launcher), str(count), f"--without={','.join(without)}"]
    label = f", {count} pipeline steps that do nothing"
    if without:
        label += f", without the step(s) {', '.join(without)}"
    return support.server(database_url, work_dir, console, settings, label, command)


def _wait_until_listening(server: Server, fleet: Fleet) -> None:
    """The gateway binds channels as it starts; the channel's counters say when it has."""
    headers = {"x-platform-api-key": fleet.api_key}
    url = f"{server.base_url}/api/channels/{fleet.channel_id}"
    deadline = time.monotonic() + support.SERVER_START_SECONDS
    counters: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(url, headers=headers, timeout=5)
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
        counters = response.json().get("counters") or {}
        if counters.get("listening"):
            return
        time.sleep(0.2)
    raise BenchError(f"the channel is not listening on port {fleet.port}: {counters}")


# --- load processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    process: multiprocessing.process.BaseProcess
    control: Connection


@contextmanager
def _load_processes(
    fleet: Fleet, clock_start: int, console: Console
) -> Iterator[tuple[list[Worker], Any]]:
    """Starts the load processes and waits until their devices are logged in; yields them
    with the merged login result, and stops them on the way out."""
    # Forked, not spawned: this module is loaded by path, so a spawned process could not
    # import it again; forking also spares each process the imports.
    context = multiprocessing.get_context("fork")
    workers = []
    try:
        for plan in _plans(fleet, clock_start):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=simulated.run_load_process, args=(plan, child_end), daemon=True
            )
            process.start()
            child_end.close()
            workers.append(Worker(process, parent_end))
        with console.status(f"logging in {len(fleet.imeis)} devices"):
            logins = _merge(_collect(workers, "ready", LOGIN_SECONDS))
        pids = ", ".join(str(worker.process.pid) for worker in workers)
        console.print(f"load: {len(workers)} processes (pids {pids}), {len(fleet.imeis)} devices")
        yield workers, logins
    except BaseException:
        # Interrupted mid-phase, they would not read a request to stop.
        _terminate_workers(workers)
        raise
    _stop_workers(workers)


def _plans(fleet: Fleet, clock_start: int) -> list[Any]:
    count = min(LOAD_PROCESSES, len(fleet.imeis))
    share = -(-len(fleet.imeis) // count)  # ceiling: every device has a process
    return [
        simulated.LoadPlan(
            host="127.0.0.1",
            port=fleet.port,
            imeis=tuple(fleet.imeis[first : first + share]),
            first_device=first,
            clock_start=clock_start,
            seed=SEED + first,
        )
        for first in range(0, len(fleet.imeis), share)
    ]


def _collect(workers: list[Worker], kind: str, timeout: float) -> list[Any]:
    """Waits for one message of `kind` from every worker; ignores progress on the way."""
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(workers):
        if time.monotonic() > deadline:
            raise BenchError(f"the load processes did not report {kind!r} in {timeout:.0f} s")
        for index, worker in enumerate(workers):
            _require_alive(worker)
            while worker.control.poll(0.05):
                message_kind, value = worker.control.recv()
                if message_kind == kind:
                    results[index] = value
    return [results[index] for index in range(len(workers))]


def _require_alive(worker: Worker) -> None:
    if not worker.process.is_alive():
        raise BenchError(f"load process {worker.process.pid} died ({worker.process.exitcode})")


def _stop_workers(workers: list[Worker]) -> None:
    """After the last phase: each process closes its connections and ends."""
    for worker in workers:
        if worker.process.is_alive():
            with suppress(OSError):  # it is ending anyway
                worker.control.send("stop")
    for worker in workers:
        worker.process.join(timeout=10)
    _terminate_workers(workers)


def _terminate_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join()
        worker.control.close()


def _merge(results: list[Any]) -> Any:
    merged = simulated.PhaseResult()
    for result in results:
        merged.messages += result.messages
        merged.packets += result.packets
        merged.acked += result.acked
        merged.unanswered += result.unanswered
        merged.errors += result.errors
        merged.samples.extend(result.samples)
        merged.latency.merge(result.latency)
    return merged


# --- phases -------------------------------------------------------------------------------


def _run_phase(
    workers: list[Worker], server: Server, phase: Phase, console: Console
) -> PhaseFigures:
    """Sends the phase to every load process, shows its progress, and measures the server's
    and the load processes' CPU over the measured window."""
    start_at = time.time() + 0.5  # every process starts at the same instant
    rate = phase.rate / len(workers) if phase.rate else None
    order = simulated.PhaseOrder(rate, start_at, WARMUP_SECONDS, phase.seconds)
    for worker in workers:
        worker.control.send(order)
    # This process drives the load too (the pipes, the progress bars): it counts as load.
    cpu = _CpuWindow(server.pid, [os.getpid(), *(worker.process.pid for worker in workers)])
    results: dict[int, Any] = {}
    acked = [0] * len(workers)
    with _phase_progress(console) as progress:
        task = progress.add_task(phase.label, total=WARMUP_SECONDS + phase.seconds, rate="")
        meter = _RateMeter()
        while len(results) < len(workers):
            _drain(workers, acked, results)
            now = time.time()
            cpu.sample(now, order.window)
            progress.update(
                task,
                completed=min(max(0.0, now - start_at), WARMUP_SECONDS + phase.seconds),
                rate=meter.show(sum(acked)),
            )
            time.sleep(0.1)
    figures = PhaseFigures(phase, _merge([results[i] for i in range(len(workers))]), cpu.use())
    _print_phase(console, figures)
    return figures


def _drain(workers: list[Worker], acked: list[int], results: dict[int, Any]) -> None:
    """Reads what the load processes reported: acknowledged counts, and their final results."""
    for index, worker in enumerate(workers):
        _require_alive(worker)
        while worker.control.poll():
            kind, value = worker.control.recv()
            if kind == "progress":
                acked[index] = value
            elif kind == "done":
                results[index] = value
                acked[index] = value.acked


def _phase_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )


class _RateMeter:
    """Acknowledged messages per second over the last second or so, for the progress bar."""

    def __init__(self) -> None:
        self._since = (time.monotonic(), 0)
        self._text = ""

    def show(self, acked: int) -> str:
        now = time.monotonic()
        then, acked_then = self._since
        if now - then >= 1.0:
            self._text = f"{(acked - acked_then) / (now - then):,.0f} msg/s"
            self._since = (now, acked)
        return self._text


@dataclass(frozen=True)
class CpuUse:
    """Cores used during a window (1.0 = one core fully busy)."""

    server: float | None  # the server's own process: the intake, the API
    steps: float | None  # the server's child processes: its pipeline steps' process
    load: float | None  # the load processes and the one driving them
    other: float | None  # everything else on the machine: work the figures competed with


@dataclass(frozen=True)
class _CpuReading:
    at: float  # time.monotonic()
    server: float | None  # CPU seconds since start; None where /proc is missing
    steps: float | None
    load: float | None
    machine: float | None


class _CpuWindow:
    """CPU time of the server, of the load processes and of the whole machine from the
    window's start to its end."""

    def __init__(self, server_pid: int, load_pids: list[int]) -> None:
        self._server_pid = server_pid
        self._load_pids = load_pids
        self._begin: _CpuReading | None = None
        self._end: _CpuReading | None = None

    def sample(self, now: float, window: tuple[float, float]) -> None:
        if self._begin is None and now >= window[0]:
            self._begin = self._read()
        elif self._begin is not None and self._end is None and now >= window[1]:
            self._end = self._read()

    def use(self) -> CpuUse:
        begin, end = self._begin, self._end
        if begin is None or end is None:
            return CpuUse(None, None, None, None)
        seconds = end.at - begin.at
        server = _cores_used(begin.server, end.server, seconds)
        steps = _cores_used(begin.steps, end.steps, seconds)
        load = _cores_used(begin.load, end.load, seconds)
        machine = _cores_used(begin.machine, end.machine, seconds)
        if server is None or steps is None or load is None or machine is None:
            return CpuUse(server, steps, load, None)
        return CpuUse(server, steps, load, max(0.0, machine - server - steps - load))

    def _read(self) -> _CpuReading:
        loads = [support.process_cpu_seconds(pid) for pid in self._load_pids]
        # A child that started or ended within the window is counted from or to then only.
        children = [support.process_cpu_seconds(pid) for pid in support.children(self._server_pid)]
        return _CpuReading(
            at=time.monotonic(),
            server=support.process_cpu_seconds(self._server_pid),
            steps=sum(value or 0.0 for value in children),
            load=None if None in loads else sum(value or 0.0 for value in loads),
            machine=support.machine_cpu_seconds(),
        )


def _cores_used(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None or seconds <= 0:
        return None
    return (after - before) / seconds


# --- raw insert ---------------------------------------------------------------------------


async def _insert_raw(
    database_url: str, fleet: Fleet, count: int, clock_start: int, console: Console
) -> RawInsert:
    """`count` rows of the same shape through `messages.insert_rows`, each batch in its own
    committed transaction as the pipeline does, timed around the insert and the commit only."""
    engine = create_system_engine(Settings(database_url=database_url))
    sessions = session_factory(engine)
    templates = _row_templates()
    try:
        async with system_session(sessions) as session:
            seqs = await devices.seqs_of(session, fleet.device_ids)
        device_keys = [seqs[device_id] for device_id in fleet.device_ids]
        before = await _count_in(sessions, fleet.channel_id)
        seconds = 0.0
        columns = (TextColumn("raw insert_rows"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("rows", total=count)
            for first in range(0, count, RAW_BATCH_ROWS):
                size = min(RAW_BATCH_ROWS, count - first)
                batch = _raw_rows(templates, device_keys, clock_start, first, size)
                began = time.perf_counter()
                async with system_session(sessions) as session:
                    await messages.insert_rows(session, batch)
                seconds += time.perf_counter() - began
                progress.advance(task, size)
        stored = await _count_in(sessions, fleet.channel_id) - before
    finally:
        await engine.dispose()
    raw = RawInsert(count, seconds, stored)
    console.print(f"raw insert_rows: {raw.per_second:,.0f} rows/s ({count:,} rows)")
    return raw


async def _count_in(sessions: async_sessionmaker[AsyncSession], channel_id: str) -> int:
    async with system_session(sessions) as session:
        return await _count_rows(session, channel_id)


def _row_templates() -> list[dict[str, Any]]:
    """Rows as the server makes them: the load processes' packets, decoded by the protocol
    decoder and turned into rows by `messages.to_row`."""
    received_at = datetime.now(UTC)
    templates = []
    for route in simulated.vehicle_routes(SEED):
        for tail in route:
            covered = f"{simulated.device_time_fields(0)};{tail};".encode()
            body = covered + crc_text(covered).encode()
            decoded = decode_extended_data(body, True, received_at)
            templates.append(messages.to_row(0, decoded.messages[0]))
    return templates


def _raw_rows(
    templates: list[dict[str, Any]], device_keys: list[int], clock_start: int, first: int, size: int
) -> list[dict[str, Any]]:
    """Rows `first` to `first + size`: over every device in turn, one second apart per device,
    as the pipeline's batches mix many devices. (The template's packed values keep its own
    receive delay.)"""
    rows = []
    for number in range(first, first + size):
        device_second, device = divmod(number, len(device_keys))
        moment = datetime.fromtimestamp(clock_start + device_second, UTC)
        row = templates[number % len(templates)] | {
            "device_seq": device_keys[device],
            "device_time": moment,
        }
        rows.append(row)
    return rows


# --- report -------------------------------------------------------------------------------


def _print_header(
    console: Console,
    duration: int,
    device_count: int,
    steps: int,
    without: Sequence[str],
    rules: "Rules | None",
) -> None:
    rates = ", ".join(f"{rate:,}" for rate in FIXED_RATES)
    console.print(
        f"[bold]Fleetplane ingest benchmark[/], {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{support.machine_line()}\n"
        f"server: {support.versions('sqlalchemy', 'aiosqlite', 'asyncpg', 'uvloop')}\n"
        f"load: {LOAD_PROCESSES} processes, {device_count} devices over Wialon IPS 2.0 TCP, "
        f"{simulated.SINGLE_SHARE:.0%} #D#, the rest #B# of {simulated.BLACK_BOX_SIZES[0]}-"
        f"{simulated.BLACK_BOX_SIZES[1]} messages\n"
        f"phases: {rates} msg/s for {FIXED_RATE_SECONDS} s each, then flat out for "
        f"{duration} s (each after {WARMUP_SECONDS} s of warm-up), then raw insert_rows\n"
        f"pipeline steps: {steps} that do nothing, besides the registered ones"
        + (f" but {', '.join(without)}" if without else "")
        + (
            f"\ndevices of one customer with {rules.geofences:,} geofences and "
            f"{rules.automations:,} automations"
            if rules is not None
            else "\ndevices of no customer"
        )
    )


def _print_phase(console: Console, figures: PhaseFigures) -> None:
    p50, p99 = figures.latency_ms(0.5), figures.latency_ms(0.99)
    text = (
        f"{figures.phase.label}: {figures.per_second:,.0f} msg/s, "
        f"p50 {_ms(p50)} ms, p99 {_ms(p99)} ms, {figures.result.errors:,} errors"
    )
    if not figures.reached:
        text += " [bold yellow](rate not reached)[/]"
    console.print(text)


def _print_report(console: Console, report: Report) -> None:
    console.print(_results_table(report))
    console.print(_storage_lines(report))
    console.print(_catch_up_line(report))
    console.print(_verdicts(report))
    _print_errors(console, report)


def _catch_up_line(report: Report) -> str:
    if report.steps_caught_up is None:
        return f"[bold yellow]pipeline steps: still behind {CATCH_UP_SECONDS} s after the load[/]"
    line = f"pipeline steps: caught up {report.steps_caught_up:.1f} s after the load"
    if report.steps_cpu is not None and report.stored:
        line += (
            f"; their process's CPU from the first phase until then: {report.steps_cpu:.1f} s,"
            f" {report.steps_cpu / report.stored * 1e6:.1f} µs a stored message"
        )
    return line


def _results_table(report: Report) -> Table:
    # Two-line headers keep the table within 80 columns (the width when output is piped).
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0, 0, 1),
        caption="latency: packet written to answer read; CPU: cores used (1.00 = one); "
        "µs/msg: the server's own (and the steps process's, \"steps µs\"); steps: its pipeline "
        "steps' process; other: the rest of the machine",
    )
    table.add_column("phase", no_wrap=True)
    headers = ("msg/s", "packets\n/s", "p50\nms", "p99\nms", "errors")
    cpus = ("server\nCPU", "µs/\nmsg", "steps\nCPU", "steps\nµs", "load\nCPU", "other\nCPU")
    for header in (*headers, *cpus):
        table.add_column(header, justify="right", no_wrap=True)
    for figures in [*report.fixed, report.flat_out]:
        achieved = f"{figures.per_second:,.0f}"
        table.add_row(
            figures.phase.label,
            achieved if figures.reached else f"[bold yellow]{achieved}[/]",
            f"{figures.result.packets / figures.phase.seconds:,.0f}",
            _ms(figures.latency_ms(0.5)),
            _ms(figures.latency_ms(0.99)),
            support.count_cell(figures.result.errors),
            _cores(figures.cpu.server),
            _per_message(figures.cpu.server, figures.per_second),
            _cores(figures.cpu.steps),
            _per_message(figures.cpu.steps, figures.per_second),
            _cores(figures.cpu.load),
            _cores(figures.cpu.other),
        )
    return table


def _per_message(cores: float | None, per_second: float) -> str:
    """A process's CPU time per acknowledged message, in µs ("n/a": not measured)."""
    if cores is None or not per_second:
        return "n/a"
    return f"{cores / per_second * 1e6:.0f}"


def _storage_lines(report: Report) -> str:
    lines = []
    if report.stored == report.acked:
        lines.append(f"stored: {report.stored:,} rows = {report.acked:,} messages acknowledged")
    else:
        lines.append(
            f"[bold red]STORED {report.stored:,} ROWS BUT {report.acked:,} MESSAGES WERE "
            f"ACKNOWLEDGED[/] ({report.unanswered:,} sent without an answer)"
        )
    raw, flat = report.raw, report.flat_out
    ratio = flat.per_second / raw.per_second if raw.per_second else 0.0
    lines.append(
        f"raw insert_rows, batches of {RAW_BATCH_ROWS:,}, one commit each: "
        f"{raw.per_second:,.0f} rows/s ({raw.rows:,} rows); the pipeline flat out reaches "
        f"{ratio:.1%} of it"
    )
    if raw.stored != raw.rows:
        lines.append(f"[bold red]RAW INSERT STORED {raw.stored:,} OF {raw.rows:,} ROWS[/]")
    return "\n".join(lines)


def _verdicts(report: Report) -> str:
    flat = report.flat_out
    at_rate = next((f for f in report.fixed if f.phase.rate == DESIGN_P99_AT_RATE), None)
    sustained = _mark(flat.per_second >= DESIGN_SUSTAINED_RATE)
    lines = [
        f"DESIGN.md target, ingest over Wialon IPS acknowledged after the durable write: "
        f"{DESIGN_SUSTAINED_RATE:,} msg/s sustained: {sustained} ({flat.per_second:,.0f} msg/s)"
    ]
    if at_rate is not None:
        p99 = at_rate.latency_ms(0.99)
        met = at_rate.reached and p99 is not None and p99 < DESIGN_P99_MS
        reached = "" if at_rate.reached else ", rate not reached"
        lines.append(
            f"DESIGN.md target, p99 ack < {DESIGN_P99_MS:.0f} ms at {DESIGN_P99_AT_RATE:,} msg/s: "
            f"{_mark(met)} ({at_rate.per_second:,.0f} msg/s, p99 {_ms(p99)} ms{reached})"
        )
    return "\n".join(lines)


def _print_errors(console: Console, report: Report) -> None:
    if report.valid:
        return
    lines = []
    for label, result in [
        ("login", report.logins),
        *((f.phase.label, f.result) for f in [*report.fixed, report.flat_out]),
    ]:
        if result.errors:
            lines.append(f"{label}: {result.errors:,} errors, for example:")
            lines.extend(f"  {sample}" for sample in result.samples)
    if report.stored != report.acked:
        lines.append(f"stored rows {report.stored:,} != acknowledged messages {report.acked:,}")
    if report.raw.stored != report.raw.rows:
        lines.append(f"raw insert: {report.raw.stored:,} of {report.raw.rows:,} rows stored")
    lines.append("These figures are NOT valid.")
    console.print(Panel("\n".join(lines), title="ERRORS DURING THE RUN", border_style="bold red"))


def _mark(met: bool) -> str:
    return "[bold green]PASS[/]" if met else "[bold yellow]MISS[/]"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
