"""A month's mileage report for a fleet, through the real server: `fleetplane bench
mileage-report` (#9).

    fleetplane bench mileage-report [--devices 1000] [--days 30]
                                    [--database-url postgresql://...]

It migrates a database (a temporary SQLite file, and then the PostgreSQL database named with
`--database-url`, to which it adds a provider), seeds a provider, a channel and one customer
with the devices, trips and analytics modules, `--devices` devices, and for each device
`--days` days of intervals as the trips step stores them (`trips.service.interval_row`
written with the bulk writer, a transaction per few devices): trips of 10-70 minutes with
stops of 10-80 s at lights inside them, and parkings of 10 minutes to 2.7 hours between them,
about what `fleetplane bench trips` finds in a year of 10 s messages (per day about 11.5
trips, 80 stops, 11.5 parkings); each trip keeps a real detector checkpoint, as stored ones
do. The last parking of each device is open.

Then it starts `fleetplane serve` (one worker) on that database and asks it, over HTTP, for
`GET /module/analytics/reports/mileage` of all the customer's devices over the month, with
`group_by=none` and `group_by=day`, as JSON, CSV and XLSX (three runs each: best and median),
and once each a PNG, and the `trips` and `utilization` reports by day as JSON. Apart, in this
process, the parts of the JSON month by day: the intervals read
(`trips.service.interval_columns`), the figures computed from them (`mileage_of` and the
rows), the answer shaped (`report.shape`) and written as JSON.
"""

import asyncio
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.analytics import periods as periods_of
from fleetplane.analytics.periods import GroupBy
from fleetplane.analytics.report import (
    ReportDevice,
    ReportParameters,
    period_rows,
    shape,
)
from fleetplane.analytics.trip_reports import MILEAGE, mileage_of
from fleetplane.cli import load_bench
from fleetplane.config import Settings, normalise_database_url
from fleetplane.core import bulk
from fleetplane.core.db import (
    create_system_engine,
    migrate,
    run_platform_work,
    session_factory,
    system_session,
)
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate
from fleetplane.devices import service as devices
from fleetplane.messages.columns import Columns, time_us
from fleetplane.steps.contract import StepDevice
from fleetplane.trips import service as trips
from fleetplane.trips.detector import DetectorSettings, DetectorState, Interval, Kind, detect
from fleetplane.trips.models import TripInterval

support = load_bench("support")
trips_bench = load_bench("trips")

START = datetime(2026, 10, 1, tzinfo=UTC)
SEED = 20261001
RUNS = 3
DEVICES_PER_TRANSACTION = 20
# The design's wish for the fleet's month by day as JSON; above it the run says so.
TARGET_SECONDS = 2.0
REPORT_PATH = "/module/analytics/reports/{report}"
MINUTE_US = 60_000_000
SECOND_US = 1_000_000


@dataclass(frozen=True)
class Case:
    label: str
    report: str
    group_by: str
    format: str
    runs: int = RUNS


CASES = (
    Case("mileage, month", "mileage", "none", "json"),
    Case("mileage, by day", "mileage", "day", "json"),
    Case("mileage, month", "mileage", "none", "csv"),
    Case("mileage, by day", "mileage", "day", "csv"),
    Case("mileage, month", "mileage", "none", "xlsx"),
    Case("mileage, by day", "mileage", "day", "xlsx"),
    Case("mileage, by day", "mileage", "day", "png", runs=1),
    Case("trips, by day", "trips", "day", "json", runs=1),
    Case("utilization, by day", "utilization", "day", "json", runs=1),
)


@dataclass(frozen=True)
class Answer:
    case: Case
    seconds: list[float]
    size: int
    rows: int | None  # JSON only

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Figures:
    database: str
    devices: int
    intervals: dict[str, int]
    seed_seconds: float
    loads: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    api_key: str
    provider_id: str
    customer_id: str
    devices: list[StepDevice]


