"""Wialon IPS 1.1 and 2.0: framing, per-connection state, UDP datagrams, server commands.

Everything here is pure: bytes in, frames / answers / decoded data out. The transport (TCP, UDP)
and storage live elsewhere. The protocol facts are in `specs/wialon-ips.md`; this docstring
records the choices made where that text is silent.

Using it on a TCP connection
----------------------------
One `WialonFramer` and one `WialonSession` per connection::

    framer, session = WialonFramer(), WialonSession()
    for frame in framer.feed(chunk):
        outcome = session.handle(frame, received_at=utcnow())
        if outcome.login is not None:
            result = await authenticate(outcome.login.imei, outcome.login.password)
            outcome = session.complete_login(result)
        if outcome.has_data:
            await store(session.imei, outcome)   # commit (or JetStream ack) first ...
        writer.write(outcome.answer)              # ... then acknowledge
        if outcome.close:
            break
    session.close()                               # drops unfinished files

`handle` never stores anything and never writes: an `Outcome` holds the answer bytes together
with the data they acknowledge, and the answer must be written only once that data is durable
(a data answer is the device's permission to delete its copy). Outcomes of several frames from
one read may be stored in one transaction and then answered in order, which is how a pipelining
device is batched; a login request is the only outcome that must be resolved (with
`complete_login`) before the next frame is handled. The password check is the caller's: it may
be an async database look-up, which is why the session asks instead of calling.

Choices where the protocol text is silent (real devices send all of these)
--------------------------------------------------------------------------
- Lines end with `\\r\\n`; a bare `\\n` is accepted too and empty lines are skipped.
- Limits (`WialonLimits`): a text line may be 2 MiB. That holds a black box of 5,000 messages
  of up to ~400 bytes each (typical messages are 100-250 bytes) and one `#D#` at the spec's
  parameter maxima in ASCII (200 x (38 + 3 + 1,344) bytes = 277 KB). A longer line is answered
  with its packet's structure error (e.g. `#AB#0`) and skipped up to its end without being
  buffered. A compressed packet is at most 64 KiB (its length field has two bytes;
  `max_compressed` may lower that) and must inflate to at most the same 2 MiB (zlib expands up
  to ~1,000 times, so 64 KiB could become 64 MiB). A binary block may be 1 MiB, an assembled
  image or tachograph file 16 MiB, and either may have at most 65,536 blocks. A compressed
  packet that is too long or does not inflate, a binary block whose size is unreadable or over
  the limit, and a line that is not a packet at all cannot be resynchronised: the session
  answers what it can and asks the caller to close. So a connection holds at most one line or
  block in memory; the blocks of its unfinished image and tachograph file wait in the
  `BlockSpool`s the caller provides (on disk over TCP), which may refuse a block (a cap on
  what a device has unfinished): the block is answered as refused and its file is dropped.
  `WialonSession.close` drops unfinished files when the connection ends.
- `NA` and an empty field mean "not available" in every value field.
- Date/time: both `NA` = receive time (`Message.device_time_missing`); one of them `NA` or a
  malformed value = time error (code 0). `HHMMSS.sss` fractions are kept.
- Coordinates: a coordinate whose value or hemisphere is `NA` (or empty) means "no fix": the
  message is kept without a position (a half position is useless). Lower-case hemispheres
  are accepted. A present but malformed value, a wrong hemisphere letter, minutes >= 60 or
  degrees beyond 90/180 are a coordinates error (code 10).
- Numbers: `.` or `,` decimals. Speed, satellites and HDOP must be >= 0, course within 0..360
  (360 is what many devices send for north); otherwise the field's error code. Altitude may be
  negative. Inputs/outputs are non-negative integers below 2**63 (a signed 64-bit column).
- ADC: a list item that is `NA` or empty is kept as None (so adc3 stays adc3); a malformed item
  is an ADC error (code 14). ADC and parameter decimals use `.` only: `,` separates items.
- Params (code 15 is for the list's structure): an item that is not `name:type:value`, an
  empty name, a type other than 1/2/3, or more than 200 items. A value that does not fit its
  type (not an integer / beyond 64 bits, not a finite decimal, a string over 1,344
  characters), an `NA` value, or a name over 38 characters drops that parameter only. A
  string value may contain `:`; an item that is not `name:type:value` right after a string
  parameter is the rest of that string (its `,` was part of the text), so chat texts with
  commas survive. In `#D#` the parameters are the last field, so a `;` inside a string value
  is kept too. Names and strings are stored as sent; reserved names (`SOS`, `text`, `mcc`,
  `mnc`, `lac`, `cell_id`) are ordinary parameters for the layers above.
- Text is UTF-8; a value whose bytes are not UTF-8 is decoded as Latin-1 (per value, so one
  odd string does not garble the rest of a black box). CRCs are always over the raw bytes.
- Black box: items may be SD or D bodies (told apart by field count); a bad item is skipped
  and not counted, so `#AB#n` counts the messages handed to storage. More than 5,000 items
  are accepted while the line fits the line limit. An empty black box is `#AB#0`.
- Data before login is refused with the packet's structure error, including `#AI#NA;0`,
  `#AIT#0` and `#AT#Ind;0`; `#P#` is answered `#AP#` at any time. A failed re-login logs the
  connection out (it stays bound to its IMEI); five failed logins in a row close it.
- `#AT#NA;0` answers a tachograph block whose index is unreadable (by analogy with
  `#AI#NA;0`, which the spec defines for images).
- Images and tachograph files are assembled in order: block 0 (re)starts a file, a repeated
  earlier block is acknowledged again without being stored twice, a block from the future is
  refused. The tachograph `Count` is read like the image one: the index of the last block.
  An image named `NA` is called `image_yyyymmdd_hhmmss`. In a tachograph file name, characters
  other than letters, digits, `.`, `-` and `_` in the driver id become `_`.
- A well-formed packet of an unknown type (`#XX#...`) is ignored without an answer; a line that
  is not `#TYPE#...` at all closes the connection.
- UDP: the same packet rules; compressed datagrams are accepted; nothing is answered.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Literal, Protocol

from fleetplane.telemetry import (
    DriverMessage,
    ImageFile,
    Message,
    ParamValue,
    TachographFile,
)

Version = Literal["1.1", "2.0"]

MAX_PARAMS = 200
MAX_PARAM_NAME = 38
MAX_PARAM_STRING = 1344
MAX_IMEI = 64
MAX_FAILED_LOGINS = 5
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_HUGE = 1e300  # anything at or beyond this is a parse artefact (inf, nan), not a measurement


@dataclass(frozen=True, slots=True)
class WialonLimits:
    """Memory bounds of one connection (see the module docstring for why these values)."""

    max_line: int = 2 * 1024 * 1024
    max_compressed: int = 65535  # the length field has two bytes: this is its own maximum
    max_inflated: int = 2 * 1024 * 1024
    max_block: int = 1024 * 1024
    max_file: int = 16 * 1024 * 1024
    max_blocks: int = 65536


DEFAULT_LIMITS = WialonLimits()

# Until a connection has logged in, it is anyone's: it may hold only what a login needs (a
# login packet is an IMEI, a password and a CRC, well under 1 KiB), not a 2 MiB line each.
LOGIN_LIMITS = WialonLimits(
    max_line=4096, max_compressed=4096, max_inflated=4096, max_block=0, max_file=0, max_blocks=0
)

# --------------------------------------------------------------------------------------------
# CRC-16/ARC
# --------------------------------------------------------------------------------------------


def _crc_byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_BYTE = _crc_byte_table()


# Most inputs are reduced as one GF(2) polynomial with big-integer shifts, which run at C speed:
# the reflected CRC equals the plain one (polynomial 0x8005) over bit-reversed bytes, reversed.
# Folding splits the polynomial V = H * x**k + L and replaces it by H * (x**k mod P) + L,
# halving its length with one shift per set bit of the 16-bit constant.
_FOLD_THRESHOLD = 64
_POLY = 0x18005
_BIT_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))
_CHUNK_BITS = 64
_CHUNK_SPLITS = 1024  # splits at multiples of 64 bits up to 64 Kibit; powers of two beyond


def _poly_mod(value: int) -> int:
    length = value.bit_length()
    while length > 16:
        value ^= _POLY << (length - 17)
        length = value.bit_length()
    return value


def _carryless_multiply(value: int, factor: int) -> int:
    product = 0
    while factor:
        lowest = factor & -factor
        product ^= value * lowest
        factor ^= lowest
    return product


def _set_bits(value: int) -> tuple[int, ...]:
    return tuple(bit for bit in range(value.bit_length()) if value >> bit & 1)


def _fold_constants_by_chunk() -> list[tuple[int, ...]]:
    """Set bits of x**(64 * m) mod P, for m in range(_CHUNK_SPLITS)."""
    step = _poly_mod(1 << _CHUNK_BITS)
    power, constants = 1, []
    for _ in range(_CHUNK_SPLITS):
        constants.append(_set_bits(power))
        power = _poly_mod(_carryless_multiply(power, step))
    return constants


def _fold_constants_by_power() -> list[tuple[int, ...]]:
    """Set bits of x**(2**i) mod P, for i in range(48)."""
    power, constants = 2, []
    for _ in range(48):
        constants.append(_set_bits(power))
        power = _poly_mod(_carryless_multiply(power, power))
    return constants


def _tail_tables() -> list[list[int]]:
    """(byte * x**(16 + 8 * j)) mod P for the six bytes above the low 16 bits of 64."""
    return [[_poly_mod(byte << (16 + 8 * j)) for byte in range(256)] for j in range(6)]


_FOLD_BY_CHUNK = _fold_constants_by_chunk()
_FOLD_BY_POWER = _fold_constants_by_power()
_T0, _T1, _T2, _T3, _T4, _T5 = _tail_tables()


def _crc_by_folding(data: bytes) -> int:
    value = int.from_bytes(data.translate(_BIT_REVERSED), "big") << 16
    length = value.bit_length()
    while length > 64:
        chunks = length >> 7  # half the length, in 64-bit chunks
        if chunks < _CHUNK_SPLITS:
            split = (chunks or 1) * _CHUNK_BITS
            bits = _FOLD_BY_CHUNK[chunks or 1]
        else:
            exponent = length.bit_length() - 2
            split = 1 << exponent
            bits = _FOLD_BY_POWER[exponent]
        high = value >> split
        value &= (1 << split) - 1
        for bit in bits:
            value ^= high << bit
        length = value.bit_length()
    remainder = (
        (value & 0xFFFF)
        ^ _T0[value >> 16 & 0xFF]
        ^ _T1[value >> 24 & 0xFF]
        ^ _T2[value >> 32 & 0xFF]
        ^ _T3[value >> 40 & 0xFF]
        ^ _T4[value >> 48 & 0xFF]
        ^ _T5[value >> 56]
    )
    return _BIT_REVERSED[remainder & 0xFF] << 8 | _BIT_REVERSED[remainder >> 8]


def _crc_by_bytes(data: bytes) -> int:
    crc = 0
    table = _CRC_BYTE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, initial value 0, no final xor)."""
    if len(data) >= _FOLD_THRESHOLD:
        return _crc_by_folding(data)
    return _crc_by_bytes(data)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_crc_field(text: str | bytes) -> int | None:
    """The value of a device's CRC field: 1-4 hex digits, any case, optional `0x`; else None."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if not 0 < len(text) <= 4 or not _HEX_DIGITS.issuperset(text):
        return None
    return int(text, 16)


def crc_matches(crc_field: str | bytes, covered: bytes) -> bool:
    return parse_crc_field(crc_field) == crc16(covered)


def crc_text(data: bytes) -> str:
    """The CRC as written by the server: four upper-case hex digits."""
    return f"{crc16(data):04X}"


# --------------------------------------------------------------------------------------------
# Field decoding (shared by TCP and UDP)
# --------------------------------------------------------------------------------------------


class _Refused(Exception):
    """A field the answer table has a code for; raised only off the happy path."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


