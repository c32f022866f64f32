import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.core.geo import distance_m, distances_m
from fleetplane.sensors.calculation import (
    CalibrationTable,
    OutOfTable,
    SensorDefinition,
    SensorType,
    as_number,
    compute_value,
    compute_values,
)

FUEL_TABLE = CalibrationTable.of([{"x": 0, "y": 0}, {"x": 10, "y": 100}, {"x": 20, "y": 150}])


def sensor(
    sensor_type: SensorType = SensorType.FUEL_LEVEL, parameter: str = "adc1", **fields: object
) -> SensorDefinition:
    return SensorDefinition(
        id="sen_1", device_id="dev_1", name="s", type=sensor_type, parameter=parameter, **fields
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0, 0.0), (5, 50.0), (10, 100.0), (15, 125.0), (20, 150.0), (2.5, 25.0), (19.9, 149.5)],
)
def test_calibration_is_linear_between_points(raw: float, expected: float) -> None:
    value = compute_value(sensor(calibration=FUEL_TABLE), {"adc1": raw}, None)
    assert value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "clamped"), [(-5, 0.0), (-0.001, 0.0), (20.5, 150.0), (1e9, 150.0)]
)
def test_outside_the_table_clamps_or_rejects(raw: float, clamped: float) -> None:
    clamping = sensor(calibration=FUEL_TABLE, out_of_table=OutOfTable.CLAMP)
    rejecting = sensor(calibration=FUEL_TABLE, out_of_table=OutOfTable.REJECT)
    assert compute_value(clamping, {"adc1": raw}, None) == clamped
    assert compute_value(rejecting, {"adc1": raw}, None) is None
    assert compute_value(rejecting, {"adc1": 20}, None) == 150.0  # the edges are in the table


def test_without_calibration_the_number_is_kept_as_sent() -> None:
    counter = sensor(SensorType.COUNTER, "count")
    assert compute_value(counter, {"count": 123456789012}, None) == 123456789012
    assert isinstance(compute_value(counter, {"count": 7}, None), int)
    assert compute_value(sensor(SensorType.VOLTAGE, "pwr_ext"), {"pwr_ext": 12.6}, None) == 12.6


def test_valid_range_applies_to_the_calibrated_value() -> None:
    ranged = sensor(calibration=FUEL_TABLE, min=10.0, max=120.0)
    assert compute_value(ranged, {"adc1": 0.5}, None) is None  # 5 l: below min
    assert compute_value(ranged, {"adc1": 1}, None) == 10.0  # bounds are valid values
    assert compute_value(ranged, {"adc1": 14}, None) == pytest.approx(120.0)
    assert compute_value(ranged, {"adc1": 15}, None) is None  # 125 l: above max
    only_max = sensor(SensorType.TEMPERATURE, "temp", max=85.0)
    assert compute_value(only_max, {"temp": -40}, None) == -40
    assert compute_value(only_max, {"temp": 127}, None) is None


@pytest.mark.parametrize(
    ("raw", "on"), [(0, False), (1, True), (-1, True), (0.0, False), (3.3, True), ("1", True)]
)
def test_switches_are_on_when_not_zero(raw: float | str, on: bool) -> None:
    assert compute_value(sensor(SensorType.IGNITION, "ign"), {"ign": raw}, None) is on
    assert compute_value(sensor(SensorType.DIGITAL_INPUT, "door"), {"door": raw}, None) is on


def test_a_switch_outside_its_valid_range_has_no_value() -> None:
    # An analog ignition line: only 0..30 V is a real reading, above 13 V the engine runs.
    ignition = sensor(
        SensorType.IGNITION,
        "adc2",
        calibration=CalibrationTable.of(
            [{"x": 0, "y": 0}, {"x": 13, "y": 0}, {"x": 13.01, "y": 1}]
        ),
        max=1.0,
    )
    assert compute_value(ignition, {"adc2": 12.1}, None) is False
    assert compute_value(ignition, {"adc2": 13.8}, None) is True
    assert compute_value(ignition, {"adc2": "oops"}, None) is None


def test_in_and_out_read_bits_of_the_masks() -> None:
    inputs, outputs = 0b101, 0b10
    for number, on in [(1, True), (2, False), (3, True), (4, False), (64, False)]:
        switch = sensor(SensorType.DIGITAL_INPUT, f"in{number}")
        assert compute_value(switch, {}, inputs, outputs) is on
    assert compute_value(sensor(SensorType.DIGITAL_INPUT, "out2"), {}, inputs, outputs) is True
    assert compute_value(sensor(SensorType.DIGITAL_INPUT, "out1"), {}, inputs, outputs) is False
    assert compute_value(sensor(SensorType.COUNTER, "in1"), {}, inputs) == 1
    assert compute_value(sensor(SensorType.IGNITION, "in63"), {}, 1 << 62) is True


def test_a_sent_parameter_wins_over_the_mask_bit() -> None:
    switch = sensor(SensorType.IGNITION, "in2")
    assert compute_value(switch, {"in2": 1}, 0) is True
    assert compute_value(switch, {"in2": 0}, 0b10) is False


@pytest.mark.parametrize("parameter", ["in0", "in65", "in01", "In1", "input1", "in", "out"])
def test_names_that_are_not_mask_bits_read_only_params(parameter: str) -> None:
    assert compute_value(sensor(SensorType.IGNITION, parameter), {}, -1 & 0xFFFF, 0xFFFF) is None


def test_missing_parameter_or_mask_has_no_value() -> None:
    assert compute_value(sensor(), {}, None) is None
    assert compute_value(sensor(), {"adc2": 5}, 0xFF) is None
    assert compute_value(sensor(SensorType.IGNITION, "in1"), {}, None) is None
    assert compute_value(sensor(SensorType.IGNITION, "out1"), {}, 0xFF, None) is None


