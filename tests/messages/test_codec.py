"""The packed message values: what goes in comes out (coordinates to 1e-7 degree,
received_at to the millisecond, everything else exactly, types included)."""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.messages import codec, service
from fleetplane.telemetry import Message

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


# The exact bytes of a few messages, as the format's first writer stored them: rows already in
# databases must decode the same, and a faster writer must not move a single byte.
PINNED_PACKS = {
    "typical live report": (
        timedelta(seconds=1, microseconds=247_113),
        {"altitude": 10.0, "speed": 0.0, "course": 174.0, "satellites": 7, "hdop": 1.2}
        | {"inputs": 0, "outputs": 0},
        {"ign": 0, "fuel": 99.7, "pwr_ext": 12.53, "odometer": 227833.475}
        | {"engine_hours": 8692.98},
        0,
        "7fbe132800dc020e18000000000aca0f13ca132486daa3d9012be48e6a",
    ),
    "black box with a driver key": (
        timedelta(seconds=54, microseconds=677_608),
        {"altitude": 17.0, "speed": 69.0, "course": 81.0, "satellites": 14, "hdop": 0.9}
        | {"inputs": 1, "outputs": 0},
        {"ign": 1, "fuel": 92.5, "pwr_ext": 13.99, "odometer": 227856.994}
        | {"engine_hours": 8693.55, "driver_key": "01EF1CB1E659DA89"},
        1,
        "ff01aad606448a01a2011c12020000010aba0e13ee1524c4c9a6d9012bd68f6a362101ef1cb1e659da89",
    ),
    "no fix": (
        timedelta(seconds=-3),
        {"satellites": 3, "inputs": 1, "outputs": 0},
        {"ign": 1},
        6,
        "e806ef2e0602000001",
    ),
    "unusual field values": (
        timedelta(days=40, microseconds=123_456),
        {"altitude": -12.5, "speed": 25.0 * 1.852, "course": -0.0, "hdop": 0.95}
        | {"inputs": 2**40, "outputs": 7},
        {},
        7,
        "f707f681f3df19a71f1d67666666662647401d0000000000000080e9178080808080400e",
    ),
    "huge and odd numbers": (
        timedelta(0),
        {"altitude": 1e300, "speed": 123456.789012, "hdop": 12.0},
        {"temp1": -0.0, "adc1": 1e-300, "rpm": 2.0**60, "batt": 3.7654321}
        | {"mileage": -1234.5678, "gsm": math.inf},
        0,
        "13001d9c7500883ce4377e99858d99fd72f001a50e00000000000000803d0e59f3f8c21f6ea501b50e"
        "000000000000b043850e047866dd9a1f0e409de9a9985e950e000000000000f07f",
    ),
    "every parameter kind": (
        timedelta(milliseconds=1500),
        {},
        {"mcc": 250, "lac": -1, "cell_id": -(2**63), "temp2": -21.5, "adc2": 0.05}
        | {"adc3": -0.125, "pwr_int": 4.0, "charge": 1.0, "fw": "V4.5", "text": "héllo"}
        | {"hex": "0a", "HEX": "0A1B", "flag": True, "nothing": None, "list": [1, 2]}
        | {"": "", "ключ": 3.14159},
        0,
        "00b817c0fa01d100d9ffffffffffffffff7faaaf03430a4cfb011a508a14fe0866771056342e35e618"
        "68c3a96c6c6ffe0c686578083061fe0c484558090a1bfe10666c61671274727565fe1c6e6f7468696e"
        "67126e756c6cfe106c697374165b312c325dfe0000fd20d0bad0bbd18ed187fae5b202",
    ),
}


@pytest.mark.parametrize("case", PINNED_PACKS)
def test_known_messages_pack_to_the_pinned_bytes(case: str) -> None:
    received, fields, params, flags, pinned = PINNED_PACKS[case]
    packed = codec.pack(DEVICE_TIME, DEVICE_TIME + received, fields, params, flags)
    assert packed.hex() == pinned