CODE_STRUCTURE = -1
CODE_TIME = 0
CODE_OK = 1
CODE_COORDINATES = 10
CODE_SPEED_COURSE_ALTITUDE = 11
CODE_SATELLITES_HDOP = 12
CODE_INPUTS_OUTPUTS = 13
CODE_SHORT_DATA_CRC = 13
CODE_ADC = 14
CODE_PARAMS = 15
CODE_DATA_CRC = 16

_FRACTIONAL_TIME = re.compile(r"(\d{6})[.,](\d{1,6})\d*")
_LAT_SIGNS = {"N": 1.0, "S": -1.0, "n": 1.0, "s": -1.0}
_LON_SIGNS = {"E": 1.0, "W": -1.0, "e": 1.0, "w": -1.0}


def _device_time(date: str, time: str) -> datetime | None:
    """UTC from DDMMYY + HHMMSS; None when both are `NA` (use the receive time)."""
    if len(date) == 6 and len(time) == 6 and date.isdigit() and time.isdigit():
        try:
            day_month_year = int(date)
            clock = int(time)
            return datetime(
                2000 + day_month_year % 100,
                day_month_year // 100 % 100,
                day_month_year // 10000,
                clock // 10000,
                clock // 100 % 100,
                clock % 100,
                0,
                UTC,
            )
        except ValueError:
            raise _Refused(CODE_TIME, f"no such date/time {date};{time}") from None
    return _unusual_device_time(date, time)


