"""The drivers' pipeline step on its own: server CPU per message and statements per round.

    fleetplane bench drivers-step [--devices 200] [--messages 50] [--rounds 20]

Seeds a customer with devices, each with two drivers, in a temporary SQLite file (or the
PostgreSQL database given), then gives the step rounds as the runner does (every device with
its next messages, each message with a driver key, in a transaction of its own): rounds where
every device's driver stays, and rounds where every device changes driver once. Prints the CPU
time per message and the statements per round of each kind. Nothing else runs meanwhile, so
the figures are the step's own.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    writer_session,
)
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate
from fleetplane.drivers import service as drivers
from fleetplane.drivers.processor import DriverKeyStep
from fleetplane.drivers.schemas import DriverCreate
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message

support = load_bench("support")


@dataclass
class Fleet:
    devices: list[StepDevice]
    keys: dict[str, tuple[str, str]]  # device id -> its two drivers' key codes


@dataclass
class Figures:
    kind: str
    rounds: int
    messages: int
    cpu_seconds: float
    wall_seconds: float
    statements: dict[str, int]

    def per_message_us(self, seconds: float) -> float:
        return seconds / self.messages * 1e6


def main(
    device_count: int, message_count: int, rounds: int, database_url: str | None, console: Console
) -> int:
    with support.work_dir("fleetplane-bench-drivers-") as work_dir:
        url = database_url or f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        figures = asyncio.run(_run(url, device_count, message_count, rounds))
    _print(console, url, device_count, message_count, figures)
    return 0


async def _run(url: str, device_count: int, message_count: int, rounds: int) -> list[Figures]:
    settings = Settings(database_url=url)
    await migrate(settings)
    fleet = await run_platform_work(settings, lambda s: _seed(s, device_count))
    engine = create_system_engine(settings)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    sessions = session_factory(engine)
    step = DriverKeyStep()
    clock = _clock()
    figures = []
    try:
        for kind, change in (("driver stays", False), ("driver changes", True)):
            await _round(sessions, step, fleet, clock, message_count, change)  # warm-up
            statements.clear()
            cpu = wall = 0.0
            for _ in range(rounds):
                spent = await _round(sessions, step, fleet, clock, message_count, change)
                cpu, wall = cpu + spent[0], wall + spent[1]
            counts: dict[str, int] = {}
            for verb in statements:
                counts[verb] = counts.get(verb, 0) + 1
            total = rounds * device_count * message_count
            figures.append(Figures(kind, rounds, total, cpu, wall, counts))
    finally:
        await engine.dispose()
    return figures


async def _seed(session: AsyncSession, device_count: int) -> Fleet:
    seeded = await support.provider_with_channel(session, "Drivers step benchmark")
    actor = Actor(provider_id=seeded.provider.provider_id)
    customer = await customers.create(
        session, actor, CustomerCreate(name="Fleet", modules=["devices", "drivers"])
    )
    found: list[StepDevice] = []
    keys: dict[str, tuple[str, str]] = {}
    for number in range(device_count):
        data = DeviceCreate(
            channel_id=seeded.channel_id,
            unique_id=f"35000000{number:07d}",
            name=f"Truck {number}",
            customer_id=customer.id,
        )
        device = await devices.create(session, actor, data)
        pair = (f"01{number:06d}AA000000", f"01{number:06d}BB000000")
        for shift, code in enumerate(pair):
            body = DriverCreate(name=f"Driver {number}-{shift}", key_codes=[code])
            await drivers.create(session, actor, customer.id, body)
        keys[device.id] = pair
        found.append(StepDevice(device.id, 0, seeded.provider.provider_id, customer.id))
    return Fleet(found, keys)


def _clock() -> Iterator[datetime]:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    while True:
        moment += timedelta(seconds=10)
        yield moment


async def _round(
    sessions: Any,
    step: DriverKeyStep,
    fleet: Fleet,
    clock: Iterator[datetime],
    message_count: int,
    change: bool,
) -> tuple[float, float]:
    """Gives the step a round; the CPU and wall seconds it took (its messages are made
    before)."""
    times = [next(clock) for _ in range(message_count)]
    batches = []
    for device in fleet.devices:
        first, second = fleet.keys[device.id]
        messages = [
            _message(at, second if change and n >= message_count // 2 else first)
            for n, at in enumerate(times)
        ]
        batches.append(DeviceMessages(device, messages))
    cpu, wall = time.process_time(), time.perf_counter()
    async with writer_session(sessions) as session:
        await step.process(session, batches)
    spent = (time.process_time() - cpu, time.perf_counter() - wall)
    if change:  # back to the first driver (not counted), so that the next round changes again
        last = next(clock)
        back = [
            DeviceMessages(device, [_message(last, fleet.keys[device.id][0])])
            for device in fleet.devices
        ]
        async with writer_session(sessions) as session:
            await step.process(session, back)
    return spent


def _message(at: datetime, key: str) -> Message:
    return Message(
        device_time=at,
        received_at=at,
        lat=56.95,
        lon=24.1,
        speed=40.0,
        inputs=1,
        outputs=0,
        params={"fuel": 40.5, "driver_key": key},
    )


def _print(
    console: Console, url: str, device_count: int, message_count: int, figures: list[Figures]
) -> None:
    console.print(
        f"Fleetplane drivers step benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{support.machine_line()}\n"
        f"database: {url.split(':', 1)[0]}; rounds of {device_count} devices x "
        f"{message_count} messages, each with a driver key"
    )
    table = Table()
    for column in ("rounds", "messages", "CPU µs/msg", "wall µs/msg", "statements per round"):
        table.add_column(column, justify="right")
    for figure in figures:
        per_round = ", ".join(
            f"{verb} {count / figure.rounds:.1f}"
            for verb, count in sorted(figure.statements.items())
        )
        table.add_row(
            figure.kind,
            f"{figure.messages:,}",
            f"{figure.per_message_us(figure.cpu_seconds):.2f}",
            f"{figure.per_message_us(figure.wall_seconds):.2f}",
            per_round,
        )
    console.print(table)
    console.print(
        "CPU: this process while the step runs a round, its transaction included (the "
        "database driver; SQLite works in this process too). In a 'driver changes' round "
        "every device changes driver once; its statements include those of the uncounted "
        "transaction that changes them back."
    )