def main(device_count: int, days: int, database_url: str | None, console: Console) -> int:
    console.print(
        f"[bold]Monthly mileage report[/], {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{device_count:,} devices x {days} days of intervals, reports over HTTP\n"
        f"{support.machine_line()}\n"
        f"server: {support.versions('fastapi', 'uvicorn', 'sqlalchemy', 'xlsxwriter', 'numpy')}"
    )
    figures = []
    try:
        with support.cleanup_on_terminate():
            with support.work_dir("fleetplane-mileage-") as folder:
                url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
                figures.append(_run("SQLite", url, device_count, days, folder, console))
            if database_url:
                url = normalise_database_url(database_url)
                with support.work_dir("fleetplane-mileage-") as folder:
                    figures.append(_run("PostgreSQL", url, device_count, days, folder, console))
    except support.BenchError as error:
        console.print(f"[bold red]Benchmark not run:[/] {error}")
        return 2
    _report(console, figures, days)
    return 0


def _run(
    name: str, url: str, device_count: int, days: int, folder: Path, console: Console
) -> Figures:
    console.print(f"[bold]{name}[/]")
    fleet, intervals, seed_seconds = asyncio.run(_seed(url, device_count, days, console))
    figures = Figures(name, device_count, intervals, seed_seconds)
    end = START + timedelta(days=days)
    figures.loads.append(_load())
    support.warn_if_busy(console)
    with support.server(url, folder, console, {}, ", one worker") as server:
        headers = {"x-platform-api-key": fleet.api_key, "x-platform-cid": fleet.customer_id}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=600) as client:
            for case in CASES:
                answer = _measure(client, case, end)
                figures.answers.append(answer)
                console.print(
                    f"{case.label} {case.format}: best {answer.best:.2f} s, median "
                    f"{answer.median:.2f} s, {answer.size / 1e6:.2f} MB"
                )
    figures.parts = asyncio.run(_parts(url, fleet, end))
    figures.loads.append(_load())
    return figures


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --- data ---------------------------------------------------------------------------------


async def _seed(
    url: str, device_count: int, days: int, console: Console
) -> tuple[Fleet, dict[str, int], float]:
    settings = Settings(database_url=url)
    await migrate(settings)
    fleet = await run_platform_work(settings, lambda s: _seed_fleet(s, device_count, console))
    engine = create_system_engine(settings)
    sessions = session_factory(engine)
    try:
        began = time.perf_counter()
        counts = await _store_intervals(sessions, fleet.devices, days, console)
        seconds = time.perf_counter() - began
    finally:
        await engine.dispose()
    total = sum(counts.values())
    console.print(
        f"stored {total:,} intervals in {seconds:.0f} s ("
        + ", ".join(f"{count:,} {kind}s" for kind, count in counts.items())
        + ")"
    )
    return fleet, counts, seconds


async def _seed_fleet(session: AsyncSession, device_count: int, console: Console) -> Fleet:
    """Provider (its first key has every permission), channel, one customer with the trips
    and analytics modules, its devices: the project's own code."""
    seeded = await support.provider_with_channel(session, "Mileage report benchmark")
    customer = await customers.create(
        session,
        seeded.actor,
        CustomerCreate(name="Fleet", modules=["devices", "trips", "analytics"]),
    )
    unique_ids = [f"35200000{number:07d}" for number in range(device_count)]
    ids = await support.create_devices(session, seeded, unique_ids, console, customer.id)
    seqs = await devices.seqs_of(session, ids)
    provider_id = seeded.provider.provider_id
    found = [StepDevice(device_id, seqs[device_id], provider_id, customer.id) for device_id in ids]
    return Fleet(seeded.provider.api_key or "", provider_id, customer.id, found)