def _unusual_device_time(date: str, time: str) -> datetime | None:
    if _absent(date) and _absent(time):
        return None
    fraction = _FRACTIONAL_TIME.fullmatch(time)
    if fraction is None or len(date) != 6 or len(time) == 6 or not date.isdigit():
        raise _Refused(CODE_TIME, f"bad date/time {date[:10]!r};{time[:10]!r}")
    whole = _device_time(date, fraction.group(1))
    assert whole is not None
    return whole.replace(microsecond=int(fraction.group(2).ljust(6, "0")))


def _absent(text: str) -> bool:
    return not text or text == "NA"


def _decimal(text: str, code: int, what: str) -> float | None:
    if not text or text == "NA":
        return None
    try:
        value = float(text)
    except ValueError:
        value = _comma_decimal(text, code, what)
    if not -_HUGE < value < _HUGE:
        raise _Refused(code, f"{what} is not a finite number: {text[:20]!r}")
    return value


def _comma_decimal(text: str, code: int, what: str) -> float:
    try:
        return float(text.replace(",", ".", 1))
    except ValueError:
        raise _Refused(code, f"{what} is not a number: {text[:20]!r}") from None


def _non_negative(text: str, code: int, what: str) -> float | None:
    value = _decimal(text, code, what)
    if value is not None and value < 0:
        raise _Refused(code, f"{what} is negative: {text[:20]!r}")
    return value


def _course(text: str) -> float | None:
    value = _decimal(text, CODE_SPEED_COURSE_ALTITUDE, "course")
    if value is not None and not 0 <= value <= 360:
        raise _Refused(CODE_SPEED_COURSE_ALTITUDE, f"course out of 0..360: {text[:20]!r}")
    return value


Motion = tuple[float | None, float | None, float | None, float | None]
MAX_SATELLITES = 255


def _motion(speed: str, course: str, altitude: str, satellites: str) -> Motion:
    """(speed, course, altitude, satellites); one check for the usual all-numbers case."""
    if speed and course and altitude and satellites and "NA" not in (speed, course, altitude):
        try:
            values = float(speed), float(course), float(altitude), float(satellites)
        except ValueError:
            pass  # comma decimals or garbage: the field-by-field path says which
        else:
            if (
                0 <= values[0] < _HUGE
                and 0 <= values[1] <= 360
                and -_HUGE < values[2] < _HUGE
                and 0 <= values[3] <= MAX_SATELLITES
            ):
                return values
    return (
        _non_negative(speed, CODE_SPEED_COURSE_ALTITUDE, "speed"),
        _course(course),
        _decimal(altitude, CODE_SPEED_COURSE_ALTITUDE, "altitude"),
        _satellites(satellites),
    )


def _satellites(text: str) -> float | None:
    # No receiver tracks more than a few dozen satellites; a count beyond a byte is garbage
    # (and would not fit where it is stored).
    value = _non_negative(text, CODE_SATELLITES_HDOP, "satellites")
    if value is not None and value > MAX_SATELLITES:
        raise _Refused(CODE_SATELLITES_HDOP, f"impossible satellite count {text[:20]!r}")
    return value


def _coordinate(text: str, limit: float) -> float:
    """Unsigned decimal degrees from NMEA-style `DDMM.MMMM` (or `DDDMM.MMMM`)."""
    try:
        value = float(text)
    except ValueError:
        value = _comma_decimal(text, CODE_COORDINATES, "coordinate")
    if 0 <= value < _HUGE:
        degrees = value // 100
        minutes = value - degrees * 100
        result = degrees + minutes / 60
        if minutes < 60 and result <= limit:
            return result
    raise _Refused(CODE_COORDINATES, f"bad coordinate {text[:20]!r}")


def _position(
    lat_text: str, lat_side: str, lon_text: str, lon_side: str
) -> tuple[float, float] | tuple[None, None]:
    lat_sign = _LAT_SIGNS.get(lat_side)
    lon_sign = _LON_SIGNS.get(lon_side)
    if (
        lat_sign is not None
        and lon_sign is not None
        and lat_text
        and lon_text
        and lat_text != "NA"
        and lon_text != "NA"
    ):
        return _coordinate(lat_text, 90.0) * lat_sign, _coordinate(lon_text, 180.0) * lon_sign
    if _absent(lat_text) or _absent(lat_side) or _absent(lon_text) or _absent(lon_side):
        return None, None  # no fix
    raise _Refused(CODE_COORDINATES, f"bad hemisphere {lat_side[:5]!r}/{lon_side[:5]!r}")


def _bit_mask(text: str) -> int | None:
    if not text or text == "NA":
        return None
    if text.isascii() and text.isdigit() and len(text) <= 19:
        value = int(text)
        if value <= _INT64_MAX:
            return value
    raise _Refused(CODE_INPUTS_OUTPUTS, f"not a bit mask: {text[:25]!r}")


def _adc(text: str) -> tuple[float | None, ...]:
    if not text or text == "NA":
        return ()
    try:
        values = tuple(map(float, text.split(",")))
    except ValueError:
        values = ()  # NA items or garbage: the item-by-item path says which
    for value in values:
        if not -_HUGE < value < _HUGE:
            break
    else:
        if values:
            return values
    return tuple([_decimal(item, CODE_ADC, "ADC value") for item in text.split(",")])


def _set_string_param(params: dict[str, ParamValue], name: str, value: str) -> None:
    if len(value) <= MAX_PARAM_STRING and len(name) <= MAX_PARAM_NAME and value != "NA":
        params[name] = value
    else:
        params.pop(name, None)


def _params(text: str) -> dict[str, ParamValue]:
    params: dict[str, ParamValue] = {}
    if not text or text == "NA":
        return params
    items = text.split(",")
    if len(items) > MAX_PARAMS:
        items = _merge_string_continuations(items)
        if len(items) > MAX_PARAMS:
            raise _Refused(CODE_PARAMS, f"more than {MAX_PARAMS} parameters")
    open_string: str | None = None  # the string parameter that a bare item continues
    open_value = ""
    for item in items:
        try:
            name, kind, value = item.split(":", 2)
        except ValueError:
            if open_string is not None:
                open_value = f"{open_value},{item}"
                _set_string_param(params, open_string, open_value)
                continue
            if not item:
                continue
            raise _Refused(CODE_PARAMS, f"not name:type:value: {item[:50]!r}") from None
        if not name:
            raise _Refused(CODE_PARAMS, f"parameter without a name: {item[:50]!r}")
        open_string = None
        if kind == "1":
            try:
                integer = int(value)
            except ValueError:
                continue  # does not fit its type: only this parameter is dropped
            if _INT64_MIN <= integer <= _INT64_MAX and len(name) <= MAX_PARAM_NAME:
                params[name] = integer
        elif kind == "2":
            try:
                real = float(value)
            except ValueError:
                continue
            if -_HUGE < real < _HUGE and len(name) <= MAX_PARAM_NAME:
                params[name] = real
        elif kind == "3":
            open_string, open_value = name, value
            _set_string_param(params, name, value)
        else:
            raise _Refused(CODE_PARAMS, f"unknown parameter type {kind[:10]!r} of {name[:40]!r}")
    return params


