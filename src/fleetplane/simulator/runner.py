"""A fleet of simulated trackers against one Wialon IPS listener.

    stats = await run_simulation("127.0.0.1", 20332, devices=10, rate=10, duration=60)

Time: each device reports every `devices / rate` seconds of real time, so the fleet sends
`rate` messages per second in total, evenly spread. Simulated time runs `speedup` times faster,
so a short demo shows whole trips and parkings; device times are whole seconds, so each report
is at least one simulated second after the previous one (which can raise the effective
speedup at high per-device rates). A run with a duration starts its simulated clock in the past
by default, so that its last reports carry about the current time and no device time lies in
the future; an open-ended compressed run starts now and moves ahead of the wall clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from fleetplane.simulator.route import RIGA, Fix, driver_keys, vehicle_fixes
from fleetplane.simulator.stats import SimulationStats
from fleetplane.simulator.tracker import Tracker, TrackerSettings

DEFAULT_IMEI_PREFIX = "86000000000"
DEFAULT_SEED = 1
IMEI_DIGITS = 15

ProgressCallback = Callable[[SimulationStats], None]


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often each device reports, in real and in simulated seconds."""

    real_interval: float
    simulated_interval: int

    @property
    def speedup(self) -> float:
        """Simulated seconds per real second, after rounding to whole device seconds."""
        return self.simulated_interval / self.real_interval


def schedule(devices: int, rate: float, speedup: float) -> Schedule:
    if devices < 1 or rate <= 0 or speedup <= 0:
        raise ValueError("devices, rate and speedup must be positive")
    real_interval = devices / rate
    return Schedule(real_interval, max(1, round(real_interval * speedup)))


def device_imeis(prefix: str, count: int) -> list[str]:
    """`prefix` followed by the device number, zero-padded to 15 digits in all.

    The default prefix gives 860000000000000, 860000000000001, ...: the demo's devices. When the
    numbers do not fit, every IMEI grows by the same number of digits, so none can collide.
    """
    if not prefix.isdigit():
        raise ValueError("an IMEI prefix is made of digits")
    width = max(IMEI_DIGITS - len(prefix), len(str(count - 1)), 1)
    return [f"{prefix}{number:0{width}d}" for number in range(count)]


def device_reports(
    seed: int | str,
    index: int,
    start: datetime,
    simulated_interval: int,
    centre: tuple[float, float] = RIGA,
) -> Iterator[Fix]:
    """The reports device `index` of a run sends, in order (the same for the same seed)."""
    return vehicle_fixes(f"{seed}:{index}", start, simulated_interval, centre)


def device_driver_keys(seed: int | str, index: int) -> tuple[str, str]:
    """The iButton codes device `index` of a run reports: its usual driver's, then the relief
    driver's (who takes over at some parkings)."""
    return driver_keys(f"{seed}:{index}")


def default_start(duration: float | None, plan: Schedule) -> datetime:
    """When a run's first report is stamped: its last one then carries about the current time
    (and a slowed-down run, with speedup below 1, starts now rather than in the future)."""
    now = datetime.now(UTC).replace(microsecond=0)
    if duration is None:
        return now
    return now - timedelta(seconds=round(max(0.0, duration * (plan.speedup - 1))))


async def run_simulation(
    host: str,
    port: int,
    devices: int,
    rate: float,
    duration: float | None = None,
    *,
    imei_prefix: str = DEFAULT_IMEI_PREFIX,
    password: str | None = None,
    progress: ProgressCallback | None = None,
    seed: int | str = DEFAULT_SEED,
    speedup: float = 10.0,
    disconnect_probability: float = 0.002,
    offline_reports: tuple[int, int] = (5, 30),
    start_time: datetime | None = None,
    centre: tuple[float, float] = RIGA,
    stop: asyncio.Event | None = None,
    progress_interval: float = 0.5,
    answer_timeout: float = 10.0,
) -> SimulationStats:
    """Drives `devices` trackers at `rate` messages per second in total, then returns totals.

    Runs for `duration` seconds, or until `stop` is set, or until cancelled. A duration or
    `stop` ends it gracefully (every packet in flight gets its answer first); cancellation
    closes the connections at once. `progress` is called every `progress_interval` seconds
    with the totals so far.
    """
    plan = schedule(devices, rate, speedup)
    start = start_time or default_start(duration, plan)
    if stop is None:
        stop = asyncio.Event()
    template = TrackerSettings(
        host,
        port,
        imei="",
        password=password,
        send_interval=plan.real_interval,
        disconnect_probability=disconnect_probability,
        offline_reports=offline_reports,
        answer_timeout=answer_timeout,
    )
    trackers = [
        Tracker(
            replace(template, imei=imei, first_report_delay=index * plan.real_interval / devices),
            device_reports(seed, index, start, plan.simulated_interval, centre),
            random.Random(f"{seed}:{index}:link"),
            stop,
        )
        for index, imei in enumerate(device_imeis(imei_prefix, devices))
    ]
    loop = asyncio.get_running_loop()
    began = loop.time()

    def totals() -> SimulationStats:
        return SimulationStats.collect((t.counters for t in trackers), loop.time() - began)

    def report() -> None:
        if progress is not None:
            progress(totals())

    tasks = [asyncio.create_task(t.run(), name=f"tracker {t.settings.imei}") for t in trackers]
    try:
        await _wait(stop, tasks, duration, report, progress_interval)
    except asyncio.CancelledError:
        await _cancel(tasks)
        raise
    stop.set()
    await _finish(tasks, grace=answer_timeout + 1)
    report()  # the final figures, as the summary will show them
    return totals()


async def _wait(
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    duration: float | None,
    report: Callable[[], None],
    interval: float,
) -> None:
    """Until the duration is over or `stop` is set, reporting progress on the way."""
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while not stop.is_set():
        left = interval if deadline is None else min(interval, deadline - loop.time())
        if left <= 0:
            return
        try:
            async with asyncio.timeout(left):
                await stop.wait()
        except TimeoutError:
            pass
        report()
        if any(task.done() for task in tasks):
            return  # a tracker failed unexpectedly: stop and let _finish raise its error


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Lets trackers finish their exchanges, cancels any still busy after `grace` seconds, and
    re-raises the first unexpected error of a tracker."""
    _, pending = await asyncio.wait(tasks, timeout=grace)
    await _cancel(list(pending))
    failures = [task.exception() for task in tasks if not task.cancelled()]
    for failure in failures:
        if failure is not None:
            raise failure


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
