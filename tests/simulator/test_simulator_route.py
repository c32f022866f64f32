"""Simulated vehicle days: time, speeds, stops and parkings, odometer, fuel, GPS reception."""

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from fleetplane.simulator import route
from fleetplane.simulator.route import (
    ARTERIAL,
    CITY,
    RIGA,
    Activity,
    Fix,
    VehicleProfile,
    driver_keys,
    great_circle_metres,
    vehicle_fixes,
)

START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def day(seed: int = 7, interval: int = 10, profile: VehicleProfile = VehicleProfile()) -> list[Fix]:
    fixes = vehicle_fixes(seed, START, interval, profile=profile)
    return list(itertools.islice(fixes, 24 * 3600 // interval))


@pytest.fixture(scope="module")
def fixes() -> list[Fix]:
    return day()


def runs(fixes: list[Fix], keep: Callable[[Fix], bool]) -> list[list[Fix]]:
    """Maximal runs of consecutive fixes for which `keep` holds."""
    return [list(group) for kept, group in itertools.groupby(fixes, keep) if kept]


def test_reports_are_evenly_spaced_in_time(fixes: list[Fix]) -> None:
    assert fixes[0].time == START
    assert all(b.time - a.time == timedelta(seconds=10) for a, b in itertools.pairwise(fixes))


def test_a_day_has_trips_stops_and_parkings(fixes: list[Fix]) -> None:
    trips = runs(fixes, lambda fix: fix.ignition)
    parkings = runs(fixes, lambda fix: fix.activity is Activity.PARKED)
    assert len(trips) >= 10 and len(parkings) >= 10
    assert {fix.road for fix in fixes} == {CITY.name, ARTERIAL.name, None}
    assert any(fix.activity is Activity.STOPPED for fix in fixes)


def test_speeds_stay_within_the_road_limits(fixes: list[Fix]) -> None:
    limits = {CITY.name: CITY.cruise_kmh[1], ARTERIAL.name: ARTERIAL.cruise_kmh[1]}
    driving = [fix for fix in fixes if fix.activity is Activity.DRIVING and fix.speed is not None]
    assert driving
    for fix in driving:
        assert fix.road is not None
        assert 0 <= fix.speed <= limits[fix.road], fix
    assert max(fix.speed for fix in driving if fix.road == ARTERIAL.name) > CITY.cruise_kmh[1]


def test_standing_still_reports_zero_speed_and_parking_has_the_ignition_off(
    fixes: list[Fix],
) -> None:
    for fix in fixes:
        if fix.activity is not Activity.DRIVING:
            assert fix.speed in (0, None)
        assert fix.ignition is (fix.activity is not Activity.PARKED)


def test_stops_are_shorter_than_a_parking_and_parkings_last_five_minutes(
    fixes: list[Fix],
) -> None:
    for stop in runs(fixes, lambda fix: fix.activity is Activity.STOPPED):
        assert stop[-1].time - stop[0].time < timedelta(minutes=5)
    parked = runs(fixes, lambda fix: fix.activity is Activity.PARKED)
    for parking in parked[1:-1]:  # the day starts and ends in the middle of one
        assert parking[-1].time - parking[0].time >= timedelta(minutes=5)


def test_the_odometer_covers_the_great_circle_distance_between_fixes(fixes: list[Fix]) -> None:
    with_position = [fix for fix in fixes if fix.lat is not None and fix.lon is not None]
    total = 0.0
    for a, b in itertools.pairwise(with_position):
        assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
        metres = great_circle_metres(a.lat, a.lon, b.lat, b.lon)
        # A chord is never longer than the road driven (plus the odometer's rounding).
        assert metres <= (b.odometer - a.odometer) * 1000 + 1.0
        total += metres
    driven = (with_position[-1].odometer - with_position[0].odometer) * 1000
    assert driven > 50_000
    assert 0.95 * driven <= total <= driven + 1.0  # corners cut at turns between reports


def test_fuel_drops_with_distance_and_only_rises_when_refuelling(fixes: list[Fix]) -> None:
    profile = VehicleProfile()
    for a, b in itertools.pairwise(fixes):
        if b.fuel > a.fuel:
            assert b.activity is Activity.PARKED
            continue
        if b.activity is Activity.DRIVING and a.activity is Activity.DRIVING:
            expected = (b.odometer - a.odometer) * profile.litres_per_100km / 100
            assert a.fuel - b.fuel == pytest.approx(expected, abs=0.11)


def test_a_low_tank_is_refilled_at_a_parking() -> None:
    profile = VehicleProfile(start_fuel=25.0, tank_litres=120.0, refuel_below=0.2)
    fixes = day(profile=profile)
    rises = [b for a, b in itertools.pairwise(fixes) if b.fuel > a.fuel]
    assert rises and all(fix.activity is Activity.PARKED for fix in rises)
    assert max(fix.fuel for fix in fixes) >= 0.9 * profile.tank_litres


def test_engine_hours_grow_only_with_the_ignition_on(fixes: list[Fix]) -> None:
    for a, b in itertools.pairwise(fixes):
        if not a.ignition and not b.ignition:
            assert b.engine_hours == a.engine_hours
        assert b.engine_hours >= a.engine_hours
    on = sum(1 for fix in fixes if fix.ignition) * 10 / 3600
    assert fixes[-1].engine_hours - fixes[0].engine_hours == pytest.approx(on, rel=0.05)


def test_the_driver_key_is_reported_while_the_engine_runs(fixes: list[Fix]) -> None:
    keys = {fix.driver_key for fix in fixes if fix.ignition}
    assert keys == set(driver_keys(7))  # the usual driver and the relief driver, in a day
    for key in keys:
        assert key is not None and len(key) == 16 and key.startswith("01")
        int(key, 16)
    assert all(fix.driver_key is None for fix in fixes if not fix.ignition)
    assert fixes[0].driver_key in (None, driver_keys(7)[0])  # the usual driver starts


def test_drivers_change_only_at_parkings(fixes: list[Fix]) -> None:
    trips = runs(fixes, lambda fix: fix.ignition)
    for trip in trips:
        assert len({fix.driver_key for fix in trip}) == 1
    changes = sum(a[0].driver_key != b[0].driver_key for a, b in itertools.pairwise(trips))
    assert 0 < changes < len(trips) / 2


def test_changing_drivers_leaves_the_routes_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drivers draw from a random stream of their own: the vehicle goes where it goes
    whoever drives it."""
    monkeypatch.setattr(route, "DRIVER_CHANGE_CHANCE", 0.0)
    one_driver = day(seed=3)
    monkeypatch.setattr(route, "DRIVER_CHANGE_CHANCE", 1.0)
    every_parking = day(seed=3)
    assert {fix.driver_key for fix in one_driver} == {None, driver_keys(3)[0]}
    assert {fix.driver_key for fix in every_parking} == {None, *driver_keys(3)}
    moves = [(f.time, f.lat, f.lon, f.speed, f.ignition, f.fuel) for f in one_driver]
    assert moves == [(f.time, f.lat, f.lon, f.speed, f.ignition, f.fuel) for f in every_parking]


def test_the_receiver_sometimes_loses_its_fix() -> None:
    fixes = day(profile=VehicleProfile(no_fix_chance=0.05))
    lost = [fix for fix in fixes if not fix.has_fix]
    assert lost
    for fix in lost:
        assert fix.satellites < 4
        assert fix.speed is None and fix.course is None and fix.altitude is None
    for fix in fixes:
        if fix.has_fix:
            assert fix.satellites >= 5 and fix.hdop is not None and 0.5 <= fix.hdop < 2
            assert fix.course is not None and 0 <= fix.course < 360


def test_vehicles_stay_around_the_centre(fixes: list[Fix]) -> None:
    radius = VehicleProfile().radius_metres
    for fix in fixes:
        if fix.lat is not None and fix.lon is not None:
            assert great_circle_metres(*RIGA, fix.lat, fix.lon) < radius + 3000


def test_the_same_seed_gives_the_same_vehicle_and_another_seed_another(fixes: list[Fix]) -> None:
    assert day() == fixes
    assert day(seed=8)[:500] != fixes[:500]


def test_the_route_does_not_depend_on_how_often_it_is_sampled(fixes: list[Fix]) -> None:
    sparse = day(interval=30)
    for every_third, sample in zip(fixes[::3], sparse, strict=False):
        assert every_third.time == sample.time
        assert every_third.odometer == sample.odometer
        assert every_third.activity is sample.activity


def test_an_interval_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="one second"):
        next(vehicle_fixes(1, START, 0))