def _merge_string_continuations(items: list[str]) -> list[str]:
    """Items with a string's `,` put back, to count parameters rather than commas."""
    merged: list[str] = []
    for item in items:
        if merged and item.count(":") < 2 and merged[-1].split(":", 2)[1:2] == ["3"]:
            merged[-1] = f"{merged[-1]},{item}"
        elif item:
            merged.append(item)
    return merged


def _short_message(
    fields: Sequence[str], received_at: datetime, from_black_box: bool
) -> Message | _Refused:
    """Ten SD fields (CRC already removed) -> a message, or why not."""
    try:
        device_time = _device_time(fields[0], fields[1])
        lat, lon = _position(fields[2], fields[3], fields[4], fields[5])
        speed, course, altitude, satellites = _motion(fields[6], fields[7], fields[8], fields[9])
    except _Refused as refused:
        return refused
    return Message(
        device_time or received_at,
        received_at,
        lat,
        lon,
        altitude,
        speed,
        course,
        satellites,
        from_black_box=from_black_box,
        device_time_missing=device_time is None,
    )


def _extended_message(
    fields: Sequence[str], received_at: datetime, from_black_box: bool
) -> Message | _Refused:
    """Sixteen D fields (CRC already removed; the last holds every parameter)."""
    try:
        device_time = _device_time(fields[0], fields[1])
        lat, lon = _position(fields[2], fields[3], fields[4], fields[5])
        speed, course, altitude, satellites = _motion(fields[6], fields[7], fields[8], fields[9])
        hdop = _non_negative(fields[10], CODE_SATELLITES_HDOP, "HDOP")
        inputs = _bit_mask(fields[11])
        outputs = _bit_mask(fields[12])
        adc = _adc(fields[13])
        params = _params(fields[15])
    except _Refused as refused:
        return refused
    driver_key = fields[14]
    return Message(
        device_time or received_at,
        received_at,
        lat,
        lon,
        altitude,
        speed,
        course,
        satellites,
        hdop,
        inputs,
        outputs,
        adc,
        None if not driver_key or driver_key == "NA" else driver_key,
        params,
        from_black_box,
        device_time is None,
    )


_SHORT_FIELDS = 10
_EXTENDED_FIELDS = 16


# --------------------------------------------------------------------------------------------
# Text (UTF-8 with a Latin-1 fallback per value)
# --------------------------------------------------------------------------------------------


def _decode_packet_text(data: bytes) -> tuple[str, bool]:
    """The packet as text, and whether some values need `_repair` (bytes that are not UTF-8)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


def _repair(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")
    return text


def _repair_message(message: Message) -> None:
    if message.driver_key is not None:
        message.driver_key = _repair(message.driver_key)
    message.params = {
        _repair(name): _repair(value) if isinstance(value, str) else value
        for name, value in message.params.items()
    }


def decode_text(data: bytes) -> str:
    """A whole value: UTF-8, or Latin-1 when the bytes are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --------------------------------------------------------------------------------------------
# Data packets (#SD#, #D#, #B#): shared by the TCP session and UDP
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DataResult:
    """The decoding of one data packet: its answer code(s) and what to store."""

    answer: bytes
    messages: list[Message]
    note: str | None = None


def _without_crc(
    body: bytes, separator: bytes, with_crc: bool
) -> tuple[bytes, bytes | None] | None:
    """(content, CRC field): v2.0 bodies end with `separator` + CRC; None if there is none.

    The CRC covers the content and the separator, so the covered bytes are
    `body[: len(content) + 1]`.
    """
    if not with_crc:
        return body, None
    cut = body.rfind(separator)
    if cut < 0:
        return None
    return body[:cut], body[cut + 1 :]


def _crc_fails(body: bytes, content: bytes, crc_field: bytes | None) -> bool:
    return crc_field is not None and not crc_matches(crc_field, body[: len(content) + 1])


def _answer(kind: str, code: int) -> bytes:
    return f"#A{kind}#{code}\r\n".encode()


def decode_short_data(body: bytes, with_crc: bool, received_at: datetime) -> DataResult:
    """`#SD#` body -> `#ASD#code` and at most one message."""
    split = _without_crc(body, b";", with_crc)
    if split is None:
        return DataResult(_answer("SD", CODE_STRUCTURE), [], "no CRC field")
    content, crc_field = split
    text, needs_repair = _decode_packet_text(content)
    fields = text.split(";")
    if len(fields) != _SHORT_FIELDS:
        return DataResult(_answer("SD", CODE_STRUCTURE), [], f"{len(fields)} fields, not 10")
    if _crc_fails(body, content, crc_field):
        return DataResult(_answer("SD", CODE_SHORT_DATA_CRC), [], "CRC mismatch")
    return _single_result("SD", _short_message(fields, received_at, False), needs_repair)


def decode_extended_data(body: bytes, with_crc: bool, received_at: datetime) -> DataResult:
    """`#D#` body -> `#AD#code` and at most one message."""
    split = _without_crc(body, b";", with_crc)
    if split is None:
        return DataResult(_answer("D", CODE_STRUCTURE), [], "no CRC field")
    content, crc_field = split
    text, needs_repair = _decode_packet_text(content)
    # The parameters are the last field, so a `;` inside a string value stays in it.
    fields = text.split(";", _EXTENDED_FIELDS - 1)
    if len(fields) != _EXTENDED_FIELDS:
        return DataResult(_answer("D", CODE_STRUCTURE), [], "fewer than 16 fields")
    if _crc_fails(body, content, crc_field):
        return DataResult(_answer("D", CODE_DATA_CRC), [], "CRC mismatch")
    return _single_result("D", _extended_message(fields, received_at, False), needs_repair)


def _single_result(kind: str, decoded: Message | _Refused, needs_repair: bool) -> DataResult:
    if isinstance(decoded, _Refused):
        return DataResult(_answer(kind, decoded.code), [], decoded.reason)
    if needs_repair:
        _repair_message(decoded)
    return DataResult(_answer(kind, CODE_OK), [decoded])


def decode_black_box(body: bytes, with_crc: bool, received_at: datetime) -> DataResult:
    """`#B#` body -> `#AB#n` with the n messages that decoded (bad items are skipped)."""
    split = _without_crc(body, b"|", with_crc)
    if split is None:
        return DataResult(b"#AB#0\r\n", [], "no CRC field")
    content, crc_field = split
    if _crc_fails(body, content, crc_field):
        return DataResult(b"#AB#\r\n", [], "CRC mismatch")
    text, needs_repair = _decode_packet_text(content)
    messages, first_problem = _black_box_messages(text, received_at)
    if needs_repair:
        for message in messages:
            _repair_message(message)
    return DataResult(f"#AB#{len(messages)}\r\n".encode(), messages, first_problem)


