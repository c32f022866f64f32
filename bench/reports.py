"""The reports' own work, without the database: each report's computation over one device's
messages as columns, and over a device's trips and parkings as the trips module hands them
over, and each answer format for a big answer. Run: `fleetplane bench reports`.

The messages are made up (10 s apart, ignition, speed and fuel level drawing random walks),
and so are the intervals (trips and parkings taking turns over the same span of time);
reading them from the database is the columns read's cost, measured by its own benchmark."""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from fleetplane.analytics import charts, exports
from fleetplane.analytics.fuel import fuel_of
from fleetplane.analytics.message_reports import engine_hours_of, idling_of, speeding_of
from fleetplane.analytics.periods import GroupBy, split
from fleetplane.analytics.report import ReportDevice, ReportParameters, ReportRow, shape
from fleetplane.analytics.reports import REPORTS
from fleetplane.analytics.trip_reports import mileage_of, parkings_of, trips_of, utilization_of
from fleetplane.messages.columns import Columns, time_us
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.trips.service import IntervalColumns

START = datetime(2025, 12, 1, tzinfo=UTC)
IGNITION = SensorDefinition("sen_i", "dev", "Ignition", SensorType.IGNITION, "ign")
FUEL = SensorDefinition("sen_f", "dev", "Fuel", SensorType.FUEL_LEVEL, "fuel")


def made_up_columns(count: int) -> Columns:
    rng = np.random.default_rng(0)
    nan = np.full(count, np.nan)
    zeros = np.zeros(count, dtype=np.int64)
    return Columns(
        time_us=time_us(START) + np.arange(count, dtype=np.int64) * 10_000_000,
        lat=56.95 + np.cumsum(rng.normal(0, 1e-4, count)),
        lon=24.1 + np.cumsum(rng.normal(0, 1e-4, count)),
        speed=np.clip(rng.normal(50, 40, count), 0, 160),
        altitude=nan, course=nan, satellites=nan, hdop=nan,
        inputs=zeros, outputs=zeros, filtered=np.zeros(count, dtype=np.bool_),
        params={
            "ign": (rng.random(count) > 0.3).astype(np.float64),
            "fuel": np.clip(400 - np.cumsum(rng.random(count) * 1e-3) % 400, 0, 400)
            + rng.normal(0, 0.5, count),
        },
    )  # fmt: skip


def made_up_intervals(end_us: int) -> tuple[IntervalColumns, IntervalColumns]:
    """Trips of 5-60 minutes and parkings of 5 minutes to 3 hours, taking turns until
    `end_us`: (trips, parkings)."""
    rng = np.random.default_rng(2)
    count = int((end_us - time_us(START)) / 1e6 / (32 * 60 + 97 * 60)) + 2
    lengths = np.empty(2 * count, dtype=np.int64)
    lengths[0::2] = rng.integers(5 * 60, 60 * 60, count) * 1_000_000
    lengths[1::2] = rng.integers(5 * 60, 3 * 3600, count) * 1_000_000
    edges = time_us(START) + np.concatenate(([0], np.cumsum(lengths)))
    keep = edges[:-1] < end_us

    def kind(first: int) -> IntervalColumns:
        start, end = edges[:-1][first::2], edges[1:][first::2]
        inside = keep[first::2]
        start, end = start[inside], end[inside]
        return IntervalColumns(
            start, end, (end - start) / 1e6 * rng.uniform(5, 25, len(start)),
            rng.uniform(30, 130, len(start)), np.zeros(len(start), dtype=np.bool_),
        )  # fmt: skip

    return kind(0), kind(1)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = work()
    return time.perf_counter() - began, result


def main(messages: int, devices: int, console: Console) -> int:
    columns = made_up_columns(messages)
    end = START + timedelta(seconds=10 * messages)
    periods = split(START, end, GroupBy.DAY, "Europe/Riga")
    parameters = ReportParameters()
    table = Table(title=f"One device, {messages:,} messages, {len(periods)} days")
    table.add_column("report")
    table.add_column("seconds", justify="right")
    table.add_column("messages/s", justify="right")
    for name, compute, sensor in (
        ("engine_hours", engine_hours_of, IGNITION),
        ("idling", idling_of, IGNITION),
        ("speeding", speeding_of, None),
        ("fuel", fuel_of, FUEL),
    ):
        seconds, _ = timed(lambda: compute(columns, sensor, periods, parameters))  # noqa: B023
        table.add_row(name, f"{seconds:.2f}", f"{messages / seconds:,.0f}")
    console.print(table)

    trips, parkings = made_up_intervals(time_us(end))
    on_trips = Table(
        title=f"One device, {len(trips):,} trips and {len(parkings):,} parkings, "
        f"{len(periods)} days"
    )
    on_trips.add_column("report")
    on_trips.add_column("seconds", justify="right")
    on_trips.add_column("intervals/s", justify="right")
    for name, of_intervals, intervals in (
        ("mileage", mileage_of, trips),
        ("trips", trips_of, trips),
        ("parkings", parkings_of, parkings),
        ("utilization (time in trips)", utilization_of, trips),
    ):
        seconds, _ = timed(lambda: of_intervals(intervals, periods))  # noqa: B023
        on_trips.add_row(name, f"{seconds:.4f}", f"{len(intervals) / seconds:,.0f}")
    console.print(on_trips)

    rng = np.random.default_rng(1)
    fleet = [ReportDevice(f"dev_{n}", f"Truck {n:03d}", n, None) for n in range(devices)]
    rows = [
        ReportRow(device, index, {"engine_seconds": float(rng.integers(0, 30_000))})
        for device in fleet
        for index in range(len(periods))
    ]
    answers = Table(title=f"engine_hours answer: {devices} devices x {len(periods)} days")
    answers.add_column("format")
    answers.add_column("seconds", justify="right")
    answers.add_column("size", justify="right")
    seconds, shaped = timed(
        lambda: shape(REPORTS["engine_hours"], periods, parameters, fleet, rows)
    )
    answers.add_row("shape (rows and totals)", f"{seconds:.2f}", f"{len(rows):,} rows")
    writers: dict[str, Callable[[], bytes]] = {
        "json": lambda: orjson.dumps(shaped.as_json(), option=orjson.OPT_UTC_Z),
        "csv": lambda: exports.write_csv(shaped),
        "xlsx": lambda: exports.write_xlsx(shaped),
        "png": lambda: charts.render(shaped, "png"),
        "svg": lambda: charts.render(shaped, "svg"),
    }
    charts.render(shaped, "png")  # Matplotlib's first drawing loads its fonts
    for name, write in writers.items():
        seconds, body = timed(write)
        answers.add_row(name, f"{seconds:.2f}", f"{len(body) / 1e6:.2f} MB")
    console.print(answers)
    return 0
