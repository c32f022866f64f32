"""The reports' own work, without the database: each report's computation over one device's
messages as columns, and each answer format for a big answer. Run: `fleetplane bench reports`.

The messages are made up (10 s apart, ignition, speed and fuel level drawing random walks);
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
from fleetplane.messages.columns import Columns, time_us
from fleetplane.sensors.calculation import SensorDefinition, SensorType

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
