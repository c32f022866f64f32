"""What an interval's odometer and driver cost: the trips step's rounds and a page of the list.

    fleetplane bench interval-details [--devices 200] [--messages 6] [--rounds 30]
                                      [--database-url postgresql://...]

Seeds a customer with devices (each with a driver assigned by hand) in a temporary SQLite file
(or the PostgreSQL database given), stores two hours of each device's messages (the trips
benchmark's vehicle: trips at 20-90 km/h, stops at lights, parkings) and runs the counters and
trips steps over them. Then:

- **rounds**: each device's next `--messages` messages are stored and given to the counters
  step and then to the trips step, as the runner does, each in a transaction of its own; timed
  is the trips step, and apart, the part of it that works out the odometers of the intervals
  it writes (`trips.odometers.interval_odometers`), with its statements;
- **page**: a page of 100 intervals of the customer as the list reads it (`fetch_page`), then
  shaped with their drivers (`shape_intervals`: one query), and for comparison the odometers
  of that page computed when read instead of kept (`devices.counters.odometers_at` with no
  messages in hand: checkpoints and stored messages), and the same for a page of one device.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit.service import Actor
from fleetplane.cli import load_bench
from fleetplane.config import Settings
from fleetplane.core.db import (
    create_system_engine,
    migrate,
    run_platform_work,
    session_factory,
    system_session,
    writer_session,
)
from fleetplane.core.pagination import PageParams, fetch_page
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate
from fleetplane.devices import counters
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate
from fleetplane.drivers import service as drivers
from fleetplane.drivers.schemas import AssignmentCreate, DriverCreate
from fleetplane.messages import service as messages
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message
from fleetplane.trips import processor, service
from fleetplane.trips.models import TripInterval

support = load_bench("support")
trips_bench = load_bench("trips")

HISTORY_MESSAGES = 720  # two hours, one every 10 s
HISTORY_ROUND = 360
LONG_MESSAGES = 17_280  # two days of one more device, for a page of one device's intervals
LONG_ROUND = 2000
PAGE = 100


@dataclass
class Fleet:
    provider_id: str
    customer_id: str
    devices: list[StepDevice]
    long: StepDevice  # not in the timed rounds
    start: datetime  # of the others' messages


@dataclass
class Spent:
    cpu: float = 0.0
    wall: float = 0.0
    statements: dict[str, int] = field(default_factory=dict)

    def add(self, cpu: float, wall: float) -> None:
        self.cpu += cpu
        self.wall += wall


def main(
    device_count: int, message_count: int, rounds: int, database_url: str | None, console: Console
) -> int:
    support.warn_if_busy(console)
    with support.work_dir("fleetplane-bench-intervals-") as work_dir:
        url = database_url or f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        figures = asyncio.run(_run(url, device_count, message_count, rounds))
    _print(console, url, device_count, message_count, rounds, figures)
    return 0


async def _run(url: str, device_count: int, message_count: int, rounds: int) -> dict[str, Any]:
    settings = Settings(database_url=url)
    await migrate(settings)
    start = datetime.now(UTC).replace(microsecond=0, second=0) - timedelta(days=30)
    fleet = await run_platform_work(settings, lambda s: _seed(s, device_count, start))
    total = HISTORY_MESSAGES + message_count * rounds
    lat, lon, speed = trips_bench.vehicle_year(max(total + 997 * device_count, LONG_MESSAGES))
    tracks = {
        device.id: [
            _message(start + timedelta(seconds=10 * n), lat, lon, speed, n + 997 * number)
            for n in range(total)
        ]
        for number, device in enumerate(fleet.devices)
    }
    long_start = start - timedelta(seconds=10 * LONG_MESSAGES)
    tracks[fleet.long.id] = [
        _message(long_start + timedelta(seconds=10 * n), lat, lon, speed, n)
        for n in range(LONG_MESSAGES)
    ]
    engine = create_system_engine(settings)
    sessions = session_factory(engine)
    counting: list[bool] = [False]
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if counting[0]:
            statements.append(statement.split(None, 1)[0].upper())

    async with system_session(sessions) as session:
        seqs = await devices.seqs_of(session, [d.id for d in (*fleet.devices, fleet.long)])
    fleet.devices, [fleet.long] = (
        [StepDevice(d.id, seqs[d.id], d.provider_id, d.customer_id) for d in group]
        for group in (fleet.devices, [fleet.long])
    )
    odometers = Spent()
    original = processor.interval_odometers

    async def timed(*args: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        counting[0] = True
        try:
            return await original(*args)
        finally:
            counting[0] = False
            odometers.add(time.process_time() - cpu, time.perf_counter() - wall)

    processor.interval_odometers = timed  # type: ignore[assignment]
    step = processor.TripDetectorStep(odometers_at=counters.odometers_at)
    counter_step = counters.DeviceCountersStep()
    trips = Spent()
    try:
        for first in range(0, LONG_MESSAGES, LONG_ROUND):
            await _round(sessions, [fleet.long], tracks, first, LONG_ROUND, counter_step, step)
        for first in range(0, HISTORY_MESSAGES, HISTORY_ROUND):
            await _round(sessions, fleet.devices, tracks, first, HISTORY_ROUND, counter_step, step)
        odometers.cpu = odometers.wall = 0.0
        statements.clear()
        for number in range(rounds):
            first = HISTORY_MESSAGES + number * message_count
            spent = await _round(
                sessions, fleet.devices, tracks, first, message_count, counter_step, step
            )
            trips.add(*spent)
        for verb in statements:
            odometers.statements[verb] = odometers.statements.get(verb, 0) + 1
        page = await _page(sessions, fleet)
    finally:
        processor.interval_odometers = original  # type: ignore[assignment]
        await engine.dispose()
    return {"trips": trips, "odometers": odometers, "page": page}


async def _seed(session: AsyncSession, device_count: int, start: datetime) -> Fleet:
    seeded = await support.provider_with_channel(session, "Interval details benchmark")
    actor = Actor(provider_id=seeded.provider.provider_id)
    customer = await customers.create(
        session, actor, CustomerCreate(name="Fleet", modules=["devices", "drivers", "trips"])
    )
    found = []
    for number in range(device_count + 1):
        data = DeviceCreate(
            channel_id=seeded.channel_id,
            unique_id=f"35100000{number:07d}",
            name=f"Truck {number}",
            customer_id=customer.id,
        )
        device = await devices.create(session, actor, data)
        driver = await drivers.create(
            session, actor, customer.id, DriverCreate(name=f"Driver {number}", key_codes=[])
        )
        since = start - timedelta(days=3)
        assignment = AssignmentCreate(driver_id=driver.id, device_id=device.id, start=since)
        await drivers.create_assignment(session, actor, customer.id, assignment)
        found.append(StepDevice(device.id, 0, seeded.provider.provider_id, customer.id))
    return Fleet(seeded.provider.provider_id, customer.id, found[:-1], found[-1], start)


def _message(at: datetime, lat: Any, lon: Any, speed: Any, index: int) -> Message:
    return messages.stored_form(
        Message(
            device_time=at,
            received_at=at,
            lat=float(lat[index]),
            lon=float(lon[index]),
            speed=float(speed[index]),
            satellites=9,
            inputs=0,
            outputs=0,
        )
    )


async def _round(
    sessions: Any,
    devices_: list[StepDevice],
    tracks: dict[str, list[Message]],
    first: int,
    count: int,
    counter_step: counters.DeviceCountersStep,
    step: processor.TripDetectorStep,
) -> tuple[float, float]:
    """Stores each device's next messages, runs the counters step and then the trips step
    on them; the trips step's CPU and wall seconds."""
    batches = [DeviceMessages(d, tracks[d.id][first : first + count]) for d in devices_]
    async with writer_session(sessions) as session:
        rows = [messages.to_row(b.device.seq, m) for b in batches for m in b.messages]
        await messages.insert_rows(session, rows)
    async with writer_session(sessions) as session:
        await counter_step.process(session, batches)
    cpu, wall = time.process_time(), time.perf_counter()
    async with writer_session(sessions) as session:
        await step.process(session, batches)
    return time.process_time() - cpu, time.perf_counter() - wall


