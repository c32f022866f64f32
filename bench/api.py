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
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.cli import load_bench
from fleetplane.config import Settings
from fleetplane.core.db import migrate, run_platform_work
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate

support = load_bench("support")
BenchError = support.BenchError

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
        with support.cleanup_on_terminate():
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
    with support.work_dir("fleetplane-bench-") as work_dir:
        url = database_url or f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        fleet = asyncio.run(_seed(url, device_count, console))
        ids_file = work_dir / "device_ids.txt"
        ids_file.write_text("\n".join(fleet.device_ids) + "\n")
        support.warn_if_busy(console)
        with support.server(url, work_dir, console, {}, ", one worker") as server:
            _check_answers(server.base_url, fleet)
            return [
                _measure(load, server, target, _wrk_env(target, fleet, ids_file), console)
                for target in TARGETS
            ]


def _find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (Debian/Ubuntu: `apt-get install wrk`).")
    return wrk


# --- data ---------------------------------------------------------------------------------


async def _seed(database_url: str, device_count: int, console: Console) -> Fleet:
    settings = Settings(database_url=database_url)
    await migrate(settings)
    return await run_platform_work(
        settings, lambda session: _seed_fleet(session, device_count, console)
    )


async def _seed_fleet(session: AsyncSession, device_count: int, console: Console) -> Fleet:
    """Provider with an all-permissions key, a channel, one customer, its devices on the
    channel: the project's own code."""
    seeded = await support.provider_with_channel(session, "Benchmark provider")
    customer = await customers.create(
        session, seeded.actor, CustomerCreate(name="Benchmark customer", modules=["devices"])
    )
    unique_ids = [f"35000000{number:07d}" for number in range(device_count)]
    device_ids = await support.create_devices(session, seeded, unique_ids, console, customer.id)
    api_key = seeded.provider.api_key or ""  # new providers get a key
    return Fleet(api_key, customer.id, device_ids)


# --- server -------------------------------------------------------------------------------


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
    load: Load, server: Any, target: Target, env: dict[str, str], console: Console
) -> Result:
    with console.status(f"{target.label}: warming up ({WARMUP_SECONDS} s)"):
        _run_wrk(load.wrk, server.base_url, env, WARMUP_SECONDS, load.connections)
    cpu_before = support.process_cpu_seconds(server.pid)
    with console.status(f"{target.label}: {load.duration} s at {load.connections} connections"):
        figures = _run_wrk(load.wrk, server.base_url, env, load.duration, load.connections)
    cpu_after = support.process_cpu_seconds(server.pid)
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


# --- report -------------------------------------------------------------------------------


def _print_header(console: Console, load: Load, device_count: int) -> None:
    console.print(
        f"[bold]Fleetplane HTTP API benchmark[/], {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{support.machine_line()}\n"
        f"server: {support.versions('fastapi', 'uvicorn', 'uvloop', 'httptools', 'sqlalchemy')}\n"
        f"load: {_wrk_version(load.wrk)}, {WRK_THREADS} thread, {load.connections} connections, "
        f"{load.duration} s per target after {WARMUP_SECONDS} s of warm-up; "
        f"{device_count} devices"
    )


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
            support.count_cell(result.not_200 + result.socket_errors),
            "n/a" if cpu is None else f"{cpu:.2f}",
            f"{ratio:.3f}",
        )
    return table


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
