"""The pure parts of the reports, without a server: periods in a time zone, time split at
period boundaries, intervals cut at them, ratios, and the engine hours rule shared with the
device counters."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.analytics.fuel import smoothed
from fleetplane.analytics.message_reports import engine_hours_of
from fleetplane.analytics.periods import GroupBy, count, split
from fleetplane.analytics.report import (
    Figure,
    Ratio,
    Report,
    ReportDevice,
    ReportParameters,
    ReportRow,
    Total,
    Unit,
    add_up,
    rounded,
    shape,
)
from fleetplane.analytics.spans import spread
from fleetplane.analytics.trip_reports import Parts
from fleetplane.devices.counters import Counters
from fleetplane.devices.counters import count as count_counters
from fleetplane.messages.columns import from_messages
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.telemetry import Message
from fleetplane.trips.service import IntervalColumns

ZONES = ["UTC", "Europe/Riga", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
         "Asia/Kathmandu", "Pacific/Chatham"]  # fmt: skip
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    start=instants,
    length=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=366)),
    group_by=st.sampled_from(list(GroupBy)),
    zone=st.sampled_from(ZONES),
)
def test_periods_cover_the_range_and_start_at_local_midnights(
    start: datetime, length: timedelta, group_by: GroupBy, zone: str
) -> None:
    periods = split(start, start + length, group_by, zone)
    assert len(periods) == count(start, start + length, group_by, zone)
    assert periods.items[0].start == start and periods.items[-1].end == start + length
    for before, after in zip(periods.items, periods.items[1:], strict=False):
        assert before.end == after.start
        local = after.start.astimezone(ZoneInfo(zone))
        # A local midnight, or where the clocks jumped over it.
        assert local.hour in (0, 1) and local.minute in (0, 30)
        if group_by == GroupBy.WEEK:
            assert local.weekday() == 0
        if group_by == GroupBy.MONTH:
            assert local.day == 1
    assert all(p.start < p.end for p in periods.items)


def test_a_day_of_a_daylight_saving_change_lasts_23_or_25_hours() -> None:
    spring = split(
        datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 3, 30, 21, tzinfo=UTC),
        GroupBy.DAY, "Europe/Riga",
    )  # fmt: skip
    autumn = split(
        datetime(2026, 10, 24, 21, tzinfo=UTC), datetime(2026, 10, 26, 22, tzinfo=UTC),
        GroupBy.DAY, "Europe/Riga",
    )  # fmt: skip
    assert [(p.label, p.end - p.start) for p in spring.items] == [
        ("2026-03-29", timedelta(hours=23)),
        ("2026-03-30", timedelta(hours=24)),
    ]
    assert [(p.label, p.end - p.start) for p in autumn.items] == [
        ("2026-10-25", timedelta(hours=25)),
        ("2026-10-26", timedelta(hours=24)),
    ]


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 1000), min_size=2, max_size=40, unique=True),
    boundaries=st.lists(st.integers(-50, 1050), min_size=2, max_size=10, unique=True),
    weights=st.lists(st.floats(0, 100), min_size=40, max_size=40),
)
def test_spread_shares_each_amount_by_time(
    cuts: list[int], boundaries: list[int], weights: list[float]
) -> None:
    edges = sorted(cuts)
    start, end = np.array(edges[:-1]), np.array(edges[1:])
    amount = np.array(weights[: len(start)])
    bounds = np.array(sorted(boundaries))
    shares = spread(start, end, amount, bounds)
    for index in range(len(bounds) - 1):
        low, high = bounds[index], bounds[index + 1]
        overlap = np.clip(np.minimum(end, high) - np.maximum(start, low), 0, None)
        expected = float(np.sum(amount * overlap / (end - start)))
        assert shares[index] == pytest.approx(expected, abs=1e-6)


IGNITION = SensorDefinition("sen_1", "dev_1", "Ignition", SensorType.IGNITION, "ign")


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 7200), st.sampled_from([0, 1, None])), min_size=1, max_size=60
    )
)
def test_engine_hours_count_as_the_device_counters_do(
    steps: list[tuple[int, int | None]],
) -> None:
    """Over a range holding every message, the report's engine time is the counters'."""
    at = datetime(2026, 11, 1, tzinfo=UTC)
    messages = []
    for seconds, ignition in steps:
        at += timedelta(seconds=seconds)
        message = Message(device_time=at, received_at=at)
        if ignition is not None:
            message.params["ign"] = ignition
        messages.append(message)
    counted, _ = count_counters(Counters(), messages, IGNITION)
    periods = split(
        datetime(2026, 11, 1, tzinfo=UTC), at + timedelta(hours=2), GroupBy.DAY, "Europe/Riga"
    )
    report = engine_hours_of(
        from_messages(messages, ["ign"]), IGNITION, periods, ReportParameters()
    )
    assert float(np.sum(report["engine_seconds"])) == pytest.approx(counted.engine_seconds)


def test_smoothing_keeps_steps_and_drops_spikes() -> None:
    levels = np.array([50, 50, 50, 90, 50, 50, 50, 70, 70, 70, 70], dtype=float)
    assert smoothed(levels, 5).tolist() == [50, 50, 50, 50, 50, 50, 50, 70, 70, 70, 70]
    assert smoothed(levels, 1).tolist() == levels.tolist()


def test_totals_add_the_shown_decimals() -> None:
    litres = Figure("filled_l", "Filled", Unit.LITRES, decimals=1)
    values = [rounded(v, 1) for v in (0.1, 0.2, 0.15, 1e-9)]
    assert values == [0.1, 0.2, 0.2, 0.0]
    assert add_up(litres, values) == 0.5  # not 0.1 + 0.2 + 0.2 in binary floating point
    assert add_up(litres, [None, None]) == 0
    assert add_up(Figure("top", "Top", Unit.KMH, Total.MAX), [None, 3.5, 7.0]) == 7.0
    assert add_up(Figure("top", "Top", Unit.KMH, Total.MAX), [None]) is None


def intervals_of(bounds: list[tuple[int, int]], distances: list[float]) -> IntervalColumns:
    start = np.array([low for low, _ in bounds], dtype=np.int64)
    end = np.array([high for _, high in bounds], dtype=np.int64)
    return IntervalColumns(
        start, end, np.array(distances[: len(bounds)]), np.full(len(bounds), np.nan),
        np.zeros(len(bounds), dtype=np.bool_),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(-100, 1100), st.integers(0, 400)), max_size=30),
    boundaries=st.lists(st.integers(0, 1000), min_size=2, max_size=10, unique=True),
    distances=st.lists(st.floats(0, 1e5), min_size=30, max_size=30),
)
def test_intervals_count_with_their_parts_inside_each_period(
    spans: list[tuple[int, int]], boundaries: list[int], distances: list[float]
) -> None:
    """Each interval's time (and distance, by time) inside each period, whatever the
    intervals (overlapping, empty, outside the range); each counted once, in the first period
    it has time in, or the first of all when it began before the range."""
    bounds = np.array(sorted(boundaries), dtype=np.int64)
    low, high = int(bounds[0]), int(bounds[-1])
    # The list's selection: overlapping [low, high) (an empty one, at its start).
    kept = [(s, s + n) for s, n in spans if s < high and (s + n > low or s >= low)]
    intervals = intervals_of(sorted(kept), distances)
    parts = Parts.of(intervals, bounds)
    seconds, counts = parts.seconds(), parts.counts()
    shared = parts.shared(intervals.distance_m, intervals)
    expected_counts = np.zeros(len(bounds) - 1)
    for start in intervals.start_us:
        began_in = 0 if start < low else int(np.flatnonzero(bounds <= start)[-1])
        expected_counts[began_in] += 1
    assert counts.tolist() == expected_counts.tolist()
    for period in range(len(bounds) - 1):
        p_low, p_high = bounds[period], bounds[period + 1]
        inside = np.clip(
            np.minimum(intervals.end_us, p_high) - np.maximum(intervals.start_us, p_low), 0, None
        )
        length = intervals.end_us - intervals.start_us
        empty_here = (length == 0) & (intervals.start_us >= p_low) & (intervals.start_us < p_high)
        share = np.where(length > 0, inside / np.maximum(length, 1), empty_here.astype(float))
        assert seconds[period] == pytest.approx(inside.sum() / 1e6)
        assert shared[period] == pytest.approx(float(np.sum(intervals.distance_m * share)))


def test_ratios_are_worked_out_from_the_rows_and_the_totals() -> None:
    report = Report(
        "test", "Test", "",
        figures=(
            Figure("trips", "Trips", Unit.COUNT),
            Figure("duration_s", "Time", Unit.SECONDS),
            Figure("avg_s", "Average", Unit.SECONDS, Total.RATIO,
                   ratio=Ratio("duration_s", "trips")),
            Figure("km", "Km", Unit.KILOMETRES, Total.RATIO, decimals=1,
                   ratio=Ratio("duration_s", factor=0.001)),
        ),
        compute=lambda *_: None,  # type: ignore[arg-type,return-value]
        chart_figure="trips",
    )  # fmt: skip
    start = datetime(2026, 11, 1, tzinfo=UTC)
    periods = split(start, start + timedelta(days=2), GroupBy.DAY, "UTC")
    device = ReportDevice("dev_1", "Van", 1, None)
    rows = [
        ReportRow(device, 0, {"trips": 3, "duration_s": 100.4}),
        ReportRow(device, 1, {"trips": 0, "duration_s": 1550}),
    ]
    shaped = shape(report, periods, ReportParameters(), [device], rows)
    assert [(r["duration_s"], r["avg_s"], r["km"]) for r in shaped.rows] == [
        (100, 33, 0.1),  # from the shown 100 s: 33.3 s
        (1550, None, 1.6),  # no trips: no average
    ]
    assert shaped.totals == {"trips": 3, "duration_s": 1650, "avg_s": 550, "km": 1.7}
    assert [f["total"] for f in shaped.as_json()["figures"]] == ["sum", "sum", "ratio", "ratio"]
