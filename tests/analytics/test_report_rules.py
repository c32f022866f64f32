"""The pure parts of the reports, without a server: periods in a time zone, time split at
period boundaries, and the engine hours rule shared with the device counters."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.analytics.fuel import smoothed
from fleetplane.analytics.message_reports import engine_hours_of
from fleetplane.analytics.periods import GroupBy, count, split
from fleetplane.analytics.report import Figure, ReportParameters, Total, Unit, add_up, rounded
from fleetplane.analytics.spans import spread
from fleetplane.devices.counters import Counters
from fleetplane.devices.counters import count as count_counters
from fleetplane.messages.columns import from_messages
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.telemetry import Message

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
