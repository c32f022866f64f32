"""Reports on the trips module's intervals: mileage, trips, parkings and utilization.

They read the intervals the intervals list returns for the same devices and range
(`trips.service.interval_columns`) and count the part of each that lies in each period:

- an interval that crosses a period boundary, `from` or `to` is cut there; its time in a
  period is the part of [start, end) inside it, and its distance is shared in proportion to
  that time (as the message reports share the distance between two messages). So the periods
  add up to the range, adjacent ranges add up to the longer one, and a report's time and
  distance are the sum of the intervals' parts inside the range;
- an interval counts once (`trips`, `parkings`), in the first period it has time in, or the
  first period of the range when it began before `from`: the count is the number of
  intervals the list returns;
- a trip's `max_speed` is in every period it has time in (where in the trip it happened is
  not kept); `longest_s` is the longest part of one parking inside the period;
- an open interval counts as far as it is known: to its last message so far, as the list
  shows it, so its time grows with each message (no guess at how long it goes on after it).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from fleetplane.analytics.message_reports import engine_and_idle_of
from fleetplane.analytics.messages_read import rows_per_device
from fleetplane.analytics.periods import Periods
from fleetplane.analytics.report import (
    Compute,
    Figure,
    PeriodFigures,
    Ratio,
    Report,
    ReportCustomer,
    ReportDevice,
    ReportParameters,
    ReportRow,
    Total,
    Unit,
    period_rows,
)
from fleetplane.analytics.spans import MICROSECONDS
from fleetplane.sensors.calculation import SensorType
from fleetplane.trips import service as trips
from fleetplane.trips.service import IntervalColumns

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TRIP = "trip"
PARKING = "parking"
KMH_PER_METRE_PER_SECOND = 3.6
SPEED_DECIMALS = 1


@dataclass(frozen=True, slots=True)
class Parts:
    """The intervals cut at the periods' boundaries: for each part, its interval, its period
    and its length (µs); and the period each interval counts in."""

    interval: IntArray
    period: IntArray
    length_us: IntArray
    counted_in: IntArray
    periods: int

    @classmethod
    def of(cls, intervals: IntervalColumns, boundaries: IntArray) -> "Parts":
        count = len(boundaries) - 1
        start, end = intervals.start_us, intervals.end_us
        # The first period each interval has time in (the first of the range when it began
        # before it), and the last (an end on a boundary is the end of the period before).
        first = np.clip(np.searchsorted(boundaries, start, side="right") - 1, 0, count - 1)
        last = np.clip(np.searchsorted(boundaries, end, side="left") - 1, first, count - 1)
        pieces = last - first + 1
        interval = np.repeat(np.arange(len(start)), pieces)
        # Each part's period: its interval's first one, plus its place among its parts.
        offsets = np.arange(len(interval)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        period = first[interval] + offsets
        inside_start = np.maximum(start[interval], boundaries[period])
        inside_end = np.minimum(end[interval], boundaries[period + 1])
        length = np.clip(inside_end - inside_start, 0, None)
        return cls(interval, period, length.astype(np.int64), first.astype(np.int64), count)

    def counts(self) -> FloatArray:
        return np.bincount(self.counted_in, minlength=self.periods).astype(np.float64)

    def seconds(self) -> FloatArray:
        return self._sum(self.length_us / MICROSECONDS)

    def shared(self, amounts: FloatArray, intervals: IntervalColumns) -> FloatArray:
        """Each interval's amount shared between its parts in proportion to their time (an
        interval without time has it all in its one part)."""
        whole = (intervals.end_us - intervals.start_us)[self.interval].astype(np.float64)
        share = np.divide(
            self.length_us.astype(np.float64), whole, out=np.ones_like(whole), where=whole > 0
        )
        return self._sum(amounts[self.interval] * share)

    def highest(self, values: FloatArray) -> FloatArray:
        """The highest of the intervals' values in each period (NaN: none has one)."""
        return self._max(values[self.interval])

    def longest_seconds(self) -> FloatArray:
        return self._max(self.length_us / MICROSECONDS)

    def _sum(self, values: FloatArray) -> FloatArray:
        return np.bincount(self.period, weights=values, minlength=self.periods).astype(np.float64)

    def _max(self, values: FloatArray) -> FloatArray:
        highest = np.full(self.periods, np.nan)
        known = ~np.isnan(values)
        np.fmax.at(highest, self.period[known], values[known])
        return highest


