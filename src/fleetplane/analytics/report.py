"""What a report is, and the one shape every answer format is made from.

A report is an entry of `reports.REPORTS`: a name, its figures (each with a unit and how it
totals) and a `compute` function that turns the customer's devices and the range's periods
into rows, one per device and period. `shape` rounds the rows, works out the ratios (an
average, a share) from them and adds them up; JSON, CSV, XLSX and the charts are all made
from its `ShapedReport`, so they cannot disagree.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.analytics.periods import Periods

Value = int | float | None
# Per figure, its value in each period (NaN: no data for it).
PeriodFigures = dict[str, npt.NDArray[np.float64]]


class Total(StrEnum):
    """How a figure's rows add up to its total."""

    SUM = "sum"
    MAX = "max"
    NONE = "none"  # a state, not an amount (a fuel level): no total
    RATIO = "ratio"  # an average or a share: its `Ratio` of the totals, as in each row


class Unit(StrEnum):
    SECONDS = "s"
    METRES = "m"
    KILOMETRES = "km"
    KMH = "km/h"
    LITRES = "l"
    PERCENT = "%"
    COUNT = "count"


@dataclass(frozen=True, slots=True)
class Ratio:
    """A figure made of two others of the same row: `numerator` / `denominator` x `factor`
    (null where the denominator is 0 or null); with no denominator, `numerator` x `factor`.
    Each row's is worked out from the row's figures as shown, and the total from their totals
    (an average over all the rows, weighted as it should be), never by adding rows up."""

    numerator: str
    denominator: str | None = None
    factor: float = 1.0

    def of(self, values: Mapping[str, Value]) -> float | None:
        numerator = values.get(self.numerator)
        if numerator is None:
            return None
        if self.denominator is None:
            return float(Decimal(repr(numerator)) * Decimal(repr(self.factor)))
        denominator = values.get(self.denominator)
        if not denominator:
            return None
        return numerator / denominator * self.factor


@dataclass(frozen=True, slots=True)
class Figure:
    name: str  # the field in each row and in `totals`
    title: str
    unit: Unit
    total: Total = Total.SUM
    decimals: int = 0
    ratio: Ratio | None = None  # with `Total.RATIO`: what the figure is made of

    def __post_init__(self) -> None:
        if (self.total == Total.RATIO) != (self.ratio is not None):
            raise ValueError(f"{self.name}: a ratio figure, and only one, has Total.RATIO")

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "unit": self.unit.value,
            "total": self.total.value,
        }
        if self.ratio is not None:
            ratio = self.ratio
            shown["ratio"] = {
                "numerator": ratio.numerator,
                "denominator": ratio.denominator,
                "factor": ratio.factor,
            }
        return shown


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
    figures: tuple[Figure, ...]
    compute: Compute
    chart_figure: str  # the figure the charts show
    parameters: tuple[str, ...] = ()  # the `ReportParameters` it reads

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
            "figures": [figure.as_json() for figure in self.report.figures],
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
    decimals and each ratio worked out from those; the totals added up from exactly those
    rounded rows (a ratio's, from the totals)."""
    order = {device.id: index for index, device in enumerate(devices)}
    amounts = [figure for figure in report.figures if figure.ratio is None]
    shaped: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (order[r.device.id], r.period)):
        period = periods.items[row.period]
        shown = {f.name: rounded(row.values.get(f.name), f.decimals) for f in amounts}
        shaped.append(
            {
                "device_id": row.device.id,
                "device_name": row.device.name,
                "period_start": period.start,
                "period_end": period.end,
                "period": period.label,
                **_with_ratios(report.figures, shown),
            }
        )
    sums = {
        figure.name: add_up(figure, [_figure_value(row, figure) for row in shaped])
        for figure in amounts
        if figure.total != Total.NONE
    }
    totals = _with_ratios(report.figures, sums)
    return ShapedReport(report, periods, parameters.for_report(report.parameters), shaped, totals)


def period_rows(device: ReportDevice, periods: Periods, figures: PeriodFigures) -> list[ReportRow]:
    """A device's rows from its figures' values per period (NaN: null)."""
    return [
        ReportRow(device, index, {name: _value(values[index]) for name, values in figures.items()})
        for index in range(len(periods))
    ]


def _with_ratios(figures: Sequence[Figure], values: Mapping[str, Value]) -> dict[str, Value]:
    """The values in the figures' order, each ratio worked out from them and rounded."""
    return {
        figure.name: rounded(figure.ratio.of(values), figure.decimals)
        if figure.ratio
        else values[figure.name]
        for figure in figures
        if figure.ratio or figure.name in values
    }


def _value(value: float) -> Value:
    return None if np.isnan(value) else float(value)


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