async def _page(sessions: Any, fleet: Fleet) -> dict[str, float]:
    """Seconds for a page of PAGE intervals: read, shaped with drivers, and the odometers
    computed at read time instead, for the customer's devices and for one device."""
    found: dict[str, float] = {}
    async with system_session(sessions) as session:
        statement = service.intervals_query(
            fleet.provider_id, fleet.customer_id, since=fleet.start + timedelta(minutes=1)
        )
        rows, _ = await _timed(
            found,
            "read",
            lambda: fetch_page(session, statement, TripInterval.id, PageParams(PAGE, None)),
        )
        await _timed(
            found,
            "drivers",
            lambda: service.shape_intervals(session, fleet.customer_id, rows, None, None),
        )
        found["items"] = len(rows)
        found["devices"] = len({row.device_id for row in rows})
        await _timed(found, "at read time", lambda: _read_time_odometers(session, fleet, rows))
        one = fleet.long.id
        single = service.intervals_query(fleet.provider_id, fleet.customer_id, device_ids=[one])
        rows, _ = await fetch_page(session, single, TripInterval.id, PageParams(PAGE, None))
        found["one device items"] = len(rows)
        await _timed(
            found, "one device at read time", lambda: _read_time_odometers(session, fleet, rows)
        )
    return found


async def _timed(found: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    answer = await work()
    found[name] = time.perf_counter() - began
    return answer


async def _read_time_odometers(session: AsyncSession, fleet: Fleet, rows: list[Any]) -> int:
    """Option (b): the page's odometers from the counters' checkpoints and stored messages."""
    by_device = {device.id: device for device in (*fleet.devices, fleet.long)}
    times: dict[str, set[datetime]] = {}
    for row in rows:
        times.setdefault(row.device_id, set()).update((row.start_time, row.end_time))
    questions = [(by_device[device_id], asked, [], []) for device_id, asked in times.items()]
    return len(await counters.odometers_at(session, questions))


def _print(
    console: Console,
    url: str,
    device_count: int,
    message_count: int,
    rounds: int,
    figures: dict[str, Any],
) -> None:
    trips, odometers, page = figures["trips"], figures["odometers"], figures["page"]
    console.print(
        f"Fleetplane interval details benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{support.machine_line()}\n"
        f"database: {url.split(':', 1)[0]}; {rounds} rounds of {device_count} devices x "
        f"{message_count} messages after {HISTORY_MESSAGES} each"
    )
    table = Table(title="the trips step, per round")
    for column in ("part", "CPU ms", "wall ms", "statements per round"):
        table.add_column(column, justify="right")
    table.add_row(
        "whole step", f"{trips.cpu / rounds * 1e3:.1f}", f"{trips.wall / rounds * 1e3:.1f}", ""
    )
    per_round = ", ".join(
        f"{verb} {count / rounds:.2f}" for verb, count in sorted(odometers.statements.items())
    )
    table.add_row(
        "of which odometers",
        f"{odometers.cpu / rounds * 1e3:.1f}",
        f"{odometers.wall / rounds * 1e3:.1f}",
        per_round,
    )
    console.print(table)
    table = Table(
        title=f"a page of intervals ({page['items']:.0f} of {page['devices']:.0f} devices)"
    )
    for column in ("what", "ms"):
        table.add_column(column, justify="right")
    for name in ("read", "drivers", "at read time"):
        table.add_row(name, f"{page[name] * 1e3:.1f}")
    table.add_row(
        f"one device ({page['one device items']:.0f} items) at read time",
        f"{page['one device at read time'] * 1e3:.1f}",
    )
    console.print(table)
    console.print(
        "'drivers': shaping the page with its drivers (one query). 'at read time': the "
        "page's odometers computed from the counters' checkpoints and stored messages instead "
        "of read from the rows (the option not taken)."
    )
