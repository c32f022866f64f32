"""One device-day of messages as columns, packed for the column store (`column_store`): the
arrays of `columns.Columns`, every numeric parameter of the day among them, each compressed on
its own. Lossless: a chunk unpacks to the very arrays it was packed from (NaN stays NaN, -0.0
stays -0.0, every other float keeps its bits).

A chunk is `version, message count, column count`, then per column: its name, whether it is a
field or a parameter, its form, and its data (zstd). The forms:

- INTEGERS: the first and last values, then the differences to the next (int64 arithmetic,
  which wraps and unwraps alike), zigzagged when some are negative, in the narrowest unsigned
  type that holds them;
- DECIMALS: a float column whose values are all `m / 10**d` exactly, for one d in 0..9 (what
  devices send: whole km/h, 0.9 HDOP, 1e-7 degrees): the integers m as INTEGERS, d, and which
  values are missing (NaN);
- MINUTES: a DECIMALS column of 1e-7 degrees whose values all lie on the lattice of
  1/10**p of a minute (p in 3..5: the `DDMM.MMMM` of NMEA trackers): the lattice's integers
  as INTEGERS, and p (their differences are 17 to 1,700 times smaller than in 1e-7 degree);
- DOUBLES: any other float column (a product such as knots * 1.852, -0.0, infinities): the 8
  bytes of each value;
- FLAGS: a boolean column, one bit per value.

Integers are stored least significant byte of every value first, then the next byte of every
value (byte planes), which lets the compressor see that the high bytes of small differences
are all zero. Measured on the simulated trackers' days (docs/decisions.md, "A column store for
analytics"): about 3.7 bytes per message.
"""

import struct
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

FORMAT_VERSION = 1
# Measured on the simulated days: 3.94 bytes a message at 6.4 µs to pack, against 4.26 at
# 1.5 µs (level 9) and 3.95 at 13 µs (level 19); unpacking is as fast at every level.
COMPRESSION_LEVEL = 15
MAX_DECIMALS = 9
# An integer m whose float m / 10**d reads back exactly, whatever the float operations.
_EXACT_INTEGER_LIMIT = 2.0**53
_HEADER = struct.Struct("<BII")  # version, message count, column count
# name length, role, form, decimals, coding (`_integers`), missing, first and last values
_COLUMN = struct.Struct("<IBBBBBqq")
_LENGTH = struct.Struct("<I")
_WIDTHS = (1, 2, 4, 8)
ZIGZAG = 16  # in a column's coding, beside its width

Array = npt.NDArray[Any]


class Role(IntEnum):
    FIELD = 0
    PARAMETER = 1


class Form(IntEnum):
    INTEGERS = 0
    DECIMALS = 1
    DOUBLES = 2
    FLAGS = 3
    MINUTES = 4


_INTEGER_CODED = (Form.INTEGERS, Form.DECIMALS, Form.MINUTES)
# Coordinates of NMEA trackers (Wialon IPS among them) are whole 1/10**p of a minute, p in
# 3..5: a lattice of 1.67 (p = 5) to 167 (p = 3) steps of the stored 1e-7 degree.
_MINUTE_DECIMALS = (3, 4, 5)
_COORDINATE_DECIMALS = 7


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A chunk's columns: the fields by name, and the parameters asked for that it holds."""

    count: int
    fields: dict[str, Array]
    params: dict[str, npt.NDArray[np.float64]]


def pack(fields: dict[str, Array], params: dict[str, npt.NDArray[np.float64]], count: int) -> bytes:
    """Fields: int64, float64 or bool arrays of `count` values; parameters: float64 arrays."""
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    out = bytearray(_HEADER.pack(FORMAT_VERSION, count, len(fields) + len(params)))
    columns = [(Role.FIELD, n, a) for n, a in fields.items()]
    columns += [(Role.PARAMETER, n, a) for n, a in params.items()]
    for role, name, values in columns:
        if len(values) != count:
            raise ValueError(f"column {name} holds {len(values)} values, not {count}")
        _pack_column(out, compressor, role, name, values)
    return bytes(out)


def unpack(data: bytes, params: Collection[str] = ()) -> Unpacked:
    """The fields and, of the parameters, those named in `params` that the chunk holds."""
    return unpack_many([data], params)


def unpack_many(chunks: Sequence[bytes], params: Collection[str] = ()) -> Unpacked:
    """Chunks one after the other, unpacked as one (`Run`). A parameter some of the chunks
    hold is NaN in the others."""
    run = Run(chunks)
    fields = {name: run.unpack(name) for name in run.field_names}
    found = {name: run.unpack(name, Role.PARAMETER) for name in params if run.holds(name)}
    return Unpacked(run.count, fields, found)