def _black_box_messages(text: str, received_at: datetime) -> tuple[list[Message], str | None]:
    messages: list[Message] = []
    first_problem: str | None = None
    for item in text.split("|"):
        fields = item.split(";")
        count = len(fields)
        if count == _SHORT_FIELDS:
            decoded = _short_message(fields, received_at, True)
        elif count == _EXTENDED_FIELDS:
            decoded = _extended_message(fields, received_at, True)
        elif count > _EXTENDED_FIELDS:
            decoded = _extended_message(item.split(";", 15), received_at, True)
        elif not item:
            continue
        else:
            decoded = _Refused(CODE_STRUCTURE, f"item with {count} fields")
        if isinstance(decoded, _Refused):
            first_problem = first_problem or f"item {len(messages)}: {decoded.reason}"
        else:
            messages.append(decoded)
    return messages, first_problem


_DATA_DECODERS = {b"SD": decode_short_data, b"D": decode_extended_data, b"B": decode_black_box}

# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextFrame:
    """One text packet, `#TYPE#body` without its line end."""

    line: bytes


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    """An `#I#` or `#T#` header line and the `Sz` raw bytes that followed it."""

    header: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameError:
    """Input the framer could not turn into a packet.

    `packet` is the start of the offending packet (empty when unknown) so the session can
    answer with that packet's error; `fatal` means the stream cannot be trusted any more.
    """

    reason: str
    packet: bytes = b""
    fatal: bool = False


Frame = TextFrame | BinaryFrame | FrameError

_COMPRESSED_MARK = 0xFF
_BINARY_PREFIXES = (b"#I#", b"#T#")
_ERROR_PREFIX_BYTES = 256


def _binary_size(header: bytes) -> int | None:
    """The `Sz` field of an `#I#` (first field) or `#T#` (second field) header."""
    fields = header[3:].split(b";", 2)
    size = fields[0] if header.startswith(b"#I#") else (fields[1] if len(fields) > 1 else b"")
    size = size.strip()
    return int(size) if size.isdigit() and len(size) <= 12 else None