@pytest.mark.parametrize(
    ("raw", "number"),
    [("12", 12), ("-3", -3), ("+4", 4), (" 7 ", 7), ("12.5", 12.5), (".5", 0.5), ("1e3", 1000.0),
     ("5.", 5.0), (True, 1), (3, 3), (2.5, 2.5)],
)  # fmt: skip
def test_numeric_text_is_a_number(raw: str | float, number: float) -> None:
    assert as_number(raw) == number
    assert type(as_number(raw)) is type(number)


@pytest.mark.parametrize(
    "raw", ["", "abc", "1_000", "nan", "inf", "-inf", "0x1f", "1,5", "١٢", "--1", float("nan")]
)
def test_other_text_and_non_finite_values_are_not_numbers(raw: str | float) -> None:
    assert as_number(raw) is None
    assert compute_value(sensor(), {"adc1": raw}, None) is None


def test_numeric_text_is_calibrated_like_a_number() -> None:
    assert compute_value(sensor(calibration=FUEL_TABLE), {"adc1": "5"}, None) == 50.0


def test_driver_keys_pass_through_as_text() -> None:
    key = sensor(SensorType.DRIVER_KEY, "avl_driver")
    assert compute_value(key, {"avl_driver": "00001A2B3C"}, None) == "00001A2B3C"
    assert compute_value(key, {"avl_driver": 123456}, None) == "123456"
    assert compute_value(key, {"avl_driver": ""}, None) is None  # no key in the reader
    assert compute_value(key, {}, None) is None


def test_custom_sensors_pass_text_through_and_calibrate_numbers() -> None:
    custom = sensor(SensorType.CUSTOM, "status", calibration=FUEL_TABLE, max=120.0)
    assert compute_value(custom, {"status": "DOOR OPEN"}, None) == "DOOR OPEN"
    assert compute_value(custom, {"status": "5"}, None) == 50.0
    assert compute_value(custom, {"status": 15}, None) is None
    assert compute_value(custom, {"status": ""}, None) is None


def test_text_on_a_numeric_sensor_has_no_value() -> None:
    assert compute_value(sensor(SensorType.TEMPERATURE, "temp"), {"temp": "hot"}, None) is None


increasing_points = st.lists(
    st.tuples(
        st.floats(-1e6, 1e6, allow_nan=False),
        st.floats(-1e6, 1e6, allow_nan=False),
    ),
    min_size=2,
    max_size=30,
    unique_by=lambda point: point[0],
).map(lambda points: [{"x": x, "y": y} for x, y in sorted(points)])


@given(points=increasing_points, raw=st.floats(-2e6, 2e6, allow_nan=False))
def test_a_calibrated_value_stays_between_its_neighbours_ys(
    points: list[dict[str, float]], raw: float
) -> None:
    value = compute_value(sensor(calibration=CalibrationTable.of(points)), {"adc1": raw}, None)
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    if raw <= xs[0]:
        assert value == ys[0]
    elif raw >= xs[-1]:
        assert value == ys[-1]
    else:
        right = next(i for i, x in enumerate(xs) if x > raw)
        low, high = sorted((ys[right - 1], ys[right]))
        rounding = 1e-12 * max(abs(low), abs(high))
        assert isinstance(value, float)
        assert low - rounding <= value <= high + rounding


# ---- many messages at once -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    sensor_type=st.sampled_from([SensorType.FUEL_LEVEL, SensorType.IGNITION, SensorType.VOLTAGE]),
    parameter=st.sampled_from(["adc1", "in2", "out1"]),
    table=st.none() | st.just(FUEL_TABLE),
    out_of_table=st.sampled_from(list(OutOfTable)),
    low=st.none() | st.floats(-10, 50),
    values=st.lists(
        st.tuples(
            st.none() | st.floats(-50, 50, allow_nan=False) | st.integers(-5, 30),
            st.none() | st.integers(0, 15),
            st.none() | st.integers(0, 15),
        ),
        max_size=20,
    ),
)
def test_columns_give_the_values_one_message_gives(
    sensor_type: SensorType,
    parameter: str,
    table: CalibrationTable | None,
    out_of_table: OutOfTable,
    low: float | None,
    values: list[tuple[float | None, int | None, int | None]],
) -> None:
    definition = sensor(
        sensor_type, parameter, calibration=table, out_of_table=out_of_table, min=low
    )
    raw = np.array([np.nan if v is None else v for v, _, _ in values], dtype=np.float64)
    inputs = np.array([-1 if i is None else i for _, i, _ in values], dtype=np.int64)
    outputs = np.array([-1 if o is None else o for _, _, o in values], dtype=np.int64)
    columns = compute_values(definition, raw, inputs, outputs)
    for index, (value, message_inputs, message_outputs) in enumerate(values):
        params = {} if value is None else {parameter: value}
        one = compute_value(definition, params, message_inputs, message_outputs)
        if one is None:
            assert np.isnan(columns[index])
        else:
            assert columns[index] == pytest.approx(float(one))


def test_distances_of_many_pairs_are_the_distance_of_each() -> None:
    lat1, lon1 = np.array([56.95, 0.0, -33.9]), np.array([24.1, 0.0, 151.2])
    lat2, lon2 = np.array([54.69, 0.0, 51.5]), np.array([25.28, 1.0, -0.12])
    many = distances_m(lat1, lon1, lat2, lon2)
    for index in range(3):
        one = distance_m(lat1[index], lon1[index], lat2[index], lon2[index])
        assert many[index] == pytest.approx(one, rel=1e-12)
