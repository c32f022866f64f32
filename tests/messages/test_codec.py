"""The packed message values: what goes in comes out (coordinates to 1e-7 degree,
received_at to the millisecond, everything else exactly, types included)."""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.messages import codec

DEVICE_TIME = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
FIELDS = ("altitude", "speed", "course", "satellites", "hdop", "inputs", "outputs")
FLOAT_FIELDS = ("altitude", "speed", "course", "hdop")

any_float = st.floats(allow_nan=False, allow_infinity=False)
device_floats = st.one_of(
    st.integers(-20_000, 20_000).map(float),
    st.integers(-2_000_000, 2_000_000).map(lambda n: n / 100),
    any_float,
)
param_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    device_floats,
    st.integers(-(10**12), 10**12).map(lambda n: n / 10**6),
    st.text(max_size=50),
    st.binary(min_size=1, max_size=12).map(lambda b: b.hex().upper()),
)
param_names = st.one_of(st.sampled_from(codec.KNOWN_PARAMS), st.text(min_size=1, max_size=38))


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, and for floats the same sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def round_trip(
    fields: dict[str, Any],
    params: dict[str, Any],
    flags: int = 0,
    received: timedelta = timedelta(seconds=1),
) -> codec.Unpacked:
    received_at = DEVICE_TIME + received
    return codec.unpack(DEVICE_TIME, codec.pack(DEVICE_TIME, received_at, fields, params, flags))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {name: st.none() | device_floats for name in FLOAT_FIELDS}
        | {name: st.none() | st.integers(0, 2**63 - 1) for name in ("inputs", "outputs")}
        | {"satellites": st.none() | st.integers(0, 255)}
    ),
    st.dictionaries(param_names, param_values, max_size=12),
    st.integers(0, 7),
    st.integers(-(10**11), 10**11),
)
def test_every_value_comes_back_exactly(
    fields: dict[str, Any], params: dict[str, Any], flags: int, received_ms: int
) -> None:
    unpacked = round_trip(fields, params, flags, timedelta(milliseconds=received_ms))
    for name in FIELDS:
        assert same(getattr(unpacked, name), fields[name]), name
    assert list(unpacked.params) == list(params)  # the order too
    assert all(same(unpacked.params[name], value) for name, value in params.items())
    assert unpacked.flags == flags
    assert unpacked.received_at == DEVICE_TIME + timedelta(milliseconds=received_ms)


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 60.0, 12.5, -12.5, 0.9, 359.99, 19.075599999999998, 1e300, -1e-300, 2.0**60],
)
def test_device_floats_keep_their_exact_value_and_sign(value: float) -> None:
    unpacked = round_trip({"speed": value, "altitude": value}, {"temp": value})
    assert same(unpacked.speed, value) and same(unpacked.altitude, value)
    assert same(unpacked.params["temp"], value)


def test_ints_floats_and_strings_keep_their_type() -> None:
    params = {"ign": 1, "fuel": 1.0, "text": "1", "driver_key": "01A2B3C4D5E6F708", "hex": "0a"}
    assert round_trip({}, params).params == params
    assert [type(v) for v in round_trip({}, params).params.values()] == [int, float, str, str, str]


def test_nothing_available_is_none() -> None:
    unpacked = round_trip({name: None for name in FIELDS}, {})
    assert all(getattr(unpacked, name) is None for name in FIELDS)
    assert unpacked.params == {}


def test_received_at_is_kept_to_the_millisecond_either_side_of_the_device_time() -> None:
    late = round_trip({}, {}, received=timedelta(days=40, microseconds=123_456))
    assert late.received_at == DEVICE_TIME + timedelta(days=40, milliseconds=123)
    early = round_trip({}, {}, received=timedelta(seconds=-3))
    assert early.received_at == DEVICE_TIME - timedelta(seconds=3)


@given(st.floats(-180, 180))
def test_coordinates_are_kept_to_a_ten_millionth_of_a_degree(degrees: float) -> None:
    stored = codec.to_coordinate(degrees)
    assert stored is not None and -(2**31) <= stored < 2**31
    assert abs(codec.from_coordinate(stored) - degrees) <= 0.5e-7 + 1e-12  # type: ignore[operator]


def test_negative_coordinates_and_no_position() -> None:
    assert codec.from_coordinate(codec.to_coordinate(-33.8688197)) == -33.8688197
    assert codec.from_coordinate(codec.to_coordinate(-151.2092955)) == -151.2092955
    assert codec.to_coordinate(None) is None and codec.from_coordinate(None) is None


def test_a_typical_report_packs_into_a_few_dozen_bytes() -> None:
    fields = {"altitude": 12.0, "speed": 54.0, "course": 271.0, "satellites": 11, "hdop": 0.9}
    fields |= {"inputs": 1, "outputs": 0}
    params = {"ign": 1, "fuel": 45.8, "pwr_ext": 14.07, "odometer": 12345.678}
    params |= {"engine_hours": 1234.56, "driver_key": "01A2B3C4D5E6F708"}
    packed = codec.pack(DEVICE_TIME, DEVICE_TIME + timedelta(seconds=1), fields, params, 0)
    assert len(packed) <= 40


def test_a_newer_format_is_refused_not_misread() -> None:
    packed = bytes([0x80, 0x10, 0])  # header bit 11 set
    with pytest.raises(ValueError, match="newer format"):
        codec.unpack(DEVICE_TIME, packed)


def test_flags_beyond_three_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="flags"):
        codec.pack(DEVICE_TIME, DEVICE_TIME, {}, {}, 8)