# ---- the figures of one device's intervals ----------------------------------------------


def mileage_of(intervals: IntervalColumns, periods: Periods) -> PeriodFigures:
    parts = Parts.of(intervals, periods.boundaries_us)
    return {
        "distance_m": parts.shared(intervals.distance_m, intervals),
        "trips": parts.counts(),
    }


def trips_of(intervals: IntervalColumns, periods: Periods) -> PeriodFigures:
    parts = Parts.of(intervals, periods.boundaries_us)
    return {
        "trips": parts.counts(),
        "duration_s": parts.seconds(),
        "distance_m": parts.shared(intervals.distance_m, intervals),
        "max_speed": parts.highest(intervals.max_speed),
    }


def parkings_of(intervals: IntervalColumns, periods: Periods) -> PeriodFigures:
    parts = Parts.of(intervals, periods.boundaries_us)
    return {
        "parkings": parts.counts(),
        "duration_s": parts.seconds(),
        "longest_s": parts.longest_seconds(),
    }


def utilization_of(intervals: IntervalColumns, periods: Periods) -> PeriodFigures:
    parts = Parts.of(intervals, periods.boundaries_us)
    return {
        "trip_seconds": parts.seconds(),
        "period_seconds": np.diff(periods.boundaries_us) / MICROSECONDS,
    }


# ---- computes ---------------------------------------------------------------------------

IntervalComputation = Callable[[IntervalColumns, Periods], PeriodFigures]


def on_intervals(kind: str, compute: IntervalComputation) -> Compute:
    """A report's `compute`: `compute` over each device's intervals of `kind`."""

    async def report_compute(
        session: AsyncSession,
        customer: ReportCustomer,
        devices: Sequence[ReportDevice],
        periods: Periods,
        parameters: ReportParameters,
    ) -> list[ReportRow]:
        return await rows_of_intervals(session, customer, devices, periods, kind, compute)

    return report_compute


async def rows_of_intervals(
    session: AsyncSession,
    customer: ReportCustomer,
    devices: Sequence[ReportDevice],
    periods: Periods,
    kind: str,
    compute: IntervalComputation,
) -> list[ReportRow]:
    found = await trips.interval_columns(
        session,
        customer.provider_id,
        customer.id,
        [device.id for device in devices],
        since=periods.start,
        until=periods.end,
        kind=kind,
    )

    def rows() -> list[ReportRow]:
        return [
            row
            for device in devices
            for row in period_rows(device, periods, compute(found[device.id], periods))
        ]

    return await run_in_threadpool(rows)


async def utilization(
    session: AsyncSession,
    customer: ReportCustomer,
    devices: Sequence[ReportDevice],
    periods: Periods,
    parameters: ReportParameters,
) -> list[ReportRow]:
    """Time in trips from the intervals; engine and idle time from the messages (null for a
    device without an ignition sensor)."""
    in_trips = await rows_of_intervals(session, customer, devices, periods, TRIP, utilization_of)
    engine = await rows_per_device(
        session, customer, devices, periods, parameters, SensorType.IGNITION, engine_and_idle_of
    )
    engine_values = {(row.device.id, row.period): row.values for row in engine}
    return [
        ReportRow(
            row.device, row.period, {**row.values, **engine_values[row.device.id, row.period]}
        )
        for row in in_trips
    ]


# ---- the reports --------------------------------------------------------------------------

