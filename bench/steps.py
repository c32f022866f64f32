"""The registered pipeline steps' rounds on their own: server CPU per message and per round.

    fleetplane bench steps [--devices 200] [--messages 5] [--rounds 20] [--step NAME ...]
                           [--geofences G --automations A]

Seeds a provider, a Wialon IPS channel (never started) and devices in a temporary SQLite file,
then repeats what the server does under load, without network or protocol: the intake stores
every device's next messages in one batch (`ingest.pipeline.MessageStore`, which hands them to
the step runner), and the step runner takes one pass over the devices (`StepRunner.run_pass`:
its reads, each step's transaction, claims and marks). Only the pass is timed: the CPU time of
the whole process (the database driver's thread included), over the messages of the round.

`--messages 5` is a round at 1,000 msg/s over 200 devices (one pass a second), `--messages 50`
one at 10,000 msg/s. The vehicles drive on, so the trips step's usual round (a trip going on)
is what is measured. Nothing else runs meanwhile; other work on the machine still counts.

With `--geofences`/`--automations` the devices are a customer's with that many geofences and
automations (bench/rules.py), and drive over the geofences' region.
"""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import registry
from fleetplane.cli import load_bench
from fleetplane.config import Settings
from fleetplane.core.db import create_system_engine, migrate, run_platform_work, session_factory
from fleetplane.core.events import EventHub
from fleetplane.core.files import FileStore
from fleetplane.ingest.pipeline import MessageStore
from fleetplane.steps.runner import StepRunner
from fleetplane.telemetry import Message

support = load_bench("support")
rules_bench = load_bench("rules")

WARM_UP_ROUNDS = 3
_START = datetime(2026, 11, 1, tzinfo=UTC)


def main(
    device_count: int,
    message_count: int,
    rounds: int,
    steps: list[str],
    console: Console,
    rules: tuple[int, int] | None = None,
) -> int:
    """`rules`: (geofences, automations) of the devices' customer; None: no customer."""
    known = [step.name for step in registry.STEPS]
    unknown = sorted(set(steps) - set(known))
    if unknown:
        console.print(f"[bold red]No registered step named {', '.join(unknown)}[/] ({known})")
        return 2
    chosen = steps or known
    with support.work_dir("fleetplane-bench-steps-") as work_dir:
        url = f"sqlite+aiosqlite:///{work_dir / 'bench.db'}"
        cpu, wall = asyncio.run(
            _run(url, work_dir, device_count, message_count, rounds, chosen, rules)
        )
    messages = device_count * message_count * rounds
    console.print(
        f"Fleetplane pipeline steps benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{support.machine_line()}\n"
        f"steps: {', '.join(chosen)}; {rounds} rounds of {device_count} devices x "
        f"{message_count} messages"
        + (f"; a customer's, with {rules[0]:,} geofences and {rules[1]:,} automations"
           if rules else "")
    )  # fmt: skip
    table = Table()
    for column in ("CPU ms/round", "CPU µs/msg", "wall ms/round"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{cpu / rounds * 1e3:.1f}", f"{cpu / messages * 1e6:.1f}", f"{wall / rounds * 1e3:.1f}"
    )
    console.print(table)
    return 0


async def _run(
    url: str,
    work_dir: Path,
    device_count: int,
    message_count: int,
    rounds: int,
    step_names: list[str],
    rules: tuple[int, int] | None,
) -> tuple[float, float]:
    settings = Settings(database_url=url)
    await migrate(settings)
    device_ids = await run_platform_work(settings, lambda s: _seed(s, device_count, rules))
    # With rules, the vehicles drive over their geofences' region (about 15 km across).
    rows = 15 if rules else device_count
    engine = create_system_engine(settings)
    sessions = session_factory(engine)
    runner = StepRunner(sessions, [s for s in registry.STEPS if s.name in step_names])
    store = MessageStore(sessions, EventHub(), FileStore(work_dir / "files"), step_runner=runner)
    cpu = wall = 0.0
    store.start()
    try:
        for number in range(WARM_UP_ROUNDS + rounds):
            first = number * message_count
            await asyncio.gather(
                *(
                    store.store(device_id, _messages(index % rows, first, message_count))
                    for index, device_id in enumerate(device_ids)
                )
            )
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            await runner.run_pass()
            if number >= WARM_UP_ROUNDS:
                cpu += time.process_time() - started_cpu
                wall += time.perf_counter() - started_wall
    finally:
        await store.stop()
        await engine.dispose()
    return cpu, wall


async def _seed(
    session: AsyncSession, device_count: int, rules: tuple[int, int] | None
) -> list[str]:
    seeded = await support.provider_with_channel(session, "Steps benchmark")
    quiet = Console(quiet=True)
    customer_id = None
    if rules is not None:
        customer_id = await rules_bench.customer_with_rules(session, seeded.actor, *rules, quiet)
    imeis = [f"35{number:013d}" for number in range(device_count)]
    found: list[str] = await support.create_devices(session, seeded, imeis, quiet, customer_id)
    return found


def _messages(device: int, first: int, count: int) -> list[Message]:
    """A vehicle driving on at about 40 km/h, a message a second."""
    found = []
    for second in range(first, first + count):
        at = _START + timedelta(seconds=second)
        found.append(
            Message(
                device_time=at,
                received_at=at + timedelta(milliseconds=150),
                lat=56.9 + device * 0.01 + second * 0.0001,
                lon=24.1 + second * 0.0001,
                altitude=12.0,
                speed=40.0 + second % 3,
                course=90.0,
                satellites=9,
                hdop=0.9,
                inputs=1,
                outputs=0,
                params={"pwr_ext": 12.5, "gsm": 3},
            )
        )
    return found
