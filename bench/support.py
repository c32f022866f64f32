"""What the benchmarks share: the server they start, the temporary folder, the free port, the
CPU readings from /proc, the machine and version lines of their headers, the provider, channel
and devices they seed.

bench/ is not a package: `fleetplane bench NAME` loads bench/NAME.py by path, and the
benchmarks load this file the same way (`fleetplane.cli.load_bench("support")`).
"""

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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit.service import Actor
from fleetplane.bootstrap import ProviderWithKey, create_provider
from fleetplane.channels import service as channels
from fleetplane.channels.schemas import ChannelCreate, Protocol, Transport
from fleetplane.channels.service import ChannelPolicy
from fleetplane.config import Settings
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate
from fleetplane.ingest.gateway import cannot_bind

SERVER_START_SECONDS = 60
# Where the benchmarks' channels start looking for a free device port: away from the usual
# ports of `fleetplane init` and the demo (20332, 5055), which a running server may hold.
FIRST_CHANNEL_PORT = 21000
# Above this share of the CPUs in use before the run, other work will pull the figures down.
BUSY_MACHINE_SHARE = 0.10


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


@contextmanager
def cleanup_on_terminate() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does: the server and any load processes are stopped
    and the temporary files go, instead of a server left running in its own session."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for the database, the server log and the like; always removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- server -------------------------------------------------------------------------------


@contextmanager
def server(
    database_url: str,
    folder: Path,
    console: Console,
    settings: dict[str, str],
    label: str,
    command: list[str] | None = None,
) -> Iterator[Server]:
    """`fleetplane serve` (or `command`, which takes the same arguments) in its own process
    with rate limiting off, quiet logs and these extra FLEETPLANE_* settings; stopped on the
    way out."""
    port = free_port()
    log_path = folder / "server.log"
    env = {
        **os.environ,
        "FLEETPLANE_DATABASE_URL": database_url,
        "FLEETPLANE_RATE_LIMIT": "0",  # the limiter would turn the load into 429s
        "FLEETPLANE_LOG_LEVEL": "warning",  # no per-request logging, whatever the caller set
        **settings,
    }
    command = [*(command or _fleetplane_command()), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this process, which then stops the server.
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        with console.status("starting the server"):
            _wait_until_healthy(process, started.base_url, log_path)
        console.print(f"server: {started.base_url}, pid {started.pid}{label}")
        yield started
    finally:
        _stop(process)


def _fleetplane_command() -> list[str]:
    """The `fleetplane` script of this interpreter's environment, or the same through -c."""
    script = Path(sys.executable).parent / "fleetplane"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from fleetplane.cli import app; app()"]


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


# --- machine ------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The child processes of a process (Linux); none elsewhere."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def machine_cpu_seconds() -> float | None:
    """CPU time all processes of the machine used since boot (Linux); None elsewhere."""
    try:
        values = _proc_stat_cpu()
    except OSError:
        return None
    busy = sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (no guests)
    return busy / os.sysconf("SC_CLK_TCK")


def _proc_stat_cpu() -> list[int]:
    """The machine-wide `cpu` line of /proc/stat, in clock ticks."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs in use over a short sample (Linux); None elsewhere."""

    def sample() -> tuple[int, int]:
        values = _proc_stat_cpu()
        return values[3] + values[4], sum(values)  # idle + iowait, all

    try:
        idle_before, total_before = sample()
        time.sleep(seconds)
        idle_after, total_after = sample()
    except OSError:
        return None
    total = total_after - total_before
    return 1 - (idle_after - idle_before) / total if total else None


def warn_if_busy(console: Console) -> None:
    share = _busy_share()
    if share is None:
        return
    console.print(f"machine busy before the run: {share:.0%} of {os.cpu_count()} CPUs")
    if share > BUSY_MACHINE_SHARE:
        console.print(
            "[bold yellow]Other work is using the CPUs: the figures will be lower than this "
            "machine can do.[/]"
        )


def machine_line() -> str:
    """`machine: N CPUs, model, Python x.y.z`, the first line of every benchmark's header."""
    return f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions(*packages: str) -> str:
    found = []
    for package in packages:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} missing")
    return ", ".join(found)


# --- report -------------------------------------------------------------------------------


def count_cell(count: int) -> str:
    return f"[bold red]{count:,}[/]" if count else "0"


# --- data ---------------------------------------------------------------------------------


@dataclass
class SeededChannel:
    provider: ProviderWithKey
    actor: Actor
    channel_id: str
    port: int


async def provider_with_channel(session: AsyncSession, name: str) -> SeededChannel:
    """A new provider (with its first key) and its Wialon IPS TCP channel on a device port
    (FLEETPLANE_DEVICE_PORTS, which the server started here reads too) free on this machine
    now and not taken by another provider's channel: the project's own code."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    provider = await create_provider(session, f"{name} {stamp}")
    actor = Actor(provider_id=provider.provider_id)
    policy = ChannelPolicy.of(Settings())
    taken = await channels.used_ports(session)
    port = next(
        port
        for port in policy.ports_from(FIRST_CHANNEL_PORT)
        if port not in taken and cannot_bind("0.0.0.0", port, Transport.TCP) is None
    )
    channel = await channels.create(
        session,
        actor,
        ChannelCreate(
            name=f"{name} Wialon IPS", protocol=Protocol.WIALON_IPS, transport=Transport.TCP,
            port=port,
        ),
        policy,
    )  # fmt: skip
    return SeededChannel(provider, actor, channel.id, port)


async def create_devices(
    session: AsyncSession,
    seeded: SeededChannel,
    unique_ids: list[str],
    console: Console,
    customer_id: str | None = None,
) -> list[str]:
    """Devices on the seeded channel (for `customer_id`, if given), with a progress bar."""
    columns = (TextColumn("creating devices"), BarColumn(), MofNCompleteColumn())
    ids = []
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("devices", total=len(unique_ids))
        for number, unique_id in enumerate(unique_ids):
            data = DeviceCreate(
                channel_id=seeded.channel_id,
                unique_id=unique_id,
                name=f"Bench tracker {number + 1:04d}",
                customer_id=customer_id,
            )
            ids.append((await devices.create(session, seeded.actor, data)).id)
            progress.advance(task)
    return ids
