"""The storage benchmark behind `fleetplane bench storage`: bytes on disk per stored message.

It creates a fresh PostgreSQL database (dropping a previous run's database of the same name
only with `--recreate`), runs the migrations, seeds a provider, a Wialon IPS channel and its
devices with the project's own code, and stores N realistic messages the way the server does:
simulated trackers' fixes (fleetplane.simulator: position, speed, course, altitude,
satellites, HDOP, inputs, fuel, supply voltage, odometer, engine hours, the driver's key while
the engine runs) are encoded as Wialon IPS `#D#` packets, or `#B#` black boxes after a coverage
loss, decoded by the protocol decoder, turned into rows by `messages.service.to_row` and written
by `messages.service.insert_rows` in batches that mix every device, as the pipeline's do.

Then the column store (messages as packed columns per device-day, for analytics) is brought up
to date as the server's builder would at the newest stored message: each device's days noted,
as the intake notes them, and every day that is over packed (a day is over once a later day of
its device has messages; each device's last day is still open).

Then VACUUM ANALYZE, and the bytes per message of the heap, the free space and visibility maps,
TOAST, the indexes, the column store and the total (pg_relation_size, pg_indexes_size,
pg_total_relation_size), with the average width of each column of the messages table. The
same messages go into a temporary SQLite file too, measured with dbstat, for information (the
budget is PostgreSQL's).
"""

import asyncio
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fleetplane.cli import load_bench
from fleetplane.config import Settings, normalise_database_url
from fleetplane.core.db import (
    create_engine,
    create_system_engine,
    migrate,
    run_platform_work,
    system_session,
)
from fleetplane.core.db import session_factory as make_sessions
from fleetplane.devices import service as devices
from fleetplane.ingest.protocols.wialon_ips import decode_black_box, decode_extended_data
from fleetplane.messages import column_builder, column_store
from fleetplane.messages import service as messages
from fleetplane.simulator.encoding import encode_black_box, encode_data
from fleetplane.simulator.route import vehicle_fixes
from fleetplane.simulator.runner import device_imeis
from fleetplane.telemetry import Message

support = load_bench("support")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/fleetplane_bench_storage"
BUDGET_BYTES = 120  # DESIGN.md: storage per message on PostgreSQL
INTERVAL_SECONDS = 10  # between a tracker's reports
OUTAGE_CHANCE = 0.01  # per report: coverage is lost and a backlog follows as a black box
OUTAGE_REPORTS = (5, 30)
LIVE_DELAY_SECONDS = (0.2, 1.5)  # device time to receive time of a live report
BATCH_ROWS = 5000  # as the pipeline's batches
SEED = 20240501
IMEI_PREFIX = "3563"
START = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    database: str
    rows: int
    parts: dict[str, int]  # bytes: heap, maps, TOAST, indexes...
    total: int
    columns: dict[str, float]  # average bytes per value

    def per_row(self, size: int) -> float:
        return size / self.rows if self.rows else 0.0


def main(
    message_count: int,
    device_count: int,
    database_url: str | None,
    recreate: bool,
    sqlite: bool,
    console: Console,
) -> int:
    url = database_url or DEFAULT_DATABASE_URL
    console.print(
        f"[bold]Storage per message[/]: {message_count:,} messages from {device_count} "
        f"simulated trackers, one report every {INTERVAL_SECONDS} s"
    )
    results = [asyncio.run(_postgres_run(url, message_count, device_count, recreate, console))]
    if sqlite:
        results.append(asyncio.run(_sqlite_run(message_count, device_count, console)))
    for sizes in results:
        _print_sizes(console, sizes)
    total = results[0].per_row(results[0].total)
    verdict = "[green]within[/]" if total <= BUDGET_BYTES else "[red]over[/]"
    console.print(f"PostgreSQL total: {total:.1f} B/msg, {verdict} the {BUDGET_BYTES} B budget")
    return 0


# --- PostgreSQL ---------------------------------------------------------------------------


