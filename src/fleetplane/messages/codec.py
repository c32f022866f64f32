"""The packed part of a message row: every value but the key and the position, in the few
dozen bytes a tracker report really holds (see docs/decisions.md, "Message row layout").

A row is (device seq, device time, lat, lon, packed). Coordinates are integers of 1e-7
degree (about 1 cm). `packed` is, in order:

- a header (varint): bits 0-6 say which optional field follows (altitude, speed, course,
  satellites, HDOP, inputs, outputs, in that order), bits 7-9 are the message flags, so it is
  one byte unless a flag is set; higher bits are zero (a later format may use them);
- received_at - device_time in milliseconds (zigzag varint);
- each present field: an integer as a zigzag varint; a float as `n << 1` when it is a whole
  number of its usual unit (`_FIELD_UNITS`: metres, km/h, degrees, tenths of HDOP), else as
  `number << 1 | 1` (below);
- the parameters, in their order, each `key byte, [name], value`.

Numbers: a float that is exactly `m / 10**d` (what a device prints: 12.5, 0.9) is the varint
`m << 4 | d << 1 | sign`, d in 0..6; any other float (a product such as knots * 1.852, -0.0, a
huge value) is d = 7 followed by its 8 bytes. So every value comes back exactly as it was
given; only coordinates are rounded (to 1e-7 degree) and received_at (to the millisecond).

Parameter key byte: `code << 3 | kind`. Codes 0..30 name a common parameter
(`KNOWN_PARAMS`, append-only: stored rows refer to these positions); 31 means the name
follows (varint length, UTF-8). Kinds are listed at `_Kind`.
"""

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

import orjson

COORDINATE_SCALE = 10_000_000  # 1e-7 degree

# Append only: a stored row names its parameters by position in this tuple.
KNOWN_PARAMS = (
    "ign", "fuel", "pwr_ext", "pwr_int", "odometer", "engine_hours", "driver_key",
    "adc1", "adc2", "adc3", "adc4", "adc5", "adc6", "adc7", "adc8",
    "accuracy", "batt", "charge", "gsm", "mileage", "temp1", "temp2", "rpm",
    "SOS", "mcc", "mnc", "lac", "cell_id", "text",
)  # fmt: skip
_NAME_FOLLOWS = 31
assert len(KNOWN_PARAMS) < _NAME_FOLLOWS

_FIELDS = ("altitude", "speed", "course", "satellites", "hdop", "inputs", "outputs")
_FLAGS_SHIFT = len(_FIELDS)
_MAX_FLAGS = 8  # 3 bits
# A float field's usual resolution (steps per unit) and whether that form is signed (zigzag):
# altitude in metres (signed), speed in km/h, course in degrees, HDOP in tenths. The integer
# fields (satellites, inputs, outputs) are zigzag varints.
_ALTITUDE_SCALE = _SPEED_SCALE = _COURSE_SCALE = 1
_HDOP_SCALE = 10
_MAX_DECIMALS = 6  # 7 in a number's d bits means "the 8 bytes of a double follow"
_WHOLE_DOUBLE = 7
_MAX_EXACT_MANTISSA = 2**53
_POWERS_OF_TEN = tuple(10**decimals for decimals in range(_MAX_DECIMALS + 1))
# Below these, one rounding finds a value's decimals (`_decimals_at_once`), by the most decimals.
_ONE_ROUNDING_LIMITS = tuple(2**50 / scale for scale in _POWERS_OF_TEN)
_SHORT_DECIMALS_LIMIT = _ONE_ROUNDING_LIMITS[3]
_DOUBLE = struct.Struct("<d")
_MILLISECOND = timedelta(milliseconds=1)


class _Kind(IntEnum):
    INTEGER = 0  # varint
    NEGATIVE_INTEGER = 1  # varint of -value - 1
    TENTHS = 2  # varint m << 1 | sign: m / 10
    HUNDREDTHS = 3  # m / 100
    THOUSANDTHS = 4  # m / 1000
    NUMBER = 5  # a number (see above)
    TEXT = 6  # varint length << 2 | _Text, then the bytes
    RESERVED = 7  # a later format's


