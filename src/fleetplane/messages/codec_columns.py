"""Many packed message rows (`codec`) decoded at once, straight into numpy columns: what
`codec.unpack` and `columns.from_messages` make of them together, without a Python object
per row. The column store's builder reads every message back once through it (a device-day
per call), and `columns.read` the days it takes from the rows.

The rows' bytes are joined into one buffer and decoded field by field for all rows at once:
a varint is read for every row that has one, then its continuation bytes for the few whose
value needs more (a loop per byte of the longest, not per row). Parameters go the same way,
the first of every row, then the second, and so on. The few things arithmetic on arrays
cannot give exactly as Python does are left to `codec.unpack`, row by row: a varint beyond
63 bits, an integer of 2**53 or more to divide, a JSON parameter (`true`, `null`, ...) is
parsed on its own.

Exactness: the values are the ones `from_messages` gives, bit for bit (a property test
compares them on random rows): an integer below 2**53 converts to the same double, and a
correctly rounded division of two exact doubles is Python's `int / int`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import orjson

from fleetplane.messages import codec
from fleetplane.messages.models import FLAG_FILTERED

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
UIntArray = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]
Positions = npt.NDArray[np.intp]

# Zero bytes after the last row, so that reading a corrupt or a fallen-back row's next value
# (a varint of up to 9 bytes, a double's 8) never reads past the buffer.
_PADDING = bytes(32)
# The longest varint read here: 9 bytes, 63 bits (a longer one is left to `codec.unpack`).
_MAX_VARINT_SHIFT = 56
_EXACT = 2**53  # integers below it convert to doubles exactly
# The device time `codec.unpack` adds received_at's offset to (no column holds received_at).
_ANY_TIME = datetime(5000, 1, 1)
_FLOAT_FIELDS = {
    # name: (header bit, scale, signed)
    "altitude": (1, codec._ALTITUDE_SCALE, True),
    "speed": (2, codec._SPEED_SCALE, False),
    "course": (4, codec._COURSE_SCALE, False),
    "hdop": (16, codec._HDOP_SCALE, False),
}
_INTEGER_FIELDS = {"satellites": 8, "inputs": 32, "outputs": 64}
_FIELD_ORDER = ("altitude", "speed", "course", "satellites", "hdop", "inputs", "outputs")
_POWERS_OF_TEN = np.array([10.0**d for d in range(8)])
_SHORT_DIVISORS = np.array([1.0, 1.0, 10.0, 100.0, 1000.0, 1.0, 1.0, 1.0])
_NUMERIC_KINDS = (codec._INTEGER, codec._NEGATIVE_INTEGER, codec._TENTHS, codec._HUNDREDTHS,
                  codec._THOUSANDTHS, codec._NUMBER)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Decoded:
    """The rows' fields as `columns.Columns` holds them (without `time_us`, which comes from
    the key) and every parameter that is a number in some row, NaN in the others."""

    fields: dict[str, npt.NDArray[np.generic]]
    params: dict[str, FloatArray]


def decode(
    lat_e7: Sequence[int | None], lon_e7: Sequence[int | None], packed: Sequence[bytes]
) -> Decoded:
    """The rows (their coordinates and packed parts, in the same order) as columns."""
    count = len(packed)
    decoder = _Decoder(packed)
    header = decoder.header()
    decoder.varints(np.arange(count))  # received_at - device_time: not a column
    fields: dict[str, npt.NDArray[np.generic]] = {
        "lat": _coordinates(lat_e7),
        "lon": _coordinates(lon_e7),
    }
    for name in _FIELD_ORDER:
        if name in _FLOAT_FIELDS:
            bit, scale, signed = _FLOAT_FIELDS[name]
            fields[name] = decoder.float_field(np.flatnonzero(header & bit), scale, signed)
        else:
            integers = decoder.integer_field(np.flatnonzero(header & _INTEGER_FIELDS[name]))
            fields[name] = integers.astype(np.float64) if name == "satellites" else integers
    fields["satellites"][header & 8 == 0] = np.nan
    for name in ("inputs", "outputs"):
        fields[name][header & _INTEGER_FIELDS[name] == 0] = -1
    fields["filtered"] = (header >> codec._FLAGS_SHIFT & FLAG_FILTERED) != 0
    params = decoder.params()
    decoder.redo_fallen_back(fields, params)
    return Decoded(fields, params)


def _coordinates(stored: Sequence[int | None]) -> FloatArray:
    # None becomes NaN; an integer of 1e-7 degree (32 bits) converts exactly.
    return np.array(stored, dtype=np.float64) / codec.COORDINATE_SCALE


class _Decoder:
    """The joined rows and, per row, the position of its next unread byte."""

    def __init__(self, packed: Sequence[bytes]) -> None:
        self.rows = packed
        lengths = np.fromiter(map(len, packed), np.intp, len(packed))
        self.ends = np.cumsum(lengths)
        self.at = self.ends - lengths
        self.buffer = np.frombuffer(b"".join(packed) + _PADDING, np.uint8)
        self.count = len(packed)
        # Rows left to `codec.unpack` (`_fall_back`).
        self.fallen_back = np.zeros(self.count, np.bool_)
        self.any_fallen_back = False

    def header(self) -> IntArray:
        header = self.varints(np.arange(self.count)).astype(np.int64)
        if (header >> codec._FLAGS_SHIFT + 3).any():
            raise ValueError("a packed message of a newer format")
        return header

    def varints(self, rows: Positions) -> UIntArray:
        """The varint at each of the rows' positions, which move past it."""
        buffer = self.buffer
        at = self.at[rows]
        byte = buffer[at]
        values = (byte & 0x7F).astype(np.uint64)
        at += 1
        going = np.flatnonzero(byte >= 0x80)
        shift = 7
        while going.size:
            if shift > _MAX_VARINT_SHIFT:
                self._fall_back(rows[going])
                break
            byte = buffer[at[going]]
            values[going] |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
            at[going] += 1
            going = going[byte >= 0x80]
            shift += 7
        self.at[rows] = at
        self._keep_fallen_back_at_their_end()
        return values

    def doubles(self, rows: Positions) -> FloatArray:
        """The 8 bytes at each of the rows' positions as a double, which move past them."""
        at = self.at[rows]
        data = self.buffer[at[:, np.newaxis] + np.arange(8)]
        self.at[rows] = at + 8
        self._keep_fallen_back_at_their_end()
        return np.ascontiguousarray(data).view("<f8").reshape(len(rows)).astype(np.float64)

    def skip(self, rows: Positions, lengths: npt.NDArray[np.intp]) -> None:
        self.at[rows] += lengths
        self._keep_fallen_back_at_their_end()

    def float_field(self, rows: Positions, scale: int, signed: bool) -> FloatArray:
        """`codec._field_at` for the rows that have the field; NaN in the others."""
        out = np.full(self.count, np.nan)
        stored = self.varints(rows)
        tagged = (stored & np.uint64(1)).astype(np.bool_)
        usual = rows[~tagged]
        steps = (stored[~tagged] >> np.uint64(1)).astype(np.int64)
        if signed:
            steps = (steps >> 1) ^ -(steps & 1)
        self._fall_back(usual[np.abs(steps) >= _EXACT])  # none that `codec.pack` wrote
        out[usual] = steps.astype(np.float64) / scale
        out[rows[tagged]] = self.numbers(rows[tagged], stored[tagged] >> np.uint64(1))
        return out

    def integer_field(self, rows: Positions) -> IntArray:
        """A zigzagged integer field for the rows that have it; 0 in the others."""
        out = np.zeros(self.count, np.int64)
        stored = self.varints(rows).astype(np.int64)
        out[rows] = (stored >> 1) ^ -(stored & 1)
        return out

    def numbers(self, rows: Positions, numbers: UIntArray) -> FloatArray:
        """`codec._number_at`: `m << 4 | d << 1 | sign`, or d = 7 and the double after."""
        decimals = (numbers >> np.uint64(1) & np.uint64(7)).astype(np.intp)
        whole = decimals == codec._WHOLE_DOUBLE
        out = np.empty(len(rows))
        out[whole] = self.doubles(rows[whole])
        mantissa = numbers[~whole] >> np.uint64(4)
        self._fall_back(rows[~whole][mantissa >= _EXACT])
        magnitude = mantissa.astype(np.float64) / _POWERS_OF_TEN[decimals[~whole]]
        negative = (numbers[~whole] & np.uint64(1)).astype(np.bool_)
        out[~whole] = np.where(negative, -magnitude, magnitude)
        return out

    def params(self) -> dict[str, FloatArray]:
        """`codec._params_at` for every row, one parameter of each row at a time; each name
        with a number in some row, NaN in the others."""
        found: dict[str, FloatArray] = {}
        rows = np.flatnonzero(self.at < self.ends)
        while rows.size:
            key = self.buffer[self.at[rows]].astype(np.intp)
            self.at[rows] += 1
            codes, kinds = key >> 3, key & 7
            if (kinds == codec._RESERVED).any():
                raise ValueError("a packed message of a newer format")
            named = self._names(rows, codes)
            stored = self.varints(rows)
            values = np.full(len(rows), np.nan)
            numeric = np.isin(kinds, _NUMERIC_KINDS)
            self._short_values(rows, kinds, stored, values)
            numbers = kinds == codec._NUMBER
            values[numbers] = self.numbers(rows[numbers], stored[numbers])
            texts = np.flatnonzero(kinds == codec._TEXT)
            numeric[texts] = self._texts(rows[texts], stored[texts], values, texts)
            numeric &= ~self.fallen_back[rows]  # what they hold is read by `codec.unpack`
            for name, indexes in self._by_name(codes, named):
                _store(found, self.count, name, rows[indexes], values[indexes], numeric[indexes])
            rows = rows[self.at[rows] < self.ends[rows]]
        return found

    def _names(self, rows: Positions, codes: npt.NDArray[np.intp]) -> dict[int, str]:
        """The names that follow their key (code 31), by index in `rows`, read past."""
        follows = np.flatnonzero(codes == codec._NAME_FOLLOWS)
        named: dict[int, str] = {}
        if follows.size:
            lengths = (self.varints(rows[follows]) >> np.uint64(2)).astype(np.intp)
            starts = self.at[rows[follows]]
            readable = ~self.fallen_back[rows[follows]]
            for index, start, length in zip(
                follows[readable].tolist(),
                starts[readable].tolist(),
                lengths[readable].tolist(),
                strict=True,
            ):
                named[index] = bytes(self.buffer[start : start + length]).decode()
            self.skip(rows[follows], lengths)
        unknown = (codes >= len(codec.KNOWN_PARAMS)) & (codes != codec._NAME_FOLLOWS)
        self._fall_back(rows[unknown])  # `codec.unpack` says what is wrong with them
        return named

    def _by_name(
        self, codes: npt.NDArray[np.intp], named: dict[int, str]
    ) -> list[tuple[str, Positions]]:
        """(name, the indexes of its parameters) of one parameter of each row."""
        groups: list[tuple[str, Positions]] = []
        known = codec.KNOWN_PARAMS
        for code in np.unique(codes).tolist():
            if code < len(known):
                groups.append((known[code], np.flatnonzero(codes == code)))
        by_name: dict[str, list[int]] = {}
        for index, name in named.items():
            by_name.setdefault(name, []).append(index)
        groups += [(name, np.array(indexes, np.intp)) for name, indexes in by_name.items()]
        return groups

    def _short_values(
        self, rows: Positions, kinds: npt.NDArray[np.intp], stored: UIntArray, out: FloatArray
    ) -> None:
        """INTEGER, NEGATIVE_INTEGER and the tenths to thousandths, into `out`."""
        integers = kinds == codec._INTEGER
        out[integers] = stored[integers].astype(np.int64).astype(np.float64)
        negative = kinds == codec._NEGATIVE_INTEGER
        out[negative] = (-stored[negative].astype(np.int64) - 1).astype(np.float64)
        short = (kinds >= codec._TENTHS) & (kinds <= codec._THOUSANDTHS)
        magnitude = stored[short] >> np.uint64(1)
        self._fall_back(rows[short][magnitude >= _EXACT])
        values = magnitude.astype(np.float64) / _SHORT_DIVISORS[kinds[short]]
        out[short] = np.where((stored[short] & np.uint64(1)).astype(np.bool_), -values, values)

    def _texts(
        self, rows: Positions, headers: UIntArray, out: FloatArray, where: Positions
    ) -> BoolArray:
        """Skips the rows' text values; a JSON one that is a number (`true`: 1) goes into
        `out` at `where`. Which of them are numbers."""
        lengths = (headers >> np.uint64(2)).astype(np.intp)
        json = (headers & np.uint64(3)) == codec._JSON
        json = np.flatnonzero(json & ~self.fallen_back[rows])
        numeric = np.zeros(len(rows), np.bool_)
        starts = self.at[rows[json]]
        for index, start, length in zip(
            json.tolist(), starts.tolist(), lengths[json].tolist(), strict=True
        ):
            value = orjson.loads(bytes(self.buffer[start : start + length]))
            if isinstance(value, int | float):
                out[where[index]] = value
                numeric[index] = True
        self.skip(rows, lengths)
        return numeric

    def _fall_back(self, rows: Positions) -> None:
        if rows.size:
            self.fallen_back[rows] = True
            self.any_fallen_back = True
            self._keep_fallen_back_at_their_end()

    def _keep_fallen_back_at_their_end(self) -> None:
        # A row fallen back is read no further (its positions would be wrong from there on).
        if self.any_fallen_back:
            self.at[self.fallen_back] = self.ends[self.fallen_back]

    def redo_fallen_back(
        self, fields: dict[str, npt.NDArray[np.generic]], params: dict[str, FloatArray]
    ) -> None:
        """The rows left to `codec.unpack`, decoded by it."""
        for row in np.flatnonzero(self.fallen_back).tolist():
            values = codec.unpack(_ANY_TIME, self.rows[row])
            for name in _FIELD_ORDER:
                value = getattr(values, name)
                if name in ("inputs", "outputs"):
                    fields[name][row] = -1 if value is None else value
                else:
                    fields[name][row] = np.nan if value is None else value
            fields["filtered"][row] = bool(values.flags & FLAG_FILTERED)
            for column in params.values():
                column[row] = np.nan
            for name, value in values.params.items():
                if isinstance(value, int | float):
                    if name not in params:
                        params[name] = np.full(self.count, np.nan)
                    params[name][row] = value


def _store(
    found: dict[str, FloatArray],
    count: int,
    name: str,
    rows: Positions,
    values: FloatArray,
    numeric: BoolArray,
) -> None:
    """The rows' values of one name that are numbers (a row holds a name once)."""
    if not numeric.any():
        return
    column = found.get(name)
    if column is None:
        column = found[name] = np.full(count, np.nan)
    column[rows[numeric]] = values[numeric]