async def _postgres_run(
    url: str, message_count: int, device_count: int, recreate: bool, console: Console
) -> Sizes:
    async_url = normalise_database_url(url)
    await _fresh_database(async_url, recreate, console)
    settings = Settings(database_url=async_url)
    await _store(settings, message_count, device_count, console)
    await _pack_columns(settings, console)
    engine = create_async_engine(async_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            console.print("VACUUM ANALYZE messages, message_columns")
            await connection.execute(text("VACUUM ANALYZE messages"))
            await connection.execute(text("VACUUM ANALYZE message_columns"))
            return await _postgres_sizes(connection, make_url(async_url).database or "")
    finally:
        await engine.dispose()


async def _fresh_database(url: str, recreate: bool, console: Console) -> None:
    """Creates the database; an existing one is dropped first only with `--recreate`."""
    target = make_url(url)
    name = target.database or ""
    engine = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists and not recreate:
                raise SystemExit(
                    f"database {name} exists: the benchmark needs a fresh one "
                    "(pass --recreate to drop it, or name another with --database-url)"
                )
            if exists:
                console.print(f"dropping database {name}")
                await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


async def _postgres_sizes(connection: Any, database: str) -> Sizes:
    rows = await connection.scalar(text("SELECT count(*) FROM messages"))
    sizes = (
        await connection.execute(
            text(
                "SELECT pg_relation_size(c.oid, 'main'),"
                " pg_relation_size(c.oid, 'fsm') + pg_relation_size(c.oid, 'vm'),"
                " coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),"
                " pg_indexes_size(c.oid), pg_total_relation_size(c.oid)"
                " FROM pg_class c WHERE c.oid = 'messages'::regclass"
            )
        )
    ).one()
    heap, maps, toast, indexes, total = sizes
    parts = {"heap": heap, "free space + visibility maps": maps, "TOAST": toast}
    parts["indexes"] = indexes
    columns = await connection.scalar(text("SELECT pg_total_relation_size('message_columns')"))
    parts["column store (message_columns, all forks)"] = columns
    widths = await _column_widths(connection)
    return Sizes(f"PostgreSQL ({database})", rows, parts, total + columns, widths)


async def _column_widths(connection: Any) -> dict[str, float]:
    names = list(
        (
            await connection.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'messages' ORDER BY ordinal_position"
                )
            )
        ).scalars()
    )
    averages = ", ".join(f'avg(pg_column_size("{name}"))' for name in names)
    values = (
        await connection.execute(
            text(f"SELECT {averages}, avg(pg_column_size(messages.*)) FROM messages")
        )
    ).one()
    widths = dict(zip([*names, "whole row (tuple data)"], values, strict=True))
    return {name: float(value or 0) for name, value in widths.items()}


# --- SQLite -------------------------------------------------------------------------------


async def _sqlite_run(message_count: int, device_count: int, console: Console) -> Sizes:
    with tempfile.TemporaryDirectory(prefix="fleetplane-storage-") as directory:
        path = Path(directory) / "bench.db"
        settings = Settings(database_url=f"sqlite+aiosqlite:///{path}")
        await _store(settings, message_count, device_count, console)
        await _pack_columns(settings, console)
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                await connection.commit()
                await connection.exec_driver_sql("VACUUM")
                await connection.exec_driver_sql("ANALYZE")
                return await _sqlite_sizes(connection, path)
        finally:
            await engine.dispose()


async def _sqlite_sizes(connection: Any, path: Path) -> Sizes:
    rows = await connection.scalar(text("SELECT count(*) FROM messages"))
    try:
        result = await connection.execute(
            text(
                "SELECT name, sum(pgsize) FROM dbstat"
                " WHERE name IN ('messages', 'message_columns')"
                " OR name IN (SELECT name FROM sqlite_master"
                "  WHERE type = 'index' AND tbl_name IN ('messages', 'message_columns'))"
                " GROUP BY name"
            )
        )
        by_name = {name: size for name, size in result}
    except Exception:  # dbstat is a compile-time option of SQLite
        size = path.stat().st_size
        return Sizes("SQLite (whole file, no dbstat)", rows, {"file": size}, size, {})
    table = by_name.pop("messages", 0)
    columns = by_name.pop("message_columns", 0) + by_name.pop("ix_message_columns_stale", 0)
    columns += sum(size for name, size in list(by_name.items()) if "message_columns" in name)
    indexes = sum(size for name, size in by_name.items() if "message_columns" not in name)
    parts = {"table": table, "indexes": indexes, "column store (message_columns)": columns}
    return Sizes("SQLite (dbstat)", rows, parts, table + indexes + columns, {})


# --- storing ------------------------------------------------------------------------------


async def _pack_columns(settings: Settings, console: Console) -> None:
    """The column store as the server keeps it, at the newest stored message: every device's
    days noted, the days that are over packed."""
    engine = create_system_engine(settings)
    sessions = make_sessions(engine)
    try:
        async with system_session(sessions) as session:
            spans = await session.execute(
                text(
                    "SELECT device_seq, min(device_time), max(device_time) FROM messages"
                    " GROUP BY device_seq"
                )
            )
            days = []
            for seq, first, last in spans:
                first, last = _as_time(first), _as_time(last)
                day = column_store.day_of(first)
                while day <= last:
                    days.append((seq, day))
                    day += column_store.DAY
            await column_store.note_days(session, days)
        if not days:
            return
        began = time.perf_counter()
        packed = await column_builder.build_once(sessions, limit=len(days), pause_seconds=0)
        seconds = time.perf_counter() - began
        console.print(
            f"column store: {len(days)} device-days noted, {packed} packed in {seconds:.0f} s"
        )
    finally:
        await engine.dispose()


