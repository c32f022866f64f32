"""The columns benchmark behind `fleetplane bench columns`: one device-year of messages read as
numpy columns (`messages.columns.read`), what trip detection and reports start from.

On a temporary SQLite file, and with `--database-url` on a fresh PostgreSQL database too:

1. runs the migrations and seeds a provider, a Wialon IPS channel and one device;
2. stores a device-year of 10 s reports (`--days` days, 8,640 messages each): a simulated week
   of the storage benchmark's tracker (position, speed, course, altitude, satellites, HDOP,
   inputs, fuel, supply voltage, odometer, engine hours, the driver's key; black boxes after
   coverage losses), decoded by the protocol decoder and made rows by `messages.to_row` once,
   then written again and again a week later, by `messages.insert_rows` in batches of 5,000
   (the bulk writer: the stored rows are those of a year of reports, made in a minute);
3. notes each day as the intake does when a device's messages reach it, and runs the column
   store's builder over the year (`column_builder.build_once`), timed;
4. reads the whole year with `columns.read` (parameters ign, fuel, odometer), `--repeats`
   times, each in a transaction of its own;
5. reads `--reference-days` days from the rows alone, two ways: as messages
   (`messages.stored_since` then `columns.from_messages`, what `read` did before the column
   store) and decoded straight into columns (`columns.read_rows`, what the builder and `read`
   do for a day without a chunk); checks that both and `read` give the same arrays there,
   and scales the times to the year;
6. prints the bytes per message of the messages table and of the column store (PostgreSQL:
   `pg_total_relation_size` after VACUUM ANALYZE; SQLite: `dbstat` after VACUUM).
"""

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from fleetplane.cli import load_bench
from fleetplane.config import Settings, normalise_database_url
from fleetplane.core.db import (
    create_engine,
    create_system_engine,
    migrate,
    run_platform_work,
    session_factory,
    system_session,
)
from fleetplane.devices import service as devices
from fleetplane.messages import column_builder, column_store, columns
from fleetplane.messages import service as messages

support = load_bench("support")
storage = load_bench("storage")

REPORTS_PER_DAY = 8640  # one every 10 s
WEEK = timedelta(days=7)
BATCH_ROWS = 5000
PARAMS = ("ign", "fuel", "odometer")
TARGET_SECONDS = 2.0  # the read of a device-year; trips for it, read included: DESIGN.md, 3 s


@dataclass(frozen=True)
class Figures:
    database: str
    messages: int
    seed_seconds: float
    build_seconds: float
    reads: list[float]
    reference_messages: int
    reference_seconds: float
    rows_seconds: float
    same: bool
    message_bytes: int
    column_bytes: int

    @property
    def read_seconds(self) -> float:
        return statistics.median(self.reads)

    @property
    def reference_year_seconds(self) -> float:
        return self.reference_seconds / self.reference_messages * self.messages

    @property
    def rows_year_seconds(self) -> float:
        return self.rows_seconds / self.reference_messages * self.messages


def main(
    days: int,
    repeats: int,
    reference_days: int,
    database_url: str | None,
    recreate: bool,
    console: Console,
) -> int:
    console.print(
        f"[bold]Messages as columns[/]: {days} days of 10 s reports of one device "
        f"({days * REPORTS_PER_DAY:,} messages), read {repeats} times"
    )
    console.print(support.machine_line())
    support.warn_if_busy(console)
    results = []
    with support.work_dir("fleetplane-columns-") as directory:
        url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        results.append(asyncio.run(_run(url, "SQLite", days, repeats, reference_days, console)))
        results[-1] = _with_sqlite_bytes(results[-1], directory / "bench.db")
    if database_url:
        url = normalise_database_url(database_url)
        asyncio.run(storage._fresh_database(url, recreate, console))
        results.append(asyncio.run(_run(url, "PostgreSQL", days, repeats, reference_days, console)))
    _print(console, results)
    return 0 if all(figures.same for figures in results) else 1


