"""The HTTP API benchmark behind `fleetplane bench api`.

It seeds a fresh database (one provider, one customer, N devices), starts the real server
(`fleetplane serve`, one worker) in its own process with rate limiting off, and drives it with
wrk in another process, one target after the other:

- `GET /module/devices?limit=100`: the design's budgeted read (DESIGN.md, "Performance budget");
- `GET /module/devices/{id}`: one device, rotating over every device id;
- `GET /healthz`: a trivial JSON route on the same server, the baseline for the cost of the
  HTTP server and the framework alone.

It prints requests/s, p50/p99 latency and the server's CPU time per request for each target.
Figures from a run in which any answer was not 200 are not valid: the run says so and exits 1.
Missing the design target is a finding, not a failure: the exit code stays 0.
"""

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.audit.service import Actor
from fleetplane.config import Settings
from fleetplane.core.db import migrate, run_platform_work
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "target.lua"

# DESIGN.md, "Performance budget": GET /module/devices with 1,000 devices, one worker.
DESIGN_RPS = 5_000
DESIGN_P99_MS = 20.0
DESIGN_CONNECTIONS = 64
DESIGN_DEVICES = 1_000

PAGE_SIZE = 100
# A short untimed run before each measured one fills SQLAlchemy's statement cache, the key and
# customer caches and SQLite's page cache, so the figures describe a warm server.
WARMUP_SECONDS = 2
# One wrk thread outruns the server by far; a second would only take CPU from it on two cores.
WRK_THREADS = 1
# Long enough that a slow answer counts in the latency figures instead of as a timeout.
WRK_TIMEOUT = "30s"
SERVER_START_SECONDS = 60
# Above this share of the CPUs in use before the run, other work will pull the figures down.
BUSY_MACHINE_SHARE = 0.10


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


@dataclass(frozen=True)
class Fleet:
    api_key: str
    customer_id: str
    device_ids: list[str]


@dataclass(frozen=True)
class Target:
    label: str
    path: str  # "{id}" is replaced by each device id in turn
    authenticated: bool


@dataclass(frozen=True)
class Load:
    wrk: str
    duration: int
    connections: int


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


@dataclass(frozen=True)
class Result:
    target: Target
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    not_200: int
    socket_errors: int
    server_cpu_seconds: float | None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.server_cpu_seconds is None or not self.requests:
            return None
        return self.server_cpu_seconds * 1000 / self.requests

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.not_200 == 0 and self.socket_errors == 0


LIST_PATH = f"/module/devices?limit={PAGE_SIZE}"
LIST_TARGET = Target(f"GET {LIST_PATH}", LIST_PATH, True)
ONE_TARGET = Target("GET /module/devices/{id}", "/module/devices/{id}", True)
BASELINE_TARGET = Target("GET /healthz", "/healthz", False)
TARGETS = (LIST_TARGET, ONE_TARGET, BASELINE_TARGET)


def main(
    *,
    duration: int = 20,
    connections: int = DESIGN_CONNECTIONS,
    device_count: int = DESIGN_DEVICES,
    database_url: str | None = None,
    console: Console | None = None,
) -> int:
    """Runs the benchmark and prints its figures; returns the process exit code."""
    console = console or Console()
    try:
        with _cleanup_on_terminate():
            load = Load(_find_wrk(), duration, connections)
            _print_header(console, load, device_count)
            results = _run(load, device_count, database_url, console)
    except BenchError as error:
        console.print(f"[bold red]Benchmark not run:[/] {error}")
        return 2
    _print_results(console, results, connections, device_count)
    return 0 if all(result.valid for result in results) else 1


def _run(load: Load, device_count: int, database_url: str | None, console: Console) -> list[Result]:
    """Seed, serve, load each target; the server and the temporary files are gone after."""
    with _work_dir() as work_dir:
        url = database_url or f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        fleet = asyncio.run(_seed(url, device_count, console))
        ids_file = work_dir / "device_ids.txt"
        ids_file.write_text("\n".join(fleet.device_ids) + "\n")
        _warn_if_busy(console)
        with _server(url, work_dir, console) as server:
            _check_answers(server.base_url, fleet)
            return [
                _measure(load, server, target, _wrk_env(target, fleet, ids_file), console)
                for target in TARGETS
            ]


@contextmanager
def _cleanup_on_terminate() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does: the server is stopped and the temporary files go,
    instead of a server left running in its own session."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (Debian/Ubuntu: `apt-get install wrk`).")
    return wrk