@pytest.mark.parametrize("case", PINNED_PACKS)
def test_the_pinned_bytes_unpack_to_the_known_messages(case: str) -> None:
    received, fields, params, flags, pinned = PINNED_PACKS[case]
    unpacked = codec.unpack(DEVICE_TIME, bytes.fromhex(pinned))
    for name in FIELDS:
        assert same(getattr(unpacked, name), fields.get(name)), name
    assert list(unpacked.params) == list(params)
    assert all(same(unpacked.params[name], value) for name, value in params.items())
    assert unpacked.flags == flags
    ms = received // timedelta(milliseconds=1)
    assert unpacked.received_at == DEVICE_TIME + timedelta(milliseconds=ms)


def test_known_decoded_messages_make_the_pinned_rows() -> None:
    tracked = Message(
        device_time=DEVICE_TIME,
        received_at=DEVICE_TIME + timedelta(seconds=2),
        lat=56.96449500000001,
        lon=24.068623333333335,
        altitude=10.0,
        speed=35.0,
        course=174.0,
        satellites=7.0,
        hdop=1.2,
        inputs=1,
        outputs=0,
        adc=(12.71, None, 3.6),
        driver_key="01EF1CB1E659DA89",
        params={"ign": 1, "fuel": 99.7, "pwr_ext": 12.53, "fw": "V4.5"},
        from_black_box=True,
        filtered=True,
    )
    assert service.to_row(5, tracked) == {
        "device_seq": 5,
        "device_time": DEVICE_TIME,
        "lat_e7": 569644950,
        "lon_e7": 240686233,
        "packed": bytes.fromhex(
            "ff05a01f2846dc020e18020000010aca0f13ca13fe0866771056342e353bee134a48362101ef1cb1e6"
            "59da89"
        ),
    }
    bare = Message(
        device_time=DEVICE_TIME,
        received_at=DEVICE_TIME,
        lat=-33.8688197,
        lon=-151.2092955,
        device_time_missing=True,
    )
    assert service.to_row(5, bare) == {
        "device_seq": 5,
        "device_time": DEVICE_TIME,
        "lat_e7": -338688197,
        "lon_e7": -1512092955,
        "packed": bytes.fromhex("800200"),
    }


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {name: st.none() | device_floats for name in FLOAT_FIELDS}
        | {name: st.none() | st.integers(0, 2**63 - 1) for name in ("inputs", "outputs")}
        | {"satellites": st.none() | st.integers(0, 255).map(float)}
        | {name: st.none() | st.floats(-90, 90) for name in ("lat", "lon")}
    ),
    st.lists(st.none() | device_floats, max_size=4).map(tuple),
    st.none() | st.binary(min_size=1, max_size=8).map(lambda b: b.hex().upper()),
    st.dictionaries(param_names, param_values, max_size=8),
    st.booleans(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
)
def test_stored_form_is_the_message_read_back(
    fields: dict[str, Any],
    adc: tuple[float | None, ...],
    driver_key: str | None,
    params: dict[str, Any],
    black_box: bool,
    filtered: bool,
    received_us: int,
) -> None:
    """What the intake hands the pipeline steps equals what they would read back from storage,
    types and parameter order included."""
    message = Message(
        device_time=DEVICE_TIME,
        received_at=DEVICE_TIME + timedelta(microseconds=received_us),
        adc=adc,
        driver_key=driver_key,
        params=params,
        from_black_box=black_box,
        filtered=filtered,
        **fields,
    )
    row = service.to_row(1, message)
    columns = ("device_time", "lat_e7", "lon_e7", "packed")
    read_back = service.from_stored_row(*(row[name] for name in columns))
    stored = service.stored_form(message)
    assert stored == read_back
    for name in (*FIELDS, "lat", "lon", "received_at"):
        assert same(getattr(stored, name), getattr(read_back, name)), name
    assert list(stored.params) == list(read_back.params)
    assert all(same(stored.params[k], v) for k, v in read_back.params.items())