class _Text(IntEnum):
    UTF8 = 0
    UPPER_HEX = 1  # upper-case hex digits (a driver key), stored as the bytes they spell
    JSON = 2  # anything else a parameter held (true, null, ...)


# Plain ints of the enums for the hot paths: arithmetic and comparisons on IntEnum members
# go through Python-level methods and cost several times more.
_INTEGER, _NEGATIVE_INTEGER = int(_Kind.INTEGER), int(_Kind.NEGATIVE_INTEGER)
_TENTHS, _HUNDREDTHS, _THOUSANDTHS = (
    int(_Kind.TENTHS),
    int(_Kind.HUNDREDTHS),
    int(_Kind.THOUSANDTHS),
)
_NUMBER, _TEXT, _RESERVED = int(_Kind.NUMBER), int(_Kind.TEXT), int(_Kind.RESERVED)
_UTF8, _UPPER_HEX, _JSON = int(_Text.UTF8), int(_Text.UPPER_HEX), int(_Text.JSON)

# A parameter's key byte without its kind: `code << 3`.
_KEY_BASES = {name: code << 3 for code, name in enumerate(KNOWN_PARAMS)}
_NAME_FOLLOWS_KEY = _NAME_FOLLOWS << 3
_HEX_DIGITS = "0123456789ABCDEF"

# Varints below 2**14 (one or two bytes: nearly every value a report holds) are looked up.
_SMALL_VARINT_LIMIT = 1 << 14


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_encode_varint(value) for value in range(_SMALL_VARINT_LIMIT))

# The `[name length] name` of parameters outside KNOWN_PARAMS, as stored: a device sends the
# same few names again and again. Bounded, as the names come from devices.
_NAME_TEXTS: dict[str, bytes] = {}
_NAME_TEXTS_LIMIT = 4096


@dataclass(slots=True)
class Unpacked:
    received_at: datetime
    altitude: float | None
    speed: float | None
    course: float | None
    satellites: int | None
    hdop: float | None
    inputs: int | None
    outputs: int | None
    params: dict[str, Any]
    flags: int


def to_coordinate(degrees: float | None) -> int | None:
    return None if degrees is None else round(degrees * COORDINATE_SCALE)


def from_coordinate(stored: int | None) -> float | None:
    return None if stored is None else stored / COORDINATE_SCALE


def pack(
    device_time: datetime,
    received_at: datetime,
    fields: Mapping[str, Any],
    params: Mapping[str, Any],
    flags: int,
) -> bytes:
    """`fields` holds the `_FIELDS` names (missing or None: not available), each value of the
    type of `pack_values`' argument of that name."""
    get = fields.get
    return pack_values(
        device_time,
        received_at,
        get("altitude"),
        get("speed"),
        get("course"),
        get("satellites"),
        get("hdop"),
        get("inputs"),
        get("outputs"),
        params,
        flags,
    )


