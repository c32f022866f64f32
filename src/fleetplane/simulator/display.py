"""`fleetplane simulate` in a terminal: a live progress line and a closing summary."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fleetplane.simulator.runner import run_simulation
from fleetplane.simulator.stats import SimulationStats


def simulate_in_terminal(
    console: Console,
    host: str,
    port: int,
    devices: int,
    rate: float,
    duration: float | None,
    **options: Any,
) -> SimulationStats:
    """Runs a simulation until its duration is over or Ctrl-C, then prints a summary."""
    stats = asyncio.run(_simulate(console, host, port, devices, rate, duration, **options))
    console.print(summary_table(stats, f"{host}:{port}"))
    return stats


async def _simulate(
    console: Console,
    host: str,
    port: int,
    devices: int,
    rate: float,
    duration: float | None,
    **options: Any,
) -> SimulationStats:
    stop = asyncio.Event()
    _stop_on_first_interrupt(stop)
    with _progress(console) as progress:
        line = progress.add_task(
            f"{devices} trackers -> {host}:{port}", total=duration, **_fields(None, 0.0)
        )
        meter = _RateMeter(progress, line, duration is not None)
        return await run_simulation(
            host, port, devices, rate, duration, progress=meter.show, stop=stop, **options
        )


def _stop_on_first_interrupt(stop: asyncio.Event) -> None:
    """The first Ctrl-C ends the run gracefully (answers in flight are awaited); a second one
    interrupts at once."""
    loop = asyncio.get_running_loop()

    def stop_gracefully() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    # Without signal handlers (Windows, or not the main thread) Ctrl-C just interrupts.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop_gracefully)


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("[green]{task.fields[acked]:>9,} acked"),
        TextColumn("{task.fields[rate]:>8.1f} msg/s"),
        TextColumn("[red]{task.fields[errors]:>5,} errors"),
        TextColumn("{task.fields[connected]:>6,} online"),
        TimeElapsedColumn(),
        console=console,
    )


def _fields(stats: SimulationStats | None, rate: float) -> dict[str, Any]:
    if stats is None:
        return {"acked": 0, "rate": 0.0, "errors": 0, "connected": 0}
    return {
        "acked": stats.acked,
        "rate": rate,
        "errors": stats.errors + stats.rejected,
        "connected": stats.connected,
    }


class _RateMeter:
    """Updates the progress line; the rate shown is that of the last interval, not the mean."""

    def __init__(self, progress: Progress, line: TaskID, timed: bool) -> None:
        self._progress = progress
        self._line = line
        self._timed = timed
        self._previous = (0, 0.0)  # acked, elapsed

    def show(self, stats: SimulationStats) -> None:
        acked, elapsed = self._previous
        window = stats.elapsed - elapsed
        rate = (stats.acked - acked) / window if window > 0 else 0.0
        self._previous = (stats.acked, stats.elapsed)
        completed = stats.elapsed if self._timed else None
        self._progress.update(self._line, completed=completed, **_fields(stats, rate))


def summary_table(stats: SimulationStats, target: str) -> Table:
    table = Table(title=f"Simulation against {target}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("devices", f"{stats.devices:,}"),
        ("run time", f"{stats.elapsed:,.1f} s"),
        ("messages sent", f"{stats.sent:,}"),
        ("acknowledged", f"{stats.acked:,}"),
        ("rejected", f"{stats.rejected:,}"),
        ("acknowledged per second", f"{stats.ack_rate:,.1f}"),
        ("answer latency p50", _milliseconds(stats.latency_p50)),
        ("answer latency p99", _milliseconds(stats.latency_p99)),
        ("simulated disconnects", f"{stats.disconnects:,}"),
        ("reconnections", f"{stats.reconnects:,}"),
        ("black boxes sent", f"{stats.black_boxes:,}"),
        ("connection errors", f"{stats.errors:,}"),
        ("logins refused", f"{stats.login_refusals:,}"),
        ("left unsent in device memory", f"{stats.buffered:,}"),
        ("dropped (device memory full)", f"{stats.dropped:,}"),
    ]
    if stats.last_error:
        rows.append(("last error", stats.last_error))
    for what, value in rows:
        table.add_row(what, value)
    return table


def _milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.2f} ms"
