"""The trip detector on hand-built drives at every rule boundary, for every detection method,
found the same from scratch and message by message (and in random rounds), and on random
sequences cut at random points, with rewinds to the checkpoints late data uses."""

import math
import random
from typing import Any

import numpy as np
import pytest
from drives import SENSORS, Drive, Store, as_times, detect_in_parts, part
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetplane.messages.columns import Columns
from fleetplane.trips.detector import (
    DetectorSettings,
    DetectorState,
    DeviceInput,
    Interval,
    Method,
    detect,
    detect_all,
    resume_point,
)

METHODS = list(Method)
# The speeds just below and at the threshold that each method can tell apart: GPS speed is
# compared as sent; a speed implied by distance over time carries the distance's millimetres.
JUST_UNDER = {
    Method.SPEED: 4.99,
    Method.IGNITION: 4.99,
    Method.COORDINATES: 4.99,
    Method.MILEAGE: 4.99,
}
JUST_OVER = {
    Method.SPEED: 5.0,
    Method.IGNITION: 5.0,
    Method.COORDINATES: 5.01,
    Method.MILEAGE: 5.01,
}


def found(drive: Drive, method: Method, **options: Any) -> list[tuple[str, float, float, bool]]:
    """The intervals from scratch, after checking that message by message, and in random
    rounds, gives the same intervals and the same state."""
    columns = drive.columns()
    scratch = detect_in_parts(columns, [], method, **options)
    rounds = [list(range(1, len(columns)))]
    rng = random.Random(len(columns))
    rounds += [
        sorted(rng.sample(range(1, len(columns)), min(5, len(columns) - 1))) for _ in range(5)
    ]
    for cuts in rounds:
        live = detect_in_parts(columns, cuts, method, **options)
        assert live.sorted() == scratch.sorted()
        assert live.state == scratch.state
    return [(*as_times(interval), interval.open) for interval in scratch.sorted()]


def trips_of(drive: Drive, method: Method, **options: Any) -> list[Interval]:
    store = detect_in_parts(drive.columns(), [], method, **options)
    return [interval for interval in store.sorted() if interval.kind == "trip"]


@pytest.mark.parametrize("method", METHODS)
def test_a_trip_with_a_stop_between_parkings(method: Method) -> None:
    drive = Drive().leg(600, 0).leg(300, 36).leg(60, 0).leg(300, 36).leg(600, 0)
    assert found(drive, method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 1270, False),  # from where it stood to where it came to rest
        ("stop", 910, 960, False),
        ("parking", 1270, 1860, True),
    ]
    [trip] = trips_of(drive, method)
    # 10 m/s: 31 segments of 100 m into and out of each of the two legs of movement.
    assert trip.distance_m == pytest.approx(2 * 31 * 100, rel=1e-4)
    assert trip.max_speed == 36.0 or method in (Method.COORDINATES, Method.MILEAGE)
    assert trip.avg_speed == pytest.approx(trip.distance_m / 670 * 3.6)


@pytest.mark.parametrize("method", METHODS)
def test_speed_just_under_the_minimum_is_no_movement(method: Method) -> None:
    under = Drive().leg(600, 0).leg(600, JUST_UNDER[method]).leg(600, 0)
    assert found(under, method) == [("parking", 0, 1800, True)]
    over = Drive().leg(600, 0).leg(600, JUST_OVER[method]).leg(600, 0)
    assert found(over, method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 1210, False),
        ("parking", 1210, 1800, True),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_a_pause_of_exactly_the_minimum_parking_time_is_a_parking(method: Method) -> None:
    # At rest from 910 to 1210: 300 s between the first and the last message at rest.
    drive = Drive().leg(600, 0).leg(300, 36).leg(310, 0).leg(300, 36).leg(600, 0)
    assert found(drive, method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 910, False),
        ("parking", 910, 1210, False),
        ("trip", 1210, 1520, False),
        ("parking", 1520, 2110, True),
    ]
    assert found(drive, method, min_parking_s=301) == [
        ("parking", 0, 600, False),
        ("trip", 600, 1520, False),
        ("stop", 910, 1210, False),
        ("parking", 1520, 2110, True),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_a_silence_just_over_the_maximum_gap_ends_the_trip(method: Method) -> None:
    def drive(silence: int) -> Drive:
        return Drive().leg(600, 0).leg(300, 36).silence(silence, 36).leg(300, 36).leg(600, 0)

    gap = 3601
    assert found(drive(gap), method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 900, False),  # the last message before the silence
        ("parking", 900, 900 + gap, False),
        ("trip", 900 + gap, 900 + gap + 310, False),
        ("parking", 900 + gap + 310, 900 + gap + 900, True),
    ]
    just = 3600
    assert found(drive(just), method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 900 + just + 310, False),
        ("parking", 900 + just + 310, 900 + just + 900, True),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_the_minimum_trip_distance_and_time_are_reached_exactly(method: Method) -> None:
    drive = Drive().leg(600, 0).leg(60, 10).leg(600, 0)
    [trip] = trips_of(drive, method, min_trip_m=0, min_trip_s=0)
    metres, seconds = trip.distance_mm / 1000, trip.duration_s
    assert seconds == 70 and 180 < metres < 200
    with_trip = [
        ("parking", 0, 600, False),
        ("trip", 600, 670, False),
        ("parking", 670, 1260, True),
    ]
    no_trip = [("parking", 0, 1260, True)]
    assert found(drive, method, min_trip_m=metres) == with_trip
    assert found(drive, method, min_trip_m=metres + 0.001) == no_trip
    assert found(drive, method, min_trip_s=int(seconds)) == with_trip
    assert found(drive, method, min_trip_s=int(seconds) + 1) == no_trip