def pack_values(
    device_time: datetime,
    received_at: datetime,
    altitude: float | None,
    speed: float | None,
    course: float | None,
    satellites: int | None,
    hdop: float | None,
    inputs: int | None,
    outputs: int | None,
    params: Mapping[str, Any],
    flags: int,
) -> bytes:
    """`pack` with the fields as arguments (None: not available): the writer's hot path,
    without a dictionary of fields to build and look up per message."""
    if not 0 <= flags < _MAX_FLAGS:
        raise ValueError(f"flags must fit 3 bits, not {flags}")
    header = (
        (altitude is not None)
        | (speed is not None) << 1
        | (course is not None) << 2
        | (satellites is not None) << 3
        | (hdop is not None) << 4
        | (inputs is not None) << 5
        | (outputs is not None) << 6
        | flags << _FLAGS_SHIFT
    )
    out = bytearray(_SMALL_VARINTS[header])  # below 2**10
    _varint(out, _zigzag((received_at - device_time) // _MILLISECOND))
    # A field's usual form is looked up (`_usual_forms`); zero goes the long way, as -0.0 is
    # equal to it but is stored as a number to keep its sign.
    if altitude is not None:
        usual = _ALTITUDE_FORMS.get(altitude)
        if usual is not None and altitude:
            out += usual
        else:
            _field(out, float(altitude), _ALTITUDE_SCALE, True)
    if speed is not None:
        usual = _WHOLE_UNIT_FORMS.get(speed)
        if usual is not None and speed:
            out += usual
        else:
            _field(out, float(speed), _SPEED_SCALE, False)
    if course is not None:
        usual = _WHOLE_UNIT_FORMS.get(course)
        if usual is not None and course:
            out += usual
        else:
            _field(out, float(course), _COURSE_SCALE, False)
    if satellites is not None:
        _varint(out, _zigzag(int(satellites)))
    if hdop is not None:
        usual = _HDOP_FORMS.get(hdop)
        if usual is not None and hdop:
            out += usual
        else:
            _field(out, float(hdop), _HDOP_SCALE, False)
    if inputs is not None:
        _varint(out, _zigzag(int(inputs)))
    if outputs is not None:
        _varint(out, _zigzag(int(outputs)))
    if params:
        _params(out, params)
    return bytes(out)


def unpack(device_time: datetime, packed: bytes) -> Unpacked:
    return Unpacked(*unpack_values(device_time, packed))


# `Unpacked`'s fields, in order.
UnpackedValues = tuple[
    datetime,
    float | None,
    float | None,
    float | None,
    int | None,
    float | None,
    int | None,
    int | None,
    dict[str, Any],
    int,
]


def unpack_values(device_time: datetime, packed: bytes) -> UnpackedValues:
    """`unpack`'s values as a tuple, for a caller that makes its own object of them (a stored
    message read back: every one the pipeline steps take in)."""
    # One function with the common one- and two-byte varints read in line: it runs for every
    # stored row read back, and a call per value would cost more than the value's decoding
    # (the fields' decoding takes half the time so).
    data = packed
    header = data[0]
    position = 1
    if header > 0x7F:
        header, position = _varint_at(data, 0)
    if header >> _FLAGS_SHIFT + 3:
        raise ValueError("a packed message of a newer format")
    delta = data[position]
    if delta < 0x80:
        position += 1
    elif data[position + 1] < 0x80:
        delta = delta & 0x7F | data[position + 1] << 7
        position += 2
    else:
        delta, position = _varint_at(data, position)
    received_at = device_time + _MILLISECOND * (delta >> 1 if not delta & 1 else -(delta >> 1) - 1)
    altitude = speed = course = hdop = None
    satellites = inputs = outputs = None
    if header & 1:
        value = data[position]
        if value < 0x80:
            position += 1
        elif data[position + 1] < 0x80:
            value = value & 0x7F | data[position + 1] << 7
            position += 2
        else:
            value, position = _varint_at(data, position)
        if value & 1:
            altitude, position = _number_at(data, position, value >> 1)
        else:
            value >>= 1
            altitude = (value >> 1 if not value & 1 else -(value >> 1) - 1) / _ALTITUDE_SCALE
    if header & 2:
        value = data[position]
        if value < 0x80:
            position += 1
        elif data[position + 1] < 0x80:
            value = value & 0x7F | data[position + 1] << 7
            position += 2
        else:
            value, position = _varint_at(data, position)
        if value & 1:
            speed, position = _number_at(data, position, value >> 1)
        else:
            speed = (value >> 1) / _SPEED_SCALE
    if header & 4:
        value = data[position]
        if value < 0x80:
            position += 1
        elif data[position + 1] < 0x80:
            value = value & 0x7F | data[position + 1] << 7
            position += 2
        else:
            value, position = _varint_at(data, position)
        if value & 1:
            course, position = _number_at(data, position, value >> 1)
        else:
            course = (value >> 1) / _COURSE_SCALE
    if header & 8:
        satellites = data[position]
        position += 1
        if satellites > 0x7F:
            satellites, position = _varint_at(data, position - 1)
        satellites = satellites >> 1 if not satellites & 1 else -(satellites >> 1) - 1
    if header & 16:
        value = data[position]
        if value < 0x80:
            position += 1
        elif data[position + 1] < 0x80:
            value = value & 0x7F | data[position + 1] << 7
            position += 2
        else:
            value, position = _varint_at(data, position)
        if value & 1:
            hdop, position = _number_at(data, position, value >> 1)
        else:
            hdop = (value >> 1) / _HDOP_SCALE
    if header & 32:
        inputs = data[position]
        position += 1
        if inputs > 0x7F:
            inputs, position = _varint_at(data, position - 1)
        inputs = inputs >> 1 if not inputs & 1 else -(inputs >> 1) - 1
    if header & 64:
        outputs = data[position]
        position += 1
        if outputs > 0x7F:
            outputs, position = _varint_at(data, position - 1)
        outputs = outputs >> 1 if not outputs & 1 else -(outputs >> 1) - 1
    params = _params_at(data, position) if position < len(data) else {}
    return (
        received_at,
        altitude,
        speed,
        course,
        satellites,
        hdop,
        inputs,
        outputs,
        params,
        header >> _FLAGS_SHIFT,
    )


# --- writing ------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    if value < _SMALL_VARINT_LIMIT:
        out += _SMALL_VARINTS[value]
        return
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -(value >> 1) - 1


def _field(out: bytearray, value: float, scale: int, signed: bool) -> None:
    """A float field: `n << 1` when value == n / scale exactly (and n >= 0 unless the form is
    signed), else its number, tagged (`number << 1 | 1`)."""
    try:
        usual = round(value * scale)
    except (OverflowError, ValueError):  # infinite or NaN: not a whole number of units
        usual = None
    if (
        usual is not None
        and usual / scale == value
        and -_MAX_EXACT_MANTISSA < usual < _MAX_EXACT_MANTISSA
        and (signed or usual >= 0)
        and (usual or math.copysign(1.0, value) > 0)  # -0.0 keeps its sign as a number
    ):
        _varint(out, (usual * 2 if usual >= 0 else -usual * 2 - 1) << 1 if signed else usual << 1)
    else:
        _number(out, value, tagged=True)


def _decimals(magnitude: float, first: int, last: int) -> tuple[int, int] | None:
    """(m, d): the fewest decimals d in first..last with m / 10**d == magnitude exactly (m
    below 2**53; m = round(magnitude * 10**d), the first d that gives the value back), or None.
    `magnitude` is >= 0 and not -0.0."""
    if magnitude < _ONE_ROUNDING_LIMITS[last]:
        return _decimals_at_once(magnitude, first, last)
    for decimals in range(first, last + 1):
        scale = _POWERS_OF_TEN[decimals]
        try:
            scaled = round(magnitude * scale)
        except (OverflowError, ValueError):  # infinite or NaN, and so with more decimals
            return None
        if scaled < _MAX_EXACT_MANTISSA and scaled / scale == magnitude:
            return scaled, decimals
    return None


def _decimals_at_once(magnitude: float, first: int, last: int) -> tuple[int, int] | None:
    """`_decimals` with one rounding instead of one per d, for magnitude * 10**last < 2**50.

    Why it gives the same answer: when m / 10**d == magnitude (division correctly rounded)
    and m < 2**51, magnitude * 10**d is within m * 2**-52 < 0.5 of m, so it rounds to m; and
    m * 10**k / 10**(d + k) is the same rational, so it gives the same double. Hence d is
    accepted exactly when M = round(magnitude * 10**last) gives the value back and is a
    multiple of 10**(last - d): the fewest decimals are M's trailing zeros stripped."""
    scale = _POWERS_OF_TEN[last]
    scaled = round(magnitude * scale)
    if scaled / scale != magnitude:
        return None
    decimals = last
    while decimals > first and not scaled % 10:
        scaled //= 10
        decimals -= 1
    return scaled, decimals


def _is_negative_zero(value: float) -> bool:
    return value == 0 and math.copysign(1.0, value) < 0


def _number(out: bytearray, value: float, *, tagged: bool = False) -> None:
    """A float as a number (module docstring); `tagged` shifts it left and sets bit 0, to tell
    it from a field's usual form in the same varint."""
    parts = None if _is_negative_zero(value) else _decimals(abs(value), 0, _MAX_DECIMALS)
    if parts is None:
        number = _WHOLE_DOUBLE << 1
    else:
        mantissa, decimals = parts
        number = mantissa << 4 | decimals << 1 | (value < 0)
    _varint(out, number << 1 | 1 if tagged else number)
    if parts is None:
        out += _DOUBLE.pack(value)


def _params(out: bytearray, params: Mapping[str, Any]) -> None:
    """Each parameter's `key byte, [name], value`. Ints and floats, nearly all of a report's
    values, are written here in line; other values by `_other_value`."""
    key_bases = _KEY_BASES
    small = _SMALL_VARINTS
    for name, value in params.items():
        base = key_bases.get(name)
        name_text = None
        if base is None:
            base = _NAME_FOLLOWS_KEY
            name_text = _NAME_TEXTS.get(name) or _name_text(name)
        kind_of_value = type(value)
        if kind_of_value is int:
            kind = _INTEGER if value >= 0 else _NEGATIVE_INTEGER
            payload = value if value >= 0 else -value - 1
        elif kind_of_value is float and (
            0 < (magnitude := value if value > 0 else -value) < _SHORT_DECIMALS_LIMIT
        ):
            # m / 10**d with d in 1..3, the fewest decimals: `_decimals_at_once` in line
            scaled = round(magnitude * 1000)
            if scaled / 1000 != magnitude:
                _other_value(out, base, name_text, value)  # more decimals, or none exact
                continue
            if not scaled % 100:
                kind = _TENTHS
                scaled //= 100
            elif not scaled % 10:
                kind = _HUNDREDTHS
                scaled //= 10
            else:
                kind = _THOUSANDTHS
            payload = scaled << 1 | (value < 0)
        elif kind_of_value is float and value == 0 and math.copysign(1.0, value) > 0:  # not -0.0
            kind = _TENTHS
            payload = 0
        elif kind_of_value is str:
            out.append(base | _TEXT)
            if name_text is not None:
                out += name_text
            if _is_upper_hex(value):
                _text(out, bytes.fromhex(value), _UPPER_HEX)
            else:
                _text(out, value.encode(), _UTF8)
            continue
        else:
            _other_value(out, base, name_text, value)
            continue
        out.append(base | kind)
        if name_text is not None:
            out += name_text
        if payload < _SMALL_VARINT_LIMIT:
            out += small[payload]
        else:
            _varint(out, payload)


def _name_text(name: str) -> bytes:
    text = bytes(_text_bytes(name.encode(), _UTF8))
    if len(_NAME_TEXTS) < _NAME_TEXTS_LIMIT:
        _NAME_TEXTS[name] = text
    return text


def _other_value(out: bytearray, base: int, name_text: bytes | None, value: Any) -> None:
    """A parameter whose value is not a plain int or a short decimal float."""
    payload = bytearray()
    kind = _other_payload(payload, value)
    out.append(base | kind)
    if name_text is not None:
        out += name_text
    out += payload


def _other_payload(out: bytearray, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):  # an int subclass
        _varint(out, value if value >= 0 else -value - 1)
        return _INTEGER if value >= 0 else _NEGATIVE_INTEGER
    if isinstance(value, float):
        value = float(value)  # a float subclass is stored as its float
        short = None if _is_negative_zero(value) else _decimals(abs(value), 1, 3)
        if short is not None:
            _varint(out, short[0] << 1 | (value < 0))
            return _TENTHS - 1 + short[1]
        _number(out, value)
        return _NUMBER
    if isinstance(value, str):
        if _is_upper_hex(value):
            out += _text_bytes(bytes.fromhex(value), _UPPER_HEX)
        else:
            out += _text_bytes(value.encode(), _UTF8)
        return _TEXT
    out += _text_bytes(orjson.dumps(value), _JSON)
    return _TEXT


def _is_upper_hex(text: str) -> bool:
    return len(text) % 2 == 0 and text != "" and text.isascii() and not text.strip(_HEX_DIGITS)


def _text(out: bytearray, data: bytes, subtype: int) -> None:
    _varint(out, len(data) << 2 | subtype)
    out += data


def _text_bytes(data: bytes, subtype: int) -> bytearray:
    out = bytearray()
    _text(out, data, subtype)
    return out


def _usual_forms(steps: range, scale: int, signed: bool) -> dict[float, bytes]:
    """The stored usual form (`n << 1`, n zigzagged when signed) of the values n / scale, n in
    `steps`, by value: what `_field` writes for them."""
    forms = {}
    for step in steps:
        out = bytearray()
        _field(out, step / scale, scale, signed)
        forms[step / scale] = bytes(out)
    return forms


# The usual forms of the common field values, looked up instead of computed per message: whole
# metres from -1,000 to 9,000, whole km/h and degrees to 1,023, HDOP to 99.9.
_ALTITUDE_FORMS = _usual_forms(range(-1000, 9001), _ALTITUDE_SCALE, True)
_WHOLE_UNIT_FORMS = _usual_forms(range(1024), _SPEED_SCALE, False)
_HDOP_FORMS = _usual_forms(range(1000), _HDOP_SCALE, False)
assert _SPEED_SCALE == _COURSE_SCALE


# --- reading ------------------------------------------------------------------------------

# A short decimal kind's divisor, by kind: TENTHS 10, HUNDREDTHS 100, THOUSANDTHS 1000.
_DIVISORS = (0, 0, 10, 100, 1000)


def _varint_at(data: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it."""
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    value = byte & 0x7F
    shift = 7
    while True:
        position += 1
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7


def _field_at(data: bytes, position: int, scale: int, signed: bool) -> tuple[float, int]:
    value = data[position]
    position += 1
    if value > 0x7F:
        value, position = _varint_at(data, position - 1)
    if value & 1:
        return _number_at(data, position, value >> 1)
    value >>= 1
    if signed:
        value = value >> 1 if not value & 1 else -(value >> 1) - 1
    return value / scale, position


def _number_at(data: bytes, position: int, number: int) -> tuple[float, int]:
    """The number `number` (module docstring), whose double, if any, is at `position`."""
    decimals = number >> 1 & 7
    if decimals == _WHOLE_DOUBLE:
        return _DOUBLE.unpack_from(data, position)[0], position + 8
    magnitude = (number >> 4) / _POWERS_OF_TEN[decimals]
    return (-magnitude if number & 1 else magnitude), position


def _params_at(data: bytes, position: int) -> dict[str, Any]:
    """The parameters from `position` to the end (see `_params`)."""
    params: dict[str, Any] = {}
    end = len(data)
    names = KNOWN_PARAMS
    divisors = _DIVISORS
    while position < end:
        key = data[position]
        position += 1
        code = key >> 3
        kind = key & 7
        if code == _NAME_FOLLOWS:
            length, position = _varint_at(data, position)
            start = position
            position += length >> 2
            name = data[start:position].decode()
        else:
            name = names[code]
        if kind == _RESERVED:
            raise ValueError("a packed message of a newer format")
        value = data[position]
        if value < 0x80:
            position += 1
        elif data[position + 1] < 0x80:  # two bytes: most values, read in line too
            value = value & 0x7F | data[position + 1] << 7
            position += 2
        else:
            value, position = _varint_at(data, position)
        if kind == _INTEGER:
            params[name] = value
        elif kind == _NEGATIVE_INTEGER:
            params[name] = -value - 1
        elif kind <= _THOUSANDTHS:
            magnitude = (value >> 1) / divisors[kind]
            params[name] = -magnitude if value & 1 else magnitude
        elif kind == _NUMBER:
            params[name], position = _number_at(data, position, value)
        else:
            params[name], position = _text_at(data, position, value)
    return params


def _text_at(data: bytes, position: int, header: int) -> tuple[Any, int]:
    """A TEXT parameter's value, whose `header` (length << 2 | subtype) was just read."""
    start = position
    position += header >> 2
    raw = data[start:position]
    subtype = header & 3
    if subtype == _UTF8:
        return raw.decode(), position
    if subtype == _UPPER_HEX:
        return raw.hex().upper(), position
    return orjson.loads(raw), position