_PARTS = (
    "An interval that crosses a period boundary, `from` or `to` counts with its part inside "
    "the period (its distance in proportion to the time); it is counted once, in the first "
    "period it has time in (the first of the range when it began before `from`), so the count "
    "is the number of intervals `/module/trips/intervals` returns for the same range. An open "
    "interval counts up to its last message so far."
)

MILEAGE = Report(
    "mileage",
    "Mileage",
    f"Distance driven in trips, from the trips module's intervals. {_PARTS}",
    figures=(
        Figure("distance_m", "Distance", Unit.METRES),
        Figure(
            "distance_km",
            "Distance",
            Unit.KILOMETRES,
            Total.RATIO,
            decimals=1,
            ratio=Ratio("distance_m", factor=0.001),
        ),
        Figure("trips", "Trips", Unit.COUNT),
    ),
    compute=on_intervals(TRIP, mileage_of),
    chart_figure="distance_m",
)

TRIPS = Report(
    "trips",
    "Trips",
    "Trips: how many, how long, how far, how fast, from the trips module's intervals. "
    "`avg_duration_s` is the time in trips per trip, `avg_speed` the distance over the time, "
    "`max_speed` the highest of the trips with time in the period. " + _PARTS,
    figures=(
        Figure("trips", "Trips", Unit.COUNT),
        Figure("duration_s", "Time in trips", Unit.SECONDS),
        Figure(
            "avg_duration_s",
            "Average trip",
            Unit.SECONDS,
            Total.RATIO,
            ratio=Ratio("duration_s", "trips"),
        ),
        Figure("distance_m", "Distance", Unit.METRES),
        Figure("max_speed", "Max speed", Unit.KMH, Total.MAX, decimals=SPEED_DECIMALS),
        Figure(
            "avg_speed",
            "Average speed",
            Unit.KMH,
            Total.RATIO,
            decimals=SPEED_DECIMALS,
            ratio=Ratio("distance_m", "duration_s", KMH_PER_METRE_PER_SECOND),
        ),
    ),
    compute=on_intervals(TRIP, trips_of),
    chart_figure="trips",
)

PARKINGS = Report(
    "parkings",
    "Parkings",
    "Parkings: how many and how long, from the trips module's intervals. `longest_s` is the "
    "longest part of one parking inside the period. " + _PARTS,
    figures=(
        Figure("parkings", "Parkings", Unit.COUNT),
        Figure("duration_s", "Time parked", Unit.SECONDS),
        Figure(
            "avg_duration_s",
            "Average parking",
            Unit.SECONDS,
            Total.RATIO,
            ratio=Ratio("duration_s", "parkings"),
        ),
        Figure("longest_s", "Longest parking", Unit.SECONDS, Total.MAX),
    ),
    compute=on_intervals(PARKING, parkings_of),
    chart_figure="duration_s",
)

UTILIZATION = Report(
    "utilization",
    "Utilization",
    "The share of the time each device was in trips: `trip_seconds` (from the trips "
    "module's intervals) over `period_seconds` (the period's length), in %; the total is the "
    "fleet's (all time in trips over all the devices' time). `engine_seconds` and "
    "`idle_seconds` are as the `engine_hours` and `idling` reports count them (null for a "
    "device without an ignition sensor). " + _PARTS,
    figures=(
        Figure("trip_seconds", "Time in trips", Unit.SECONDS),
        Figure("period_seconds", "Time in the period", Unit.SECONDS),
        Figure(
            "utilization_pct",
            "Utilization",
            Unit.PERCENT,
            Total.RATIO,
            decimals=1,
            ratio=Ratio("trip_seconds", "period_seconds", 100.0),
        ),
        Figure("engine_seconds", "Engine time", Unit.SECONDS),
        Figure("idle_seconds", "Idle time", Unit.SECONDS),
    ),
    compute=utilization,
    chart_figure="utilization_pct",
)