class Run:
    """Consecutive chunks, each column unpacked as one array (a device-year is a few hundred
    chunks, and per-chunk work on arrays of a day costs more in calls than in arithmetic):
    put together straight into the array it ends in, its differences summed at once."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._parsed = [_parse(data) for data in chunks]
        self._counts = [chunk.count for chunk in self._parsed]
        self._ends = np.cumsum(self._counts, dtype=np.int64)
        self._decompressor = zstandard.ZstdDecompressor()
        self.count = int(self._ends[-1]) if self._parsed else 0
        self.field_names = list(self._parsed[0].fields) if self._parsed else []

    def holds(self, param: str) -> bool:
        """Whether some chunk holds the parameter."""
        return any(param in chunk.params for chunk in self._parsed)

    def unpack(self, name: str, role: Role = Role.FIELD) -> Array:
        """The column in an array of its own."""
        columns = self._columns(name, role)
        if all(c is not None and c.form == Form.FLAGS for c in columns):
            dtype: type[np.generic] = np.bool_
        elif all(c is not None and c.form == Form.INTEGERS for c in columns):
            dtype = np.int64
        else:
            dtype = np.float64
        out = np.empty(self.count, dtype)
        self.unpack_into(name, out, role)
        return out

    def unpack_into(self, name: str, out: Array, role: Role = Role.FIELD) -> None:
        """The column into `out` (`count` values: bool for flags, int64 for integers, float64
        for the rest and for a parameter, NaN where a chunk does not hold it)."""
        columns = self._columns(name, role)
        starts = self._ends - np.asarray(self._counts, dtype=np.int64)
        coded = all(c is not None and c.form in _INTEGER_CODED for c in columns)
        if not coded or out.dtype == np.bool_:
            unpack = self._decompressor
            for column, start, end in zip(columns, starts, self._ends, strict=True):
                out[start:end] = np.nan if column is None else column.values(unpack, end - start)
            return
        # Every chunk's differences, after its first value less the last value of the chunk
        # before: one running sum gives every value (int64 wraps and unwraps alike). Summed
        # in `out`'s own bytes, then turned into floats in place.
        integers = out.view(np.int64)
        previous_last = 0
        for column, start, end in zip(columns, starts, self._ends, strict=True):
            assert column is not None
            if end > start:
                column.differences_into(self._decompressor, integers[start:end])
                integers[start : start + 1] -= np.int64(previous_last)  # wraps, no warning
                previous_last = column.last
        np.cumsum(integers, out=integers)
        if out.dtype == np.int64:
            return
        kinds = {(c.form, c.decimals) for c in columns if c is not None}
        if len(kinds) == 1 and columns:
            first = columns[0]
            assert first is not None
            first.to_floats_in_place(out)
        for column, start, end in zip(columns, starts, self._ends, strict=True):
            assert column is not None
            if len(kinds) > 1:
                column.to_floats_in_place(out[start:end])
            missing = column.missing_values(self._decompressor, end - start)
            if missing is not None:
                out[start:end][missing] = np.nan

    def _columns(self, name: str, role: Role) -> list["_Column | None"]:
        if role == Role.FIELD:
            return [chunk.fields[name] for chunk in self._parsed]
        return [chunk.params.get(name) for chunk in self._parsed]


# --- packing ------------------------------------------------------------------------------


def _pack_column(
    out: bytearray,
    compressor: zstandard.ZstdCompressor,
    role: Role,
    name: str,
    values: Array,
) -> None:
    missing: npt.NDArray[np.bool_] | None = None
    decimals = width = 0
    first = last = 0
    if values.dtype == np.bool_:
        form, data = Form.FLAGS, np.packbits(values.astype(np.bool_)).tobytes()
    elif values.dtype.kind == "i":
        form = Form.INTEGERS
        first, last, width, data = _integers(values.astype(np.int64))
    else:
        floats = values.astype(np.float64)
        found = _as_decimals(floats)
        if found is None:
            form, data = Form.DOUBLES, _byte_planes(floats.astype("<f8"))
        else:
            form = Form.DECIMALS
            decimals, integers, missing = found
            on_lattice = _as_minutes(decimals, integers)
            if on_lattice is not None:
                form = Form.MINUTES
                decimals, integers = on_lattice
            first, last, width, data = _integers(integers)
    encoded_name = name.encode()
    has_missing = missing is not None and bool(missing.any())
    out += _COLUMN.pack(len(encoded_name), role, form, decimals, width, has_missing, first, last)
    out += encoded_name
    _append_block(out, compressor.compress(data))
    if has_missing:
        assert missing is not None
        _append_block(out, compressor.compress(np.packbits(missing).tobytes()))


def _as_decimals(
    values: npt.NDArray[np.float64],
) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None:
    """(d, m, missing): the fewest decimals d with every value that is not NaN equal to
    m / 10**d exactly (NaN values are missing; m there repeats the value before, which
    costs nothing stored); None when there is no such d."""
    missing = np.isnan(values)
    present = values[~missing]
    if not (np.abs(present) < _EXACT_INTEGER_LIMIT).all():
        return None  # infinite, or too large for any m (|m / 10**d| <= |m| < 2**53)
    if ((present == 0) & np.signbit(present)).any():
        return None  # -0.0 is no m / 10**d
    for decimals in range(MAX_DECIMALS + 1):
        scale = 10.0**decimals
        scaled = np.round(present * scale)
        if (np.abs(scaled) < _EXACT_INTEGER_LIMIT).all() and np.array_equal(
            scaled / scale, present
        ):
            integers = np.zeros(len(values), dtype=np.int64)
            integers[~missing] = scaled.astype(np.int64)
            if missing.any():
                integers = integers[_last_present(missing)]
            return decimals, integers, missing
    return None


def _as_minutes(
    decimals: int, integers: npt.NDArray[np.int64]
) -> tuple[int, npt.NDArray[np.int64]] | None:
    """(p, k): the values m / 10**decimals as the integers k of 1/10**p minute, with the
    fewest p that gives every m back through `_minutes_to_coordinate` and makes the integers
    smaller (its step is more than one of m's); None when none does."""
    if decimals > _COORDINATE_DECIMALS or len(integers) == 0:
        return None
    scale = 10 ** (_COORDINATE_DECIMALS - decimals)
    if int(np.abs(integers).max()) * scale >= _EXACT_INTEGER_LIMIT:
        return None
    coordinates = integers * scale
    for minute_decimals in _MINUTE_DECIMALS:
        if _minute_step(minute_decimals) <= scale:
            continue
        steps = np.round(coordinates / _minute_step(minute_decimals)).astype(np.int64)
        if np.array_equal(_minutes_to_coordinate(steps, minute_decimals), coordinates):
            return minute_decimals, steps
    return None


def _minute_step(minute_decimals: int) -> float:
    """1/10**p minute in 1e-7 degree."""
    return 10.0**_COORDINATE_DECIMALS / (60 * 10**minute_decimals)


def _minutes_to_coordinate(
    steps: npt.NDArray[np.int64], minute_decimals: int
) -> npt.NDArray[np.int64]:
    """The 1e-7 degrees of the lattice's integers: the one computation packing checks and
    unpacking repeats."""
    return np.round(steps.astype(np.float64) * _minute_step(minute_decimals)).astype(np.int64)


def _last_present(missing: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """For each position, the position of the last value at or before it that is present (0
    when none is)."""
    positions = np.where(missing, 0, np.arange(len(missing)))
    return np.maximum.accumulate(positions)


def _integers(values: npt.NDArray[np.int64]) -> tuple[int, int, int, bytes]:
    """(first value, last value, coding, the byte planes of the differences). The coding is
    the width in bytes of each difference, plus ZIGZAG when they are stored zigzagged: when
    some are negative, so that -1 is 1 and 1 is 2 (small either way, where the plain two's
    complement of a small negative number is all high bytes 255); a column that only grows
    (time, odometer) keeps its differences as they are."""
    if len(values) == 0:
        return 0, 0, 1, b""
    differences = np.diff(values)  # wraps round in int64, and unwraps alike
    coding = 0
    if len(differences) and differences.min() < 0:
        differences = (differences << 1) ^ (differences >> 63)
        coding = ZIGZAG
    unsigned = differences.view(np.uint64)
    width = _width(unsigned)
    planes = _byte_planes(unsigned.astype(f"<u{width}"))
    return int(values[0]), int(values[-1]), width | coding, planes


def _width(values: npt.NDArray[np.uint64]) -> int:
    high = int(values.max()) if len(values) else 0
    return next(width for width in _WIDTHS if high < 1 << (8 * width))


def _byte_planes(values: Array) -> bytes:
    width = values.dtype.itemsize
    return np.ascontiguousarray(values.view(np.uint8).reshape(-1, width).T).tobytes()


def _append_block(out: bytearray, block: bytes) -> None:
    out += _LENGTH.pack(len(block))
    out += block


# --- unpacking ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    role: int
    form: int
    decimals: int
    width: int
    first: int
    last: int
    data: memoryview
    missing: memoryview | None

    def values(self, decompressor: zstandard.ZstdDecompressor, count: int) -> Array:
        """The column's values on their own."""
        if self.form == Form.FLAGS:
            return self.flags(decompressor, count)
        if self.form == Form.DOUBLES:
            data = decompressor.decompress(self.data) if count else b""
            return _from_byte_planes(data, "<f8", count).astype(np.float64)
        integers = np.empty(count, dtype=np.int64)
        self.differences_into(decompressor, integers)
        np.cumsum(integers, out=integers)  # wraps as the differences did
        if self.form == Form.INTEGERS:
            return integers
        floats = integers.view(np.float64)
        self.to_floats_in_place(floats)
        missing = self.missing_values(decompressor, count)
        if missing is not None:
            floats[missing] = np.nan
        return floats

    def to_floats_in_place(self, values: npt.NDArray[np.float64]) -> None:
        """The values of a DECIMALS or MINUTES column, from its integers in the same bytes
        (`values.view(np.int64)`). The same arithmetic as `_minutes_to_coordinate` and a
        division, without an array for each step: a device-year is 3 M values a column."""
        np.copyto(values, values.view(np.int64), casting="unsafe")  # exact below 2**53
        if self.form == Form.MINUTES:
            values *= _minute_step(self.decimals)
            np.round(values, out=values)
            values += 0.0  # -0.0 to 0.0, as the integers of `_minutes_to_coordinate` are
            values /= 10.0**_COORDINATE_DECIMALS
        else:
            values /= 10.0**self.decimals

    def flags(self, decompressor: zstandard.ZstdDecompressor, count: int) -> Array:
        data = decompressor.decompress(self.data) if count else b""
        return np.unpackbits(np.frombuffer(data, np.uint8), count=count).astype(np.bool_)

    def differences_into(
        self, decompressor: zstandard.ZstdDecompressor, out: npt.NDArray[np.int64]
    ) -> None:
        """The first value, then the differences (the integer-coded forms), into `out`."""
        count = len(out)
        if count:
            out[0] = self.first
            data = decompressor.decompress(self.data) if count > 1 else b""
            width = self.width & ~ZIGZAG
            stored = _from_byte_planes(data, f"<u{width}", count - 1).astype(np.uint64)
            if self.width & ZIGZAG:
                stored = (stored >> np.uint64(1)) ^ (np.uint64(0) - (stored & np.uint64(1)))
            out[1:] = stored.view(np.int64)

    def missing_values(
        self, decompressor: zstandard.ZstdDecompressor, count: int
    ) -> npt.NDArray[np.bool_] | None:
        if self.missing is None:
            return None
        missing = np.frombuffer(decompressor.decompress(self.missing), np.uint8)
        return np.unpackbits(missing, count=count).astype(np.bool_)


@dataclass(frozen=True, slots=True)
class _Parsed:
    count: int
    fields: dict[str, _Column]
    params: dict[str, _Column]


def _parse(data: bytes) -> _Parsed:
    version, count, column_count = _HEADER.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise ValueError(f"a column chunk of format {version}, not {FORMAT_VERSION}")
    fields: dict[str, _Column] = {}
    params: dict[str, _Column] = {}
    for column in _columns(data, _HEADER.size, column_count):
        (fields if column.role == Role.FIELD else params)[column.name] = column
    return _Parsed(count, fields, params)


def _from_byte_planes(data: bytes, dtype: str, count: int) -> Array:
    width = np.dtype(dtype).itemsize
    planes = np.frombuffer(data, np.uint8).reshape(width, count)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(count)


def _columns(data: bytes, position: int, column_count: int) -> Iterator[_Column]:
    view = memoryview(data)
    for _ in range(column_count):
        name_length, role, form, decimals, width, has_missing, first, last = _COLUMN.unpack_from(
            data, position
        )
        position += _COLUMN.size
        name = bytes(view[position : position + name_length]).decode()
        position += name_length
        block, position = _block(view, position)
        missing = None
        if has_missing:
            missing, position = _block(view, position)
        yield _Column(name, role, form, decimals, width, first, last, block, missing)


def _block(view: memoryview, position: int) -> tuple[memoryview, int]:
    (length,) = _LENGTH.unpack_from(view, position)
    position += _LENGTH.size
    return view[position : position + length], position + length
