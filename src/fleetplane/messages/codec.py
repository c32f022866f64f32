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
_KNOWN_CODES = {name: code for code, name in enumerate(KNOWN_PARAMS)}
assert len(KNOWN_PARAMS) < _NAME_FOLLOWS

_FIELDS = ("altitude", "speed", "course", "satellites", "hdop", "inputs", "outputs")
_INTEGER_FIELDS = frozenset({"satellites", "inputs", "outputs"})
# A float field's usual resolution (steps per unit) and whether that form is signed (zigzag).
_FIELD_UNITS = {
    "altitude": (1, True),
    "speed": (1, False),
    "course": (1, False),
    "hdop": (10, False),
}
_MAX_DECIMALS = 6  # 7 in a number's d bits means "the 8 bytes of a double follow"
_WHOLE_DOUBLE = 7
_MAX_EXACT_MANTISSA = 2**53
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


_SHORT_DECIMAL_KINDS = {1: _Kind.TENTHS, 2: _Kind.HUNDREDTHS, 3: _Kind.THOUSANDTHS}
_KIND_DECIMALS = {kind: decimals for decimals, kind in _SHORT_DECIMAL_KINDS.items()}


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
    fields: Mapping[str, float | int | None],
    params: Mapping[str, Any],
    flags: int,
) -> bytes:
    """`fields` holds the `_FIELDS` names (missing or None: not available)."""
    if not 0 <= flags < 8:
        raise ValueError(f"flags must fit 3 bits, not {flags}")
    present = sum(1 << bit for bit, name in enumerate(_FIELDS) if fields.get(name) is not None)
    out = bytearray()
    _varint(out, present | flags << len(_FIELDS))
    _varint(out, _zigzag((received_at - device_time) // _MILLISECOND))
    for name in _FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if name in _INTEGER_FIELDS:
            _varint(out, _zigzag(int(value)))
        else:
            _field(out, name, float(value))
    for name, value in params.items():
        _param(out, name, value)
    return bytes(out)


def unpack(device_time: datetime, packed: bytes) -> Unpacked:
    reader = _Reader(packed)
    header = reader.varint()
    if header >> len(_FIELDS) + 3:
        raise ValueError("a packed message of a newer format")
    received_at = device_time + reader.zigzag() * _MILLISECOND
    values: dict[str, Any] = {}
    for bit, name in enumerate(_FIELDS):
        if not header & (1 << bit):
            values[name] = None
        elif name in _INTEGER_FIELDS:
            values[name] = reader.zigzag()
        else:
            values[name] = reader.field(name)
    params = {}
    while reader.position < len(packed):
        name, value = reader.param()
        params[name] = value
    flags = header >> len(_FIELDS)
    return Unpacked(received_at=received_at, params=params, flags=flags, **values)


# --- writing ------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -(value >> 1) - 1


def _is_negative_zero(value: float) -> bool:
    return value == 0 and math.copysign(1, value) < 0


def _scaled(value: float, scale: int) -> int | None:
    """n with n / scale == value exactly (the reader divides), or None."""
    product = value * scale
    if not math.isfinite(product) or _is_negative_zero(value):
        return None
    scaled = round(product)
    if abs(scaled) < _MAX_EXACT_MANTISSA and scaled / scale == value:
        return scaled
    return None


def _decimals(value: float, decimals: range) -> tuple[int, int] | None:
    """(m, d): the fewest decimals d in `decimals` with m / 10**d == |value| exactly."""
    if _is_negative_zero(value):
        return None  # its sign would be lost: it is stored whole
    for d in decimals:
        scaled = _scaled(abs(value), 10**d)
        if scaled is not None:
            return scaled, d
    return None


def _field(out: bytearray, name: str, value: float) -> None:
    scale, signed = _FIELD_UNITS[name]
    usual = _scaled(value, scale)
    if usual is not None and (signed or usual >= 0):
        _varint(out, (_zigzag(usual) if signed else usual) << 1)
    else:
        _number(out, value, tagged=True)


def _number(out: bytearray, value: float, *, tagged: bool = False) -> None:
    """A float as a number (module docstring); `tagged` shifts it left and sets bit 0, to tell
    it from a field's usual form in the same varint."""
    parts = _decimals(value, range(_MAX_DECIMALS + 1))
    if parts is None:
        number = _WHOLE_DOUBLE << 1
    else:
        mantissa, decimals = parts
        number = mantissa << 4 | decimals << 1 | (value < 0)
    _varint(out, number << 1 | 1 if tagged else number)
    if parts is None:
        out += _DOUBLE.pack(value)


def _param(out: bytearray, name: str, value: Any) -> None:
    code = _KNOWN_CODES.get(name, _NAME_FOLLOWS)
    payload = bytearray()
    kind = _param_value(payload, value)
    out.append(code << 3 | kind)
    if code == _NAME_FOLLOWS:
        _text(out, name.encode(), _Text.UTF8)
    out += payload


def _param_value(out: bytearray, value: Any) -> _Kind:
    if isinstance(value, int) and not isinstance(value, bool):
        _varint(out, value if value >= 0 else -value - 1)
        return _Kind.INTEGER if value >= 0 else _Kind.NEGATIVE_INTEGER
    if isinstance(value, float):
        short = _decimals(value, range(1, 4))
        if short is not None and short[1] in _SHORT_DECIMAL_KINDS:
            mantissa, decimals = short
            _varint(out, mantissa << 1 | (value < 0))
            return _SHORT_DECIMAL_KINDS[decimals]
        _number(out, value)
        return _Kind.NUMBER
    if isinstance(value, str):
        if _is_upper_hex(value):
            _text(out, bytes.fromhex(value), _Text.UPPER_HEX)
        else:
            _text(out, value.encode(), _Text.UTF8)
        return _Kind.TEXT
    _text(out, orjson.dumps(value), _Text.JSON)
    return _Kind.TEXT


def _is_upper_hex(text: str) -> bool:
    return (
        len(text) % 2 == 0
        and text != ""
        and text.isascii()
        and all(c in "0123456789ABCDEF" for c in text)
    )


def _text(out: bytearray, data: bytes, subtype: _Text) -> None:
    _varint(out, len(data) << 2 | subtype)
    out += data


# --- reading ------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def zigzag(self) -> int:
        return _unzigzag(self.varint())

    def double(self) -> float:
        (value,) = _DOUBLE.unpack_from(self.data, self.position)
        self.position += 8
        return value

    def field(self, name: str) -> float:
        value = self.varint()
        if value & 1:
            return self.number(value >> 1)
        scale, signed = _FIELD_UNITS[name]
        return (_unzigzag(value >> 1) if signed else value >> 1) / scale

    def number(self, value: int) -> float:
        decimals = value >> 1 & 7
        if decimals == _WHOLE_DOUBLE:
            return self.double()
        magnitude = (value >> 4) / 10**decimals
        return -magnitude if value & 1 else magnitude

    def text(self) -> tuple[bytes, int]:
        header = self.varint()
        start = self.position
        self.position += header >> 2
        return self.data[start : self.position], header & 3

    def param(self) -> tuple[str, Any]:
        key = self.data[self.position]
        self.position += 1
        code, kind = key >> 3, key & 7
        name = self.text()[0].decode() if code == _NAME_FOLLOWS else KNOWN_PARAMS[code]
        return name, self._param_value(kind)

    def _param_value(self, kind: int) -> Any:
        if kind == _Kind.INTEGER:
            return self.varint()
        if kind == _Kind.NEGATIVE_INTEGER:
            return -self.varint() - 1
        if kind in _KIND_DECIMALS:
            value = self.varint()
            magnitude = (value >> 1) / 10 ** _KIND_DECIMALS[kind]
            return -magnitude if value & 1 else magnitude
        if kind == _Kind.NUMBER:
            return self.number(self.varint())
        if kind == _Kind.TEXT:
            data, subtype = self.text()
            if subtype == _Text.UTF8:
                return data.decode()
            if subtype == _Text.UPPER_HEX:
                return data.hex().upper()
            return orjson.loads(data)
        raise ValueError("a packed message of a newer format")