async def _run(
    url: str, name: str, days: int, repeats: int, reference_days: int, console: Console
) -> Figures:
    settings = Settings(database_url=url)
    await migrate(settings)
    seq = await run_platform_work(settings, lambda session: _seed(session, console))
    engine = create_system_engine(settings)
    sessions = session_factory(engine)
    try:
        began = time.perf_counter()
        first, until, count = await _store_year(sessions, seq, days, console)
        seeded = time.perf_counter() - began
        built = await _build(sessions, seq, first, until, console)
        reads = [await _read(sessions, seq, until) for _ in range(repeats)]
        reference = await _reference(sessions, seq, first, reference_days)
        message_bytes, column_bytes = 0, 0
        if settings.is_postgres:
            message_bytes, column_bytes = await _postgres_bytes(url)
        return Figures(name, count, seeded, built, reads, *reference, message_bytes, column_bytes)
    finally:
        await engine.dispose()


async def _seed(session: AsyncSession, console: Console) -> int:
    seeded = await support.provider_with_channel(session, "Columns benchmark")
    ids = await support.create_devices(session, seeded, ["356300000000001"], console)
    return (await devices.seqs_of(session, ids))[ids[0]]


def _week_rows(seq: int) -> list[dict[str, Any]]:
    """A week of one simulated tracker's reports as rows."""
    packets = storage.tracker_packets(0)
    found: list[Any] = []
    while len(found) < 7 * REPORTS_PER_DAY:
        found += next(packets)
    return [messages.to_row(seq, message) for message in found[: 7 * REPORTS_PER_DAY]]