@pytest.mark.parametrize("method", METHODS)
def test_fixes_from_too_few_satellites_are_not_used(method: Method) -> None:
    drive = Drive().leg(600, 0).leg(300, 36).leg(600, 0)
    moving = range(drive.at(610), drive.at(900) + 1)
    for index in moving:
        drive.satellites[index] = 3
    if method in (Method.SPEED, Method.IGNITION):  # no fix says it moved
        assert found(drive, method) == [("parking", 0, 1500, True)]
    else:  # the good fixes before and after say how far it went, and how fast
        assert found(drive, method) == [
            ("parking", 0, 600, False),
            ("trip", 600, 910, False),
            ("parking", 910, 1500, True),
        ]
        assert trips_of(drive, method)[0].distance_m == pytest.approx(3100, rel=1e-4)
    assert found(drive, method, min_satellites=3) == [
        ("parking", 0, 600, False),
        ("trip", 600, 910, False),
        ("parking", 910, 1500, True),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_the_end_of_the_data_inside_a_pause_leaves_the_trip_open_with_an_open_stop(
    method: Method,
) -> None:
    drive = Drive().leg(600, 0).leg(300, 36).leg(100, 0)
    assert found(drive, method) == [
        ("parking", 0, 600, False),
        ("trip", 600, 910, True),
        ("stop", 910, 1000, True),
    ]
    drive.leg(200, 0)  # now it has stood 290 s: still a stop
    assert found(drive, method)[-1] == ("stop", 910, 1200, True)
    drive.leg(10, 0)  # 300 s: the trip has ended
    assert found(drive, method)[1:] == [("trip", 600, 910, False), ("parking", 910, 1210, True)]


def test_the_ignition_method_needs_the_ignition_on() -> None:
    drive = Drive().leg(600, 0).leg(300, 36).leg(600, 0)
    columns = drive.columns()
    columns.params["ign"][:] = 0  # towed
    store = Store()
    options = DetectorSettings(method=Method.IGNITION)
    store.take(detect(columns, options, None, SENSORS[Method.IGNITION]))
    assert [as_times(i) for i in store.sorted()] == [("parking", 0, 1500)]
    store = Store()
    store.take(detect(columns, DetectorSettings(method=Method.SPEED)))
    assert [i.kind for i in store.sorted()] == ["parking", "trip", "parking"]


def test_the_mileage_method_counts_the_sensors_distance() -> None:
    drive = Drive().leg(600, 0).leg(300, 36).leg(600, 0)
    columns = drive.columns()
    columns.params["mileage"][:] *= 2  # the sensor says twice what the fixes do
    store = Store()
    store.take(
        detect(columns, DetectorSettings(method=Method.MILEAGE), None, SENSORS[Method.MILEAGE])
    )
    [trip] = [i for i in store.sorted() if i.kind == "trip"]
    assert trip.distance_m == pytest.approx(2 * 3100, rel=1e-6)
    # Without the sensor there is nothing to measure with.
    store = Store()
    store.take(detect(columns, DetectorSettings(method=Method.MILEAGE)))
    assert store.sorted() == []


# --- random sequences ------------------------------------------------------------------------

steps = st.sampled_from([1, 5, 10, 10, 10, 30, 59, 60, 61, 299, 300, 301, 3600, 3601])
speeds = st.sampled_from([0.0, 0.0, 4.99, 5.0, 20.0, 80.0, math.nan])
# Legs of messages at one speed and pace, as vehicles move and stand, with now and then a
# message without a position, from few satellites, without ignition, or filtered.
legs = st.lists(
    st.tuples(
        st.integers(1, 12),  # messages
        st.sampled_from([1, 10, 10, 10, 30, 61, 299, 301, 3601]),  # seconds between them
        speeds,
        st.sampled_from([0.0, 0.5, 14.0, 30.0, 300.0]),  # metres moved between them
        st.sampled_from([math.nan, 0.0, 1.0, 1.0]),  # ignition reading
    ),
    min_size=1,
    max_size=14,
)
oddities = st.lists(
    st.tuples(
        st.integers(0, 200),
        st.sampled_from(["no position", "3 satellites", "4 satellites", "unknown", "filtered"]),
    ),
    max_size=6,
)
detector_settings = st.builds(
    DetectorSettings,
    method=st.sampled_from(METHODS),
    min_moving_speed=st.sampled_from([5.0, 20.0]),
    min_parking_s=st.sampled_from([60, 300]),
    min_trip_s=st.sampled_from([0, 60]),
    min_trip_m=st.sampled_from([0.0, 100.0]),
    min_satellites=st.sampled_from([0, 4]),
    max_gap_s=st.sampled_from([300, 3600]),
)


def random_columns(rows: list[tuple[Any, ...]], odd: list[tuple[int, str]]) -> Columns:
    drive = Drive()
    ignition = [math.nan]
    for count, step, speed, metres, reading in rows:
        for _ in range(count):
            drive.report(step, speed, moved_m=metres)
            ignition.append(reading)
    columns = drive.columns()
    columns.params["ign"][:] = ignition
    for index, oddity in odd:
        at = index % len(columns)
        if oddity == "no position":
            columns.lat[at] = np.nan
        elif oddity == "filtered":
            columns.filtered[at] = True
        else:
            satellites = {"3 satellites": 3.0, "4 satellites": 4.0, "unknown": math.nan}
            columns.satellites[at] = satellites[oddity]
    return columns


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legs, oddities, detector_settings, st.data())
def test_detection_in_rounds_equals_detection_from_scratch(
    rows: list[tuple[Any, ...]],
    odd: list[tuple[int, str]],
    options: DetectorSettings,
    data: st.DataObject,
) -> None:
    columns = random_columns(rows, odd)
    sensor = SENSORS.get(options.method)
    scratch = Store()
    scratch.take(detect(columns, options, None, sensor))
    cuts = data.draw(
        st.lists(st.integers(1, len(columns) - 1), max_size=8) if len(columns) > 1 else st.just([])
    )
    live = Store()
    for start, stop in zip(
        [0, *sorted(set(cuts))], [*sorted(set(cuts)), len(columns)], strict=True
    ):
        live.take(detect(part(columns, start, stop), options, live.state, sensor))
    assert live.sorted() == scratch.sorted()
    assert live.state == scratch.state
    assert DetectorState.from_json(live.state.to_json()) == live.state  # as stored

    # Late data at any message: go back to the checkpoint before it, detect again from there.
    late = data.draw(st.integers(0, len(columns) - 1))
    from_us = int(columns.time_us[late])
    trips = [(i.start_us, i.checkpoint) for i in live.intervals.values() if i.kind == "trip"]
    resume_us, state = resume_point(trips, from_us)
    rewound = Store()
    rewound.intervals = {
        k: i for k, i in live.intervals.items() if resume_us is not None and i.end_us < resume_us
    }
    rewound.state = state
    after = (
        0 if resume_us is None else int(np.searchsorted(columns.time_us, resume_us, side="right"))
    )
    rewound.take(detect(part(columns, after), options, rewound.state, sensor))
    assert rewound.sorted() == scratch.sorted()
    assert rewound.state == scratch.state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(legs, oddities, detector_settings, st.integers(0, 200)), min_size=1, max_size=5
    )
)
def test_devices_detected_together_are_detected_as_each_alone(
    fleet: list[tuple[list[tuple[Any, ...]], list[tuple[int, str]], DetectorSettings, int]],
) -> None:
    """A pipeline round detects all its devices at once: no device's answer depends on the
    others'. Each device goes in two rounds (cut at a drawn point), with its own settings."""
    devices = [(random_columns(rows, odd), options, cut) for rows, odd, options, cut in fleet]
    alone = [Store() for _ in devices]
    together = [Store() for _ in devices]
    for round_ in range(2):
        inputs = []
        for index, (columns, options, cut) in enumerate(devices):
            at = cut % len(columns)
            part_ = part(columns, 0, at) if round_ == 0 else part(columns, at)
            sensor = SENSORS.get(options.method)
            alone[index].take(detect(part_, options, alone[index].state, sensor))
            inputs.append(DeviceInput(part_, options, together[index].state, sensor))
        for store, found in zip(together, detect_all(inputs), strict=True):
            store.take(found)
    for single, joint in zip(alone, together, strict=True):
        assert joint.sorted() == single.sorted()
        assert joint.state == single.state