@contextmanager
def _work_dir() -> Iterator[Path]:
    """A temporary folder for the database, the device ids and the server log; always removed."""
    path = Path(tempfile.mkdtemp(prefix="fleetplane-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- data ---------------------------------------------------------------------------------


async def _seed(database_url: str, device_count: int, console: Console) -> Fleet:
    settings = Settings(database_url=database_url)
    await migrate(settings)
    return await run_platform_work(
        settings, lambda session: _seed_fleet(session, device_count, console)
    )


async def _seed_fleet(session: AsyncSession, device_count: int, console: Console) -> Fleet:
    """Provider with an all-permissions key, one customer, its devices: the project's own code."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    provider = await bootstrap.create_provider(session, f"Benchmark provider {stamp}")
    actor = Actor(provider_id=provider.provider_id)
    customer = await customers.create(
        session, actor, CustomerCreate(name="Benchmark customer", modules=["devices"])
    )
    device_ids = await _create_devices(session, actor, customer.id, device_count, console)
    return Fleet(provider.api_key or "", customer.id, device_ids)  # new providers get a key


async def _create_devices(
    session: AsyncSession, actor: Actor, customer_id: str, count: int, console: Console
) -> list[str]:
    columns = (TextColumn("creating devices"), BarColumn(), MofNCompleteColumn())
    ids = []
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("devices", total=count)
        for number in range(count):
            data = DeviceCreate(
                unique_id=f"35000000{number:07d}",
                name=f"Bench truck {number + 1:04d}",
                customer_id=customer_id,
            )
            ids.append((await devices.create(session, actor, data)).id)
            progress.advance(task)
    return ids


# --- server -------------------------------------------------------------------------------


@contextmanager
def _server(database_url: str, work_dir: Path, console: Console) -> Iterator[Server]:
    """`fleetplane serve` in its own process, one worker; stopped on the way out."""
    port = _free_port()
    log_path = work_dir / "server.log"
    env = {
        **os.environ,
        "FLEETPLANE_DATABASE_URL": database_url,
        "FLEETPLANE_RATE_LIMIT": "0",  # the limiter would turn the load into 429s
        "FLEETPLANE_LOG_LEVEL": "warning",  # no per-request logging, whatever the caller set
    }
    command = [*_fleetplane_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this process, which then stops the server.
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        with console.status("starting the server"):
            _wait_until_healthy(process, server.base_url, log_path)
        console.print(f"server: {server.base_url}, pid {server.pid}, one worker")
        yield server
    finally:
        _stop(process)


def _fleetplane_command() -> list[str]:
    """The `fleetplane` script of this interpreter's environment, or the same through -c."""
    script = Path(sys.executable).parent / "fleetplane"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from fleetplane.cli import app; app()"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the server exited ({process.returncode}):\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise BenchError(f"the server did not answer /healthz in {SERVER_START_SECONDS} s")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _check_answers(base_url: str, fleet: Fleet) -> None:
    """One call per target before the load: a benchmark of error pages would measure nothing."""
    headers = {"x-platform-api-key": fleet.api_key, "x-platform-cid": fleet.customer_id}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        page = _get_json(client, LIST_TARGET.path)
        expected = min(PAGE_SIZE, len(fleet.device_ids))
        if len(page["items"]) != expected:
            raise BenchError(f"the device list has {len(page['items'])} items, not {expected}")
        device_id = fleet.device_ids[0]
        if _get_json(client, ONE_TARGET.path.replace("{id}", device_id))["id"] != device_id:
            raise BenchError("GET /module/devices/{id} answered another device")
        _get_json(client, BASELINE_TARGET.path)


def _get_json(client: httpx.Client, path: str) -> dict[str, object]:
    response = client.get(path)
    if response.status_code != 200:
        raise BenchError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    answer: dict[str, object] = response.json()
    return answer


# --- load ---------------------------------------------------------------------------------


def _measure(
    load: Load, server: Server, target: Target, env: dict[str, str], console: Console
) -> Result:
    with console.status(f"{target.label}: warming up ({WARMUP_SECONDS} s)"):
        _run_wrk(load.wrk, server.base_url, env, WARMUP_SECONDS, load.connections)
    cpu_before = _process_cpu_seconds(server.pid)
    with console.status(f"{target.label}: {load.duration} s at {load.connections} connections"):
        figures = _run_wrk(load.wrk, server.base_url, env, load.duration, load.connections)
    cpu_after = _process_cpu_seconds(server.pid)
    socket_errors = ("connect_errors", "read_errors", "write_errors", "timeouts")
    result = Result(
        target=target,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        not_200=figures["not_200"],
        socket_errors=sum(figures[name] for name in socket_errors),
        server_cpu_seconds=(
            cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        ),
    )
    console.print(
        f"{target.label}: {result.per_second:,.0f} req/s, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )
    return result


def _wrk_env(target: Target, fleet: Fleet, ids_file: Path) -> dict[str, str]:
    # The key goes through the environment, not the command line, so `ps` does not show it.
    env = {**os.environ, "BENCH_PATH": target.path, "BENCH_IDS_FILE": str(ids_file)}
    if target.authenticated:
        env |= {"BENCH_API_KEY": fleet.api_key, "BENCH_CUSTOMER_ID": fleet.customer_id}
    return env


def _run_wrk(
    wrk: str, base_url: str, env: dict[str, str], duration: int, connections: int
) -> dict[str, int]:
    command = [
        wrk,
        f"--threads={min(WRK_THREADS, connections)}",
        f"--connections={connections}",
        f"--duration={duration}s",
        f"--timeout={WRK_TIMEOUT}",
        f"--script={WRK_SCRIPT}",
        base_url,
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in finished.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            figures: dict[str, int] = json.loads(line.removeprefix("BENCH_RESULT "))
            return figures
    raise BenchError(f"wrk failed ({finished.returncode}):\n{finished.stdout}{finished.stderr}")


# --- machine ------------------------------------------------------------------------------


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs in use over a short sample (Linux); None elsewhere."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return idle, sum(values)

    try:
        idle_before, total_before = sample()
        time.sleep(seconds)
        idle_after, total_after = sample()
    except OSError:
        return None
    total = total_after - total_before
    return 1 - (idle_after - idle_before) / total if total else None


def _warn_if_busy(console: Console) -> None:
    share = _busy_share()
    if share is None:
        return
    console.print(f"machine busy before the run: {share:.0%} of {os.cpu_count()} CPUs")
    if share > BUSY_MACHINE_SHARE:
        console.print(
            "[bold yellow]Other work is using the CPUs: the figures will be lower than this "
            "machine can do.[/]"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --- report -------------------------------------------------------------------------------


def _print_header(console: Console, load: Load, device_count: int) -> None:
    console.print(
        f"[bold]Fleetplane HTTP API benchmark[/], {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}\n"
        f"server: {_versions('fastapi', 'uvicorn', 'uvloop', 'httptools', 'sqlalchemy')}\n"
        f"load: {_wrk_version(load.wrk)}, {WRK_THREADS} thread, {load.connections} connections, "
        f"{load.duration} s per target after {WARMUP_SECONDS} s of warm-up; "
        f"{device_count} devices"
    )


def _versions(*packages: str) -> str:
    found = []
    for package in packages:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} missing")
    return ", ".join(found)


def _wrk_version(wrk: str) -> str:
    # `wrk --version` prints a banner (and exits 1); its first two words name the version.
    output = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return " ".join(output.stdout.split()[:2]) or "wrk"


def _print_results(
    console: Console, results: list[Result], connections: int, device_count: int
) -> None:
    console.print(_results_table(results))
    console.print(_verdict(results[0], connections, device_count))
    broken = [result for result in results if not result.valid]
    if broken:
        lines = [
            f"{r.target.label}: {r.not_200:,} answers not 200, {r.socket_errors:,} socket errors"
            for r in broken
        ]
        console.print(
            Panel(
                "\n".join(lines) + "\nThese figures are NOT valid.",
                title="ERRORS DURING THE RUN",
                border_style="bold red",
            )
        )


def _results_table(results: list[Result]) -> Table:
    baseline = next(r for r in results if r.target is BASELINE_TARGET)
    # Two-line headers keep the table within 80 columns (the width when output is piped).
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0, 0, 1),
        caption="errors: not 200 + socket errors",
    )
    table.add_column("target", no_wrap=True)
    for header in ("req/s", "p50\nms", "p99\nms", "errors", "CPU ms\nper req", "vs\nhealthz"):
        table.add_column(header, justify="right", no_wrap=True)
    for result in results:
        ratio = result.per_second / baseline.per_second if baseline.per_second else 0.0
        cpu = result.cpu_ms_per_request
        table.add_row(
            result.target.label,
            f"{result.per_second:,.0f}",
            f"{result.p50_ms:.1f}",
            f"{result.p99_ms:.1f}",
            _count_cell(result.not_200 + result.socket_errors),
            "n/a" if cpu is None else f"{cpu:.2f}",
            f"{ratio:.3f}",
        )
    return table


def _count_cell(count: int) -> str:
    return f"[bold red]{count:,}[/]" if count else "0"


def _verdict(result: Result, connections: int, device_count: int) -> str:
    met = result.per_second >= DESIGN_RPS and result.p99_ms < DESIGN_P99_MS
    mark = "[bold green]PASS[/]" if met else "[bold yellow]MISS[/]"
    text = (
        f"DESIGN.md target, GET /module/devices: {DESIGN_RPS:,} req/s and p99 < "
        f"{DESIGN_P99_MS:.0f} ms at {DESIGN_CONNECTIONS} connections, one worker: {mark} "
        f"({result.per_second:,.0f} req/s, p99 {result.p99_ms:.1f} ms)"
    )
    if connections != DESIGN_CONNECTIONS or device_count != DESIGN_DEVICES:
        text += (
            f"\n[yellow]Measured at {connections} connections with {device_count:,} devices, "
            f"not the target's {DESIGN_CONNECTIONS} and {DESIGN_DEVICES:,}.[/]"
        )
    return text