async def _store_year(
    sessions: async_sessionmaker[AsyncSession], seq: int, days: int, console: Console
) -> tuple[datetime, datetime, int]:
    """(first and last device time, how many) of the messages stored."""
    week = _week_rows(seq)
    total = days * REPORTS_PER_DAY
    weeks, index = divmod(total - 1, len(week))
    last = week[index]["device_time"] + WEEK * weeks
    progress = Progress(
        TextColumn("storing messages"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    with progress:
        task = progress.add_task("messages", total=total)
        for batch in _batches(week, total):
            async with system_session(sessions) as session:
                await messages.insert_rows(session, batch)
            progress.advance(task, len(batch))
    return week[0]["device_time"], last, total


def _batches(week: list[dict[str, Any]], total: int) -> Iterator[list[dict[str, Any]]]:
    """The week's rows again and again, a week later each time, until `total`."""
    batch: list[dict[str, Any]] = []
    for number in range(total):
        weeks, index = divmod(number, len(week))
        row = week[index]
        batch.append({**row, "device_time": row["device_time"] + WEEK * weeks})
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


async def _build(
    sessions: async_sessionmaker[AsyncSession],
    seq: int,
    first: datetime,
    last: datetime,
    console: Console,
) -> float:
    """Notes the days as the intake does, then times the builder packing them."""
    start = column_store.day_of(first)
    days = (column_store.day_of(last) - start).days + 1
    async with system_session(sessions) as session:
        await column_store.note_days(
            session, [(seq, start + timedelta(days=day)) for day in range(days)]
        )
    console.print(f"packing {days} days (column_builder.build_once)")
    began = time.perf_counter()
    await column_builder.build_once(sessions, limit=days, pause_seconds=0)
    return time.perf_counter() - began


async def _read(sessions: async_sessionmaker[AsyncSession], seq: int, until: datetime) -> float:
    async with system_session(sessions) as session:
        began = time.perf_counter()
        await columns.read(session, seq, after=None, until=until, params=PARAMS)
        return time.perf_counter() - began


async def _reference(
    sessions: async_sessionmaker[AsyncSession], seq: int, first: datetime, days: int
) -> tuple[int, float, float, bool]:
    """(messages, seconds as messages, seconds decoded straight into columns, whether the two
    and `read` give the same) over the first `days` days."""
    after = first - timedelta(microseconds=1)
    until = column_store.day_of(first) + timedelta(days=days, microseconds=-1)
    async with system_session(sessions) as session:
        began = time.perf_counter()
        stored = await messages.stored_since(session, seq, after=after, until=until, limit=10**9)
        as_messages = columns.from_messages(stored, PARAMS)
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        rows = await columns.read_rows(session, seq, after=after, until=until, params=PARAMS)
        rows_seconds = time.perf_counter() - began
        read = await columns.read(session, seq, after=after, until=until, params=PARAMS)
    same = read.equals(as_messages) and rows.equals(as_messages)
    return len(rows), seconds, rows_seconds, same


async def _postgres_bytes(url: str) -> tuple[int, int]:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("VACUUM ANALYZE messages"))
            await connection.execute(text("VACUUM ANALYZE message_columns"))
            sizes = await connection.execute(
                text(
                    "SELECT pg_total_relation_size('messages'),"
                    " pg_total_relation_size('message_columns')"
                )
            )
            message_bytes, column_bytes = sizes.one()
            return int(message_bytes), int(column_bytes)
    finally:
        await engine.dispose()


def _with_sqlite_bytes(figures: Figures, path: Path) -> Figures:
    """`dbstat` sizes of the two tables and their indexes, after VACUUM."""

    async def measure() -> tuple[int, int]:
        engine = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                await connection.commit()
                await connection.exec_driver_sql("VACUUM")
                sizes = {}
                for table in ("messages", "message_columns"):
                    sizes[table] = await connection.scalar(
                        text(
                            "SELECT sum(pgsize) FROM dbstat WHERE name = :table OR name IN"
                            " (SELECT name FROM sqlite_master WHERE type = 'index'"
                            " AND tbl_name = :table)"
                        ),
                        {"table": table},
                    )
                return int(sizes["messages"] or 0), int(sizes["message_columns"] or 0)
        finally:
            await engine.dispose()

    message_bytes, column_bytes = asyncio.run(measure())
    return Figures(
        **{**figures.__dict__, "message_bytes": message_bytes, "column_bytes": column_bytes}
    )


def _print(console: Console, results: list[Figures]) -> None:
    table = Table(title="one device-year as columns", box=box.SIMPLE)
    table.add_column("")
    for figures in results:
        table.add_column(figures.database, justify="right")

    def row(label: str, cell: Any) -> None:
        table.add_row(label, *[cell(figures) for figures in results])

    row("messages", lambda f: f"{f.messages:,}")
    row("seeding (bulk writer)", lambda f: f"{f.seed_seconds:.1f} s")
    row("packing (builder)", lambda f: f"{f.build_seconds:.1f} s")
    row("packing per message", lambda f: f"{f.build_seconds / f.messages * 1e6:.1f} µs")
    row("[bold]read (median)", lambda f: f"[bold]{f.read_seconds:.2f} s")
    row("read (all runs)", lambda f: " ".join(f"{r:.2f}" for r in f.reads))
    row("read per message", lambda f: f"{f.read_seconds / f.messages * 1e6:.2f} µs")
    row(
        "rows as messages (reference)",
        lambda f: f"{f.reference_seconds:.2f} s / {f.reference_messages:,} msgs",
    )
    row("rows as messages, scaled to the year", lambda f: f"{f.reference_year_seconds:.1f} s")
    row(
        "rows as columns (read_rows)",
        lambda f: f"{f.rows_seconds:.2f} s / {f.reference_messages:,} msgs",
    )
    row("rows as columns, scaled to the year", lambda f: f"{f.rows_year_seconds:.1f} s")
    row("same arrays as the rows", lambda f: "yes" if f.same else "[red]NO")
    row("messages table B/msg", lambda f: f"{f.message_bytes / f.messages:.1f}")
    row("column store B/msg", lambda f: f"{f.column_bytes / f.messages:.2f}")
    row(
        "[bold]total B/msg",
        lambda f: f"[bold]{(f.message_bytes + f.column_bytes) / f.messages:.1f}",
    )
    console.print(table)
    for figures in results:
        verdict = "[green]within[/]" if figures.read_seconds < TARGET_SECONDS else "[red]over[/]"
        console.print(
            f"{figures.database}: read {figures.read_seconds:.2f} s, {verdict} the "
            f"{TARGET_SECONDS:.0f} s target"
        )
