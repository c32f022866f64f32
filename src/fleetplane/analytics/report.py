"""What a report is, and the one shape every answer format is made from.

A report is an entry of `reports.REPORTS`: a name, its figures (each with a unit and how it
totals) and a `compute` function that turns the customer's devices and the range's periods
into rows, one per device and period. `shape` rounds the rows and adds them up; JSON, CSV,
XLSX and the charts are all made from its `ShapedReport`, so they cannot disagree.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.analytics.periods import Periods

Value = int | float | None


class Total(StrEnum):
    """How a figure's rows add up to its total."""

    SUM = "sum"
    MAX = "max"
    NONE = "none"  # a state, not an amount (a fuel level): no total


class Unit(StrEnum):
    SECONDS = "s"
    METRES = "m"
    KMH = "km/h"
    LITRES = "l"
    COUNT = "count"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str  # the field in each row and in `totals`
    title: str
    unit: Unit
    total: Total = Total.SUM
    decimals: int = 0


@dataclass(frozen=True, slots=True)
class ReportCustomer:
    id: str
    provider_id: str
    timezone: str


@dataclass(frozen=True, slots=True)
class ReportDevice:
    id: str
    name: str
    seq: int
    history_from: datetime | None  # the customer sees its history from then (None: all)


@dataclass(frozen=True, slots=True)
class ReportParameters:
    """The query's report-specific parameters (each report reads the ones it documents)."""

    threshold: float = 90.0  # speeding: km/h
    min_idle_s: float = 300.0  # idling: the shortest idle period counted
    fill_threshold: float = 10.0  # fuel: litres
    drain_threshold: float = 10.0  # fuel: litres
    fuel_window_s: float = 900.0  # fuel: the longest a fill or drain may take
    smoothing: int = 5  # fuel: messages in the median filter

    def for_report(self, names: Sequence[str]) -> dict[str, Any]:
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A device's figures in one period (`period`: the index in `Periods.items`)."""

    device: ReportDevice
    period: int
    values: Mapping[str, Value]


Compute = Callable[
    [AsyncSession, ReportCustomer, Sequence[ReportDevice], Periods, ReportParameters],
    Awaitable[list[ReportRow]],
]


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    title: str
    description: str
    figures: tuple[Figure, ...] = ()
    compute: Compute | None = None
    chart_figure: str | None = None  # the figure the charts show
    parameters: tuple[str, ...] = ()  # the `ReportParameters` it reads
    # Why it cannot be computed yet, for a report whose data comes from elsewhere.
    unavailable: str | None = None

    def figure(self, name: str) -> Figure:
        return next(figure for figure in self.figures if figure.name == name)


@dataclass(frozen=True, slots=True)
class ShapedReport:
    """A report's answer, before it is written in a format."""

    report: Report
    periods: Periods
    parameters: Mapping[str, Any]
    rows: list[dict[str, Any]]
    totals: dict[str, Value] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.report.name,
            "title": self.report.title,
            "from": self.periods.start,
            "to": self.periods.end,
            "group_by": self.periods.group_by.value,
            "timezone": self.periods.timezone,
            "parameters": dict(self.parameters),
            "figures": [
                {"name": f.name, "title": f.title, "unit": f.unit.value, "total": f.total.value}
                for f in self.report.figures
            ],
            "rows": self.rows,
            "totals": self.totals,
        }


def shape(
    report: Report,
    periods: Periods,
    parameters: ReportParameters,
    devices: Sequence[ReportDevice],
    rows: Sequence[ReportRow],
) -> ShapedReport:
    """The rows in device order (as given), then period order, each figure rounded to its
    decimals; the totals added up from exactly those rounded rows."""
    order = {device.id: index for index, device in enumerate(devices)}
    shaped: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (order[r.device.id], r.period)):
        period = periods.items[row.period]
        shaped.append(
            {
                "device_id": row.device.id,
                "device_name": row.device.name,
                "period_start": period.start,
                "period_end": period.end,
                "period": period.label,
                **{f.name: rounded(row.values.get(f.name), f.decimals) for f in report.figures},
            }
        )
    totals = {
        figure.name: add_up(figure, [_figure_value(row, figure) for row in shaped])
        for figure in report.figures
        if figure.total != Total.NONE
    }
    return ShapedReport(report, periods, parameters.for_report(report.parameters), shaped, totals)


def rounded(value: Value, decimals: int) -> Value:
    """A figure as shown: half away from zero, to its decimals (an int for none)."""
    if value is None:
        return None
    exact = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    return int(exact) if decimals == 0 else float(exact)


def add_up(figure: Figure, values: Sequence[Value]) -> Value:
    """The total of a figure's shown values: the one way totals are made, for every format.
    Sums are added as the decimals they show, so the total is their sum to the last digit;
    a null (no data for the figure) adds nothing."""
    known = [value for value in values if value is not None]
    if figure.total == Total.MAX:
        return max(known) if known else None
    exact = sum((Decimal(repr(value)) for value in known), Decimal(0))
    return int(exact) if figure.decimals == 0 else float(exact)


def _figure_value(row: Mapping[str, Any], figure: Figure) -> Value:
    value: Value = row[figure.name]
    return value