class WialonFramer:
    """Splits a TCP byte stream into frames, holding at most one packet's worth of bytes.

    `feed` takes whatever the socket returned (any split, any merge) and returns the frames
    completed by it. Plain and compressed packets may be mixed; after an `#I#`/`#T#` header the
    next `Sz` bytes are the block, whatever they contain.
    """

    def __init__(self, limits: WialonLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits  # may change between feeds (a connection's, once it logs in)
        self._buffer = bytearray()
        self._binary_header: bytes | None = None
        self._binary_size = 0
        self._skipping_line = False  # inside a line that was too long: drop until its end
        self._scanned = 0  # bytes of the pending line already searched for its end

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position = 0
        while position < len(buffer):
            if self._binary_header is not None:
                consumed = self._take_binary(position, frames)
            elif self._skipping_line:
                consumed = self._skip_line(position)
            elif buffer[position] == _COMPRESSED_MARK:
                consumed = self._take_compressed(position, frames)
            else:
                consumed = self._take_line(position, frames)
            if consumed == 0:
                break
            position += consumed
        del buffer[:position]
        return frames

    def _take_binary(self, position: int, frames: list[Frame]) -> int:
        end = position + self._binary_size
        if len(self._buffer) < end:
            return 0
        assert self._binary_header is not None
        frames.append(BinaryFrame(self._binary_header, bytes(self._buffer[position:end])))
        self._binary_header = None
        return end - position  # > 0: zero-size blocks never enter this state

    def _skip_line(self, position: int) -> int:
        end = self._buffer.find(b"\n", position)
        if end < 0:
            return len(self._buffer) - position
        self._skipping_line = False
        return end + 1 - position

    def _take_line(self, position: int, frames: list[Frame]) -> int:
        buffer = self._buffer
        end = buffer.find(b"\n", position + self._scanned)
        if end < 0:
            pending = len(buffer) - position
            if pending > self.limits.max_line:
                frames.append(self._too_long(position))
                self._skipping_line = True
                self._scanned = 0
                return pending
            self._scanned = pending
            return 0
        self._scanned = 0
        consumed = end + 1 - position
        if end - position > self.limits.max_line:
            frames.append(self._too_long(position))
            return consumed
        line = bytes(buffer[position : end - 1 if buffer[end - 1 : end] == b"\r" else end])
        if line:
            self._line_frame(line, frames)
        return consumed

    def _too_long(self, position: int) -> FrameError:
        prefix = bytes(self._buffer[position : position + _ERROR_PREFIX_BYTES])
        return FrameError(f"line longer than {self.limits.max_line} bytes", prefix)

    def _line_frame(self, line: bytes, frames: list[Frame], inline: bytes | None = None) -> None:
        if not line.startswith(_BINARY_PREFIXES):
            frames.append(TextFrame(line))
            return
        size = _binary_size(line)
        if size is None or size > self.limits.max_block:
            reason = "unreadable block size" if size is None else "block over the size limit"
            frames.append(FrameError(reason, line[:_ERROR_PREFIX_BYTES], fatal=True))
            return
        if inline:
            if len(inline) == size:
                frames.append(BinaryFrame(line, inline))
            else:
                mismatch = "compressed block size mismatch"
                frames.append(FrameError(mismatch, line[:_ERROR_PREFIX_BYTES]))
            return
        if size == 0:
            frames.append(BinaryFrame(line, b""))
            return
        self._binary_header = line
        self._binary_size = size

    def _take_compressed(self, position: int, frames: list[Frame]) -> int:
        buffer = self._buffer
        if len(buffer) - position < 3:
            return 0
        length = buffer[position + 1] | buffer[position + 2] << 8
        if length > self.limits.max_compressed:
            frames.append(FrameError("compressed packet over the size limit", fatal=True))
            return 3
        if len(buffer) - position < 3 + length:
            return 0
        compressed = bytes(buffer[position + 3 : position + 3 + length])
        packet = inflate_packet(compressed, self.limits.max_inflated)
        if isinstance(packet, FrameError):
            frames.append(packet)
        else:
            self._inflated_frame(packet, frames)
        return 3 + length

    def _inflated_frame(self, packet: bytes, frames: list[Frame]) -> None:
        if packet.startswith(_BINARY_PREFIXES):
            header, _, inline = packet.partition(b"\n")
            self._line_frame(header.removesuffix(b"\r"), frames, inline)
            return
        line = packet.removesuffix(b"\n").removesuffix(b"\r")
        if line:
            frames.append(TextFrame(line))
        else:
            frames.append(FrameError("empty compressed packet", fatal=True))


def inflate_packet(compressed: bytes, max_inflated: int) -> bytes | FrameError:
    """The packet inside a zlib stream, refusing streams that inflate beyond the limit."""
    inflater = zlib.decompressobj()
    try:
        packet = inflater.decompress(compressed, max_inflated + 1)
    except zlib.error as error:
        return FrameError(f"bad compressed packet: {error}", fatal=True)
    if len(packet) > max_inflated:
        return FrameError(
            f"compressed packet inflates beyond {max_inflated} bytes",
            packet[:_ERROR_PREFIX_BYTES],
        )
    if not inflater.eof:
        return FrameError("truncated compressed packet", fatal=True)
    return packet


# --------------------------------------------------------------------------------------------
# The per-connection session
# --------------------------------------------------------------------------------------------


class LoginResult(Enum):
    """The caller's verdict on a `LoginRequest`."""

    ACCEPTED = "accepted"  # `#AL#1`
    REFUSED = "refused"  # `#AL#0`: unknown or disabled device
    WRONG_PASSWORD = "wrong_password"  # `#AL#01`


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """A well-formed login the caller must check (device known? password right?)."""

    imei: str
    password: str | None  # None: the device sent `NA` (no password)
    version: Version


@dataclass(slots=True)
class Outcome:
    """What to do about one frame.

    Store `messages`, `driver_message` and `file` durably, then write `answer` (which may hold
    several lines, e.g. a block's answer and the whole image's). `login` set: nothing to write
    yet, resolve it with `WialonSession.complete_login`. `close`: write the answer, then close.
    `note` says why a packet was refused, skipped in part or ignored (for logs).
    """

    answer: bytes = b""
    messages: Sequence[Message] = ()
    driver_message: DriverMessage | None = None
    file: ImageFile | TachographFile | None = None
    login: LoginRequest | None = None
    close: bool = False
    note: str | None = None

    @property
    def has_data(self) -> bool:
        return bool(self.messages) or self.driver_message is not None or self.file is not None


class BlockSpool(Protocol):
    """Where the blocks of one unfinished file wait for the rest."""

    @property
    def size(self) -> int: ...

    def append(self, block: bytes) -> str | None:
        """Keeps the block; or returns why it may not (the file is then dropped)."""

    def read(self) -> bytes: ...

    def discard(self) -> None: ...


class MemorySpool:
    """Blocks held in memory: for callers without a disk (tests, tools)."""

    def __init__(self) -> None:
        self._blocks: list[bytes] = []
        self.size = 0

    def append(self, block: bytes) -> str | None:
        self._blocks.append(block)
        self.size += len(block)
        return None

    def read(self) -> bytes:
        return b"".join(self._blocks)

    def discard(self) -> None:
        self._blocks.clear()
        self.size = 0


@dataclass(slots=True)
class _Assembly:
    """Blocks of one image or tachograph file, received in order."""

    key: tuple[str, ...]
    last_index: int
    spool: BlockSpool
    blocks: int = 0
    dropped: bool = False  # refused for good: too large, or over the device's cap

    @property
    def complete(self) -> bool:
        return self.blocks == self.last_index + 1

    def add(self, index: int, payload: bytes, max_size: int) -> str | None:
        """Adds a block; returns why it was refused, or None."""
        if index < self.blocks:
            return None  # the device repeats a block whose answer it missed
        if index > self.blocks:
            return f"block {index} before block {self.blocks}"
        if self.spool.size + len(payload) > max_size:
            self.dropped = True
            return f"file larger than {max_size} bytes"
        problem = self.spool.append(payload)
        if problem is not None:
            self.dropped = True
            return problem
        self.blocks += 1
        return None


@dataclass(slots=True)
class _TachographDownload:
    driver_id: str
    downloaded_at: datetime
    code: str
    blocks: _Assembly


_PACKET_KIND_MAX = 4
_STRUCTURE_ERRORS = {
    b"L": b"#AL#0\r\n",
    b"SD": b"#ASD#-1\r\n",
    b"D": b"#AD#-1\r\n",
    b"B": b"#AB#0\r\n",
    b"M": b"#AM#0\r\n",
    b"I": b"#AI#NA;0\r\n",
    b"IT": b"#AIT#0\r\n",
}
_SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def split_packet(line: bytes) -> tuple[bytes, bytes] | None:
    """(type, body) of `#TYPE#body`; None when the line is not a packet."""
    if line[:1] != b"#":
        return None
    end = line.find(b"#", 1, _PACKET_KIND_MAX + 2)
    if end < 0:
        return None
    kind = line[1:end]
    if not (kind.isalpha() and kind.isupper()):
        return None
    return kind, line[end + 1 :]


def _valid_imei(imei: str) -> bool:
    return 0 < len(imei) <= MAX_IMEI and imei != "NA" and imei.isprintable() and " " not in imei


def _digits(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


class WialonSession:
    """The state of one TCP connection: login, binding to one IMEI, file assembly.

    Pure and synchronous: `handle` a frame, get an `Outcome`. The protocol version is the one
    of the last accepted login.
    """

    def __init__(
        self,
        limits: WialonLimits = DEFAULT_LIMITS,
        spools: Callable[[], BlockSpool] = MemorySpool,
    ) -> None:
        self._limits = limits
        self._spools = spools
        self._imei: str | None = None
        self._version: Version = "1.1"
        self._logged_in = False
        self._pending_login: LoginRequest | None = None
        self._failed_logins = 0
        self._image: _Assembly | None = None
        self._tachograph: _TachographDownload | None = None

    @property
    def imei(self) -> str | None:
        """The device this connection is bound to (set by the first accepted login)."""
        return self._imei

    @property
    def version(self) -> Version:
        return self._version

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @property
    def buffered(self) -> int:
        """Bytes held (in its spools) for unfinished image and tachograph files."""
        image = self._image.spool.size if self._image is not None else 0
        download = self._tachograph.blocks.spool.size if self._tachograph is not None else 0
        return image + download

    def close(self) -> None:
        """Drops the unfinished files: the connection is over."""
        self._drop_image()
        self._drop_tachograph()

    def _drop_image(self) -> None:
        if self._image is not None:
            self._image.spool.discard()
            self._image = None

    def _drop_tachograph(self) -> None:
        if self._tachograph is not None:
            self._tachograph.blocks.spool.discard()
            self._tachograph = None

    def handle(self, frame: Frame, received_at: datetime) -> Outcome:
        if self._pending_login is not None:
            raise RuntimeError("complete_login() must answer the pending login first")
        if isinstance(frame, TextFrame):
            return self._text(frame.line, received_at)
        if isinstance(frame, BinaryFrame):
            return self._binary(frame.header, frame.payload, received_at)
        return self._frame_error(frame)

    def complete_login(self, result: LoginResult) -> Outcome:
        """The answer to the pending `LoginRequest`, given the caller's verdict."""
        request = self._pending_login
        if request is None:
            raise RuntimeError("no login is pending")
        self._pending_login = None
        if result is LoginResult.ACCEPTED:
            self._imei = request.imei
            self._version = request.version
            self._logged_in = True
            self._failed_logins = 0
            return Outcome(b"#AL#1\r\n")
        self._logged_in = False
        if result is LoginResult.WRONG_PASSWORD:
            return self._failed_login(b"#AL#01\r\n", "wrong password")
        return self._failed_login(b"#AL#0\r\n", "device refused")

    # -- text packets ------------------------------------------------------------------------

    def _text(self, line: bytes, received_at: datetime) -> Outcome:
        packet = split_packet(line)
        if packet is None:
            return Outcome(close=True, note="not a Wialon IPS packet")
        kind, body = packet
        decoder = _DATA_DECODERS.get(kind)
        if decoder is not None:
            if not self._logged_in:
                return Outcome(_STRUCTURE_ERRORS[kind], note="data before login")
            result = decoder(body, self._version == "2.0", received_at)
            return Outcome(result.answer, result.messages, note=result.note)
        if kind == b"P":
            return Outcome(b"#AP#\r\n")
        if kind == b"L":
            return self._login(body)
        if kind == b"M":
            return self._driver_message(body, received_at)
        if kind == b"IT":
            return self._tachograph_info(body, received_at)
        if kind in (b"I", b"T"):
            return self._frame_error(FrameError("block header without its block", line))
        return Outcome(note=f"unknown packet type {kind.decode()} ignored")

    def _without_crc(self, body: bytes) -> tuple[bytes, bytes | None] | None:
        return _without_crc(body, b";", self._version == "2.0")

    def _login(self, body: bytes) -> Outcome:
        fields = decode_text(body).split(";")
        if "." in fields[0]:
            if fields[0] != "2.0":
                return self._failed_login(b"#AL#0\r\n", f"unsupported version {fields[0][:10]!r}")
            if len(fields) != 4:
                return self._failed_login(b"#AL#0\r\n", "login structure")
            if not crc_matches(fields[3], body[: body.rfind(b";") + 1]):
                return self._failed_login(b"#AL#10\r\n", "login CRC mismatch")
            version: Version = "2.0"
            imei, password = fields[1], fields[2]
        elif len(fields) == 2:
            version = "1.1"
            imei, password = fields
        else:
            return self._failed_login(b"#AL#0\r\n", "login structure")
        if not _valid_imei(imei):
            return self._failed_login(b"#AL#0\r\n", "bad IMEI")
        if self._imei is not None and imei != self._imei:
            return self._failed_login(b"#AL#0\r\n", "connection is bound to another IMEI")
        self._pending_login = LoginRequest(imei, None if _absent(password) else password, version)
        return Outcome(login=self._pending_login)

    def _failed_login(self, answer: bytes, note: str) -> Outcome:
        self._failed_logins += 1
        return Outcome(answer, close=self._failed_logins >= MAX_FAILED_LOGINS, note=note)

    def _driver_message(self, body: bytes, received_at: datetime) -> Outcome:
        if not self._logged_in:
            return Outcome(b"#AM#0\r\n", note="driver message before login")
        split = self._without_crc(body)
        if split is None:
            return Outcome(b"#AM#0\r\n", note="no CRC field")
        content, crc_field = split
        if _crc_fails(body, content, crc_field):
            return Outcome(b"#AM#01\r\n", note="driver message CRC mismatch")
        if not content:
            return Outcome(b"#AM#0\r\n", note="empty driver message")
        text = DriverMessage(decode_text(content), received_at)
        return Outcome(b"#AM#1\r\n", driver_message=text)

    def _tachograph_info(self, body: bytes, received_at: datetime) -> Outcome:
        if not self._logged_in:
            return Outcome(b"#AIT#0\r\n", note="tachograph file before login")
        split = self._without_crc(body)
        fields = decode_text(split[0]).split(";") if split is not None else []
        if len(fields) != 5:
            return Outcome(b"#AIT#0\r\n", note="tachograph file info structure")
        assert split is not None
        content, crc_field = split
        if _crc_fails(body, content, crc_field):
            return Outcome(b"#AIT#01\r\n", note="tachograph file info CRC mismatch")
        date, time, driver_id, code, last = fields
        last_index = _digits(last)
        if last_index is None or last_index >= self._limits.max_blocks or _absent(driver_id):
            return Outcome(b"#AIT#0\r\n", note="tachograph file info values")
        try:
            downloaded_at = _device_time(date, time) or received_at
        except _Refused as refused:
            return Outcome(b"#AIT#0\r\n", note=refused.reason)
        self._drop_tachograph()  # a new download abandons the unfinished one
        blocks = _Assembly((code,), last_index, self._spools())
        self._tachograph = _TachographDownload(driver_id, downloaded_at, code, blocks)
        return Outcome(b"#AIT#1\r\n")

    # -- binary blocks -----------------------------------------------------------------------

    def _binary(self, header: bytes, payload: bytes, received_at: datetime) -> Outcome:
        if header.startswith(b"#I#"):
            return self._image_block(header[3:], payload, received_at)
        return self._tachograph_block(header[3:], payload, received_at)

    def _image_block(self, body: bytes, payload: bytes, received_at: datetime) -> Outcome:
        if not self._logged_in:
            return Outcome(b"#AI#NA;0\r\n", note="image before login")
        split = self._without_crc(body)
        fields = decode_text(split[0]).split(";", 5) if split is not None else []
        index = _digits(fields[1]) if len(fields) == 6 else None
        last_index = _digits(fields[2]) if len(fields) == 6 else None
        if split is None or index is None or last_index is None:
            return Outcome(b"#AI#NA;0\r\n", note="image block header structure")
        refused = f"#AI#{fields[1]};0\r\n".encode()
        if split[1] is not None and not crc_matches(split[1], payload):
            return Outcome(f"#AI#{fields[1]};01\r\n".encode(), note="image block CRC mismatch")
        if index > last_index or last_index >= self._limits.max_blocks:
            return Outcome(refused, note="image block index beyond the last block")
        try:
            taken_at = _device_time(fields[3], fields[4]) or received_at
        except _Refused as problem:
            return Outcome(refused, note=problem.reason)
        return self._add_image_block(fields, index, last_index, taken_at, payload, received_at)

    def _add_image_block(
        self,
        fields: list[str],
        index: int,
        last_index: int,
        taken_at: datetime,
        payload: bytes,
        received_at: datetime,
    ) -> Outcome:
        key = (fields[2], fields[3], fields[4], fields[5])
        if index == 0:
            self._drop_image()  # block 0 (re)starts the image: the unfinished one is abandoned
            self._image = _Assembly(key, last_index, self._spools())
        image = self._image
        refused = f"#AI#{fields[1]};0\r\n".encode()
        if image is None or image.key != key:
            return Outcome(refused, note="block of an image whose block 0 was not received")
        problem = image.add(index, payload, self._limits.max_file)
        if problem is not None:
            if image.dropped:
                self._drop_image()
            return Outcome(refused, note=problem)
        accepted = f"#AI#{fields[1]};1\r\n".encode()
        if not image.complete:
            return Outcome(accepted)
        data = image.spool.read()
        self._drop_image()
        name = fields[5] if not _absent(fields[5]) else f"image_{taken_at:%Y%m%d_%H%M%S}"
        photo = ImageFile(name, taken_at, data, received_at)
        return Outcome(accepted + b"#AI#1\r\n", file=photo)

    def _tachograph_block(self, body: bytes, payload: bytes, received_at: datetime) -> Outcome:
        if not self._logged_in:
            return Outcome(_structure_error(b"T", body), note="tachograph block before login")
        split = self._without_crc(body)
        fields = decode_text(split[0]).split(";") if split is not None else []
        index = _digits(fields[2]) if len(fields) == 3 else None
        if split is None or index is None:
            return Outcome(b"#AT#NA;0\r\n", note="tachograph block header structure")
        refused = f"#AT#{fields[2]};0\r\n".encode()
        if split[1] is not None and not crc_matches(split[1], payload):
            return Outcome(f"#AT#{fields[2]};01\r\n".encode(), note="tachograph CRC mismatch")
        download = self._tachograph
        if download is None or download.code != fields[0]:
            return Outcome(refused, note="tachograph block without its file info")
        blocks = download.blocks
        if index > blocks.last_index:
            return Outcome(refused, note="tachograph block index beyond the last block")
        problem = blocks.add(index, payload, self._limits.max_file)
        if problem is not None:
            if blocks.dropped:
                self._drop_tachograph()
            return Outcome(refused, note=problem)
        accepted = f"#AT#{fields[2]};1\r\n".encode()
        if not blocks.complete:
            return Outcome(accepted)
        file = _tachograph_file(download, received_at)
        self._drop_tachograph()
        return Outcome(accepted + b"#AT#1\r\n", file=file)

    # -- framing errors ----------------------------------------------------------------------

    def _frame_error(self, error: FrameError) -> Outcome:
        packet = split_packet(error.packet)
        answer = _structure_error(*packet) if packet is not None else b""
        return Outcome(answer, close=error.fatal or not answer, note=error.reason)


def _structure_error(kind: bytes, body: bytes) -> bytes:
    if kind == b"T":
        fields = body.split(b";", 3)
        index = fields[2] if len(fields) > 2 else b""
        return b"#AT#" + (index if index.isdigit() else b"NA") + b";0\r\n"
    return _STRUCTURE_ERRORS.get(kind, b"")


def _tachograph_file(download: _TachographDownload, received_at: datetime) -> TachographFile:
    driver = _SAFE_FILE_NAME.sub("_", download.driver_id)
    name = f"{driver}_{download.downloaded_at:%Y%m%d_%H%M%S}.ddd"
    data = download.blocks.spool.read()
    return TachographFile(name, download.driver_id, download.downloaded_at, data, received_at)


# --------------------------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Datagram:
    """A decoded UDP datagram. The IMEI is only claimed: UDP carries no password."""

    imei: str
    version: Version
    messages: list[Message]
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DatagramError:
    reason: str
    imei: str | None = None


def decode_datagram(
    data: bytes, received_at: datetime, limits: WialonLimits = DEFAULT_LIMITS
) -> Datagram | DatagramError:
    """`IMEI#SD#...` (v1.1) or `2.0;IMEI#SD#...` (v2.0), also `#D#`, `#B#` and `#P#`."""
    if data[:1] == bytes([_COMPRESSED_MARK]):
        inflated = _inflate_datagram(data, limits)
        if isinstance(inflated, DatagramError):
            return inflated
        data = inflated
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    cut = data.find(b"#")
    if cut <= 0:
        return DatagramError("no IMEI before the packet")
    prefix = decode_text(data[:cut])
    version: Version = "1.1"
    imei = prefix
    if ";" in prefix:
        claimed, _, imei = prefix.partition(";")
        if claimed != "2.0":
            return DatagramError(f"unsupported version {claimed[:10]!r}")
        version = "2.0"
    if not _valid_imei(imei):
        return DatagramError("bad IMEI")
    packet = split_packet(data[cut:])
    if packet is None:
        return DatagramError("not a Wialon IPS packet", imei)
    return _datagram_packet(imei, version, *packet, received_at)


def _inflate_datagram(data: bytes, limits: WialonLimits) -> bytes | DatagramError:
    length = int.from_bytes(data[1:3], "little") if len(data) >= 3 else -1
    if length < 0 or len(data) < 3 + length:
        return DatagramError("truncated compressed datagram")
    inflated = inflate_packet(data[3 : 3 + length], limits.max_inflated)
    if isinstance(inflated, FrameError):
        return DatagramError(inflated.reason)
    return inflated


def _datagram_packet(
    imei: str, version: Version, kind: bytes, body: bytes, received_at: datetime
) -> Datagram | DatagramError:
    if kind == b"P":
        return Datagram(imei, version, [])
    decoder = _DATA_DECODERS.get(kind)
    if decoder is None:
        return DatagramError(f"packet type {kind.decode()} is not accepted over UDP", imei)
    result = decoder(body, version == "2.0", received_at)
    if kind == b"B" and result.answer != b"#AB#\r\n":
        return Datagram(imei, version, result.messages, result.note)
    if not result.messages:
        answer = result.answer.decode().strip()
        return DatagramError(f"{answer}: {result.note}", imei)
    return Datagram(imei, version, result.messages)


# --------------------------------------------------------------------------------------------
# Server -> device commands
# --------------------------------------------------------------------------------------------


def _one_line(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise ValueError("a command must fit on one line")
    return text.encode("utf-8")


def encode_driver_message(text: str, version: Version = "2.0") -> bytes:
    """`#M#text;CRC` for v2.0, `#M#text` for v1.1."""
    body = _one_line(text)
    if version == "1.1":
        return b"#M#" + body + b"\r\n"
    covered = body + b";"
    return b"#M#" + covered + crc_text(covered).encode() + b"\r\n"


def encode_snapshot_request() -> bytes:
    """Asks the device for a photo (`#QI#`)."""
    return b"#QI#\r\n"


def encode_tachograph_request(driver_id: str) -> bytes:
    """Asks the device for a driver's tachograph file (`#QT#DriverID`)."""
    if not driver_id:
        raise ValueError("a driver id is required")
    return b"#QT#" + _one_line(driver_id) + b"\r\n"


def encode_raw_command(command: str) -> bytes:
    """A command line passed to the device as it is."""
    if not command:
        raise ValueError("an empty command")
    return _one_line(command) + b"\r\n"