async def _store_intervals(
    sessions: async_sessionmaker[AsyncSession],
    fleet: Sequence[StepDevice],
    days: int,
    console: Console,
) -> dict[str, int]:
    """Each device's intervals as the trips step writes them, a few devices a transaction."""
    checkpoint = _checkpoint()
    counts = {kind.value: 0 for kind in Kind}
    columns = (TextColumn("storing intervals"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("devices", total=len(fleet))
        for first in range(0, len(fleet), DEVICES_PER_TRANSACTION):
            batch = fleet[first : first + DEVICES_PER_TRANSACTION]
            rows = [
                trips.interval_row(device, interval)
                for device in batch
                for interval in device_intervals(device.seq, days, checkpoint)
            ]
            async with system_session(sessions) as session:
                connection = await session.connection()
                await bulk.write_rows(connection, TripInterval.__table__, rows)
            for row in rows:
                counts[row["kind"]] += 1
            progress.advance(task, len(batch))
    return counts


def _checkpoint() -> DetectorState:
    """A trip's checkpoint as the detector makes it (on the trips benchmark's vehicle), for
    every trip: the stored rows are as wide as real ones."""
    count = 2 * 360  # two hours of 10 s messages
    lat, lon, speed = trips_bench.vehicle_year(count)
    nan = np.full(count, np.nan)
    zeros = np.zeros(count, dtype=np.int64)
    columns = Columns(
        time_us=time_us(START) + np.arange(count, dtype=np.int64) * 10 * SECOND_US,
        lat=lat, lon=lon, speed=speed, altitude=nan, course=nan, satellites=np.full(count, 9.0),
        hdop=nan, inputs=zeros, outputs=zeros, filtered=np.zeros(count, dtype=np.bool_),
        params={},
    )  # fmt: skip
    detection = detect(columns, DetectorSettings())
    return next(i.checkpoint for i in detection.intervals if i.checkpoint is not None)


def device_intervals(seq: int, days: int, checkpoint: DetectorState) -> Iterator[Interval]:
    """Parkings and trips taking turns from half a day before the month to its end (the last
    parking open), stops inside the trips."""
    rng = np.random.default_rng(SEED + seq)
    at = time_us(START) - 12 * 60 * MINUTE_US
    end = time_us(START + timedelta(days=days))
    lat, lon = 56.95 + rng.normal(0, 0.05), 24.1 + rng.normal(0, 0.08)
    while True:
        parked = int(rng.integers(10, 160)) * MINUTE_US
        if at + parked >= end:
            yield Interval(Kind.PARKING, at, end, lat, lon, lat, lon, 0, None, True)
            return
        yield Interval(Kind.PARKING, at, at + parked, lat, lon, lat, lon, 0, None, False)
        at += parked
        length = int(rng.integers(10, 70)) * MINUTE_US
        yield from _stops(rng, at, length, lat, lon)
        distance_mm = int(length / SECOND_US * rng.uniform(6, 16) * 1000)
        end_lat, end_lon = lat + rng.normal(0, 0.02), lon + rng.normal(0, 0.03)
        max_speed = float(np.round(rng.uniform(50, 110)))
        yield Interval(
            Kind.TRIP, at, at + length, lat, lon, end_lat, end_lon, distance_mm, max_speed,
            False, checkpoint,
        )  # fmt: skip
        at += length
        lat, lon = end_lat, end_lon


def _stops(
    rng: np.random.Generator, start: int, length: int, lat: float, lon: float
) -> Iterator[Interval]:
    """The stops of a trip: 3-11 (about seven), 10-80 s at lights, spread over it."""
    count = int(rng.integers(3, 12))
    for number in range(count):
        at = start + (number + 1) * length // (count + 1)
        stopped = int(rng.integers(10, 80)) * SECOND_US
        yield Interval(Kind.STOP, at, at + stopped, lat, lon, lat, lon, 0, 0.0, False)


# --- the answers --------------------------------------------------------------------------


def _measure(client: httpx.Client, case: Case, end: datetime) -> Answer:
    params = {
        "from": START.isoformat(),
        "to": end.isoformat(),
        "group_by": case.group_by,
        "format": case.format,
    }
    seconds = []
    for _ in range(case.runs):
        began = time.perf_counter()
        response = client.get(REPORT_PATH.format(report=case.report), params=params)
        seconds.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise support.BenchError(
                f"{case.label} {case.format} answered {response.status_code}: {response.text[:300]}"
            )
    rows = len(response.json()["rows"]) if case.format == "json" else None
    return Answer(case, seconds, len(response.content), rows)


async def _parts(url: str, fleet: Fleet, end: datetime) -> dict[str, list[float]]:
    """The JSON month by day in its parts, in this process, each timed RUNS times."""
    engine = create_system_engine(Settings(database_url=url))
    sessions = session_factory(engine)
    parts: dict[str, list[float]] = {}
    try:
        async with system_session(sessions) as session:
            customer = await customers.get(session, fleet.provider_id, fleet.customer_id)
            windows = await devices.history_windows(
                session, fleet.provider_id, fleet.customer_id, None
            )
        report_devices = [
            ReportDevice(w.device.id, w.device.name, w.device.seq, w.since) for w in windows
        ]
        periods = periods_of.split(START, end, GroupBy.DAY, customer.timezone)
        ids = [device.id for device in report_devices]
        for _ in range(RUNS):
            async with system_session(sessions) as session:
                began = time.perf_counter()
                found = await trips.interval_columns(
                    session, fleet.provider_id, fleet.customer_id, ids,
                    since=periods.start, until=periods.end, kind=Kind.TRIP.value,
                )  # fmt: skip
                lap = _lap(parts, "read (interval_columns)", began)
            rows = [
                row
                for device in report_devices
                for row in period_rows(device, periods, mileage_of(found[device.id], periods))
            ]
            lap = _lap(parts, "figures (mileage_of, rows)", lap)
            shaped = shape(MILEAGE, periods, ReportParameters(), report_devices, rows)
            lap = _lap(parts, "shape (rounding, totals)", lap)
            orjson.dumps(shaped.as_json(), option=orjson.OPT_UTC_Z)
            _lap(parts, "JSON", lap)
    finally:
        await engine.dispose()
    return parts


def _lap(parts: dict[str, list[float]], name: str, began: float) -> float:
    """Notes the seconds since `began` under `name`; now, where the next part begins."""
    now = time.perf_counter()
    parts.setdefault(name, []).append(now - began)
    return now


# --- report -------------------------------------------------------------------------------


def _report(console: Console, figures: list[Figures], days: int) -> None:
    for f in figures:
        kinds = ", ".join(f"{count:,} {kind}s" for kind, count in f.intervals.items())
        console.print(
            f"\n[bold]{f.database}[/]: {f.devices:,} devices, {kinds}, stored in "
            f"{f.seed_seconds:.0f} s; load average (1, 5, 15 min) before the reports "
            f"{f.loads[0]}, after {f.loads[-1]}"
        )
        table = Table(title=f"{f.database}: reports over HTTP, {days} days", box=box.SIMPLE)
        for column in ("report", "format", "rows", "best s", "median s", "runs", "size MB"):
            table.add_column(column, justify="left" if column == "report" else "right")
        for a in f.answers:
            table.add_row(
                a.case.label, a.case.format, "" if a.rows is None else f"{a.rows:,}",
                f"{a.best:.2f}", f"{a.median:.2f}", str(len(a.seconds)), f"{a.size / 1e6:.2f}",
            )  # fmt: skip
        console.print(table)
        parts = Table(title=f"{f.database}: mileage by day as JSON, its parts", box=box.SIMPLE)
        for column in ("part", "best s", "median s"):
            parts.add_column(column, justify="left" if column == "part" else "right")
        for name, seconds in f.parts.items():
            parts.add_row(name, f"{min(seconds):.2f}", f"{statistics.median(seconds):.2f}")
        console.print(parts)
        by_day = next(a for a in f.answers if a.case == CASES[1])
        verdict = "within" if by_day.best < TARGET_SECONDS else "[bold yellow]over[/]"
        console.print(
            f"{f.database}: the month by day as JSON took {by_day.best:.2f} s, {verdict} "
            f"{TARGET_SECONDS:.0f} s"
        )