def _as_time(value: Any) -> datetime:
    """A device time as SQL hands back min/max: a datetime, or SQLite's text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _store(
    settings: Settings, message_count: int, device_count: int, console: Console
) -> None:
    await migrate(settings)
    device_ids = await run_platform_work(settings, lambda s: _seed(s, device_count, console))
    engine = create_system_engine(settings)
    sessions = make_sessions(engine)
    try:
        async with system_session(sessions) as session:
            keys = await _device_keys(session, device_ids)
        columns = (
            TextColumn("storing messages"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        began = time.perf_counter()
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("messages", total=message_count)
            for batch in _batches(keys, message_count):
                async with system_session(sessions) as session:
                    await messages.insert_rows(session, batch)
                progress.advance(task, len(batch))
        seconds = time.perf_counter() - began
        console.print(f"stored {message_count:,} messages in {seconds:.0f} s")
    finally:
        await engine.dispose()


async def _seed(session: AsyncSession, device_count: int, console: Console) -> list[str]:
    """A provider, a Wialon IPS channel (never started) and its devices: the project's code."""
    seeded = await support.provider_with_channel(session, "Storage benchmark")
    imeis = device_imeis(IMEI_PREFIX, device_count)
    return await support.create_devices(session, seeded, imeis, console)


async def _device_keys(session: AsyncSession, device_ids: list[str]) -> list[Any]:
    """What `to_row` takes for each device, as the pipeline gets it."""
    seqs = await devices.seqs_of(session, device_ids)
    return [seqs[device_id] for device_id in device_ids]


def _batches(keys: list[Any], message_count: int) -> Iterator[list[dict[str, Any]]]:
    """Rows in batches of about BATCH_ROWS: each device's next packet in turn, as many
    connections' packets meet in one of the pipeline's batches."""
    streams = [tracker_packets(number) for number in range(len(keys))]
    batch: list[dict[str, Any]] = []
    left = message_count
    while left > 0:
        for key, stream in zip(keys, streams, strict=True):
            for message in next(stream)[:left]:
                batch.append(messages.to_row(key, message))
                left -= 1
            if len(batch) >= BATCH_ROWS or left == 0:
                yield batch
                batch = []
            if left == 0:
                return


def tracker_packets(device_number: int) -> Iterator[list[Message]]:
    """One tracker's packets, decoded: mostly single live reports, now and then a black box
    after a coverage loss."""
    rng = random.Random(SEED + device_number)
    fixes = vehicle_fixes(SEED + device_number, START, INTERVAL_SECONDS)
    while True:
        if rng.random() < OUTAGE_CHANCE:
            backlog = [next(fixes) for _ in range(rng.randint(*OUTAGE_REPORTS))]
            received_at = backlog[-1].time + timedelta(seconds=rng.uniform(1, INTERVAL_SECONDS))
            yield decode_black_box(_body(encode_black_box(backlog)), True, received_at).messages
        else:
            fix = next(fixes)
            received_at = fix.time + timedelta(seconds=rng.uniform(*LIVE_DELAY_SECONDS))
            yield decode_extended_data(_body(encode_data(fix)), True, received_at).messages


def _body(packet: bytes) -> bytes:
    """`#D#body\\r\\n` -> body (with its CRC), as the session hands it to the decoder."""
    return packet.split(b"#", 2)[2].removesuffix(b"\r\n")


# --- report -------------------------------------------------------------------------------


def _print_sizes(console: Console, sizes: Sizes) -> None:
    table = Table(title=f"{sizes.database}: {sizes.rows:,} messages", box=box.SIMPLE)
    table.add_column("part")
    table.add_column("bytes", justify="right")
    table.add_column("B/msg", justify="right")
    for name, size in sizes.parts.items():
        table.add_row(name, f"{size:,}", f"{sizes.per_row(size):.1f}")
    table.add_row("[bold]total[/]", f"{sizes.total:,}", f"[bold]{sizes.per_row(sizes.total):.1f}")
    console.print(table)
    if sizes.columns:
        widths = Table(title="average width per value (pg_column_size)", box=box.SIMPLE)
        widths.add_column("column")
        widths.add_column("bytes", justify="right")
        for name, width in sizes.columns.items():
            widths.add_row(name, f"{width:.1f}")
        console.print(widths)
