"""A device's messages as columns (numpy arrays), for what works on many of them at once: trip
detection, reports. One array per field, no Python object per message.

Two ways in, with the same result: `from_messages` (the messages a pipeline step was handed)
and `read` (a device's stored messages over a time range). `read` takes the days the column
store holds from their chunks (`column_store`, `column_chunks`) and only the rest from the
message rows: a device-year in well under a second where the rows alone take about half a
minute (docs/benchmarks.md, "Messages as columns").
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.timeutil import as_utc
from fleetplane.messages import codec_columns, column_chunks, column_store, service
from fleetplane.telemetry import Message

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)
_MICROSECONDS_PER_SECOND = 1_000_000
# A device's messages read from storage in one go.
READ_CHUNK = 50_000
_MICROSECOND = timedelta(microseconds=1)
# The fields of `Columns` but the parameters, as a chunk holds them.
_FIELDS = (
    "time_us", "lat", "lon", "speed", "altitude", "course", "satellites", "hdop", "inputs",
    "outputs", "filtered",
)  # fmt: skip
# Their types other than float64.
_DTYPES: dict[str, type[np.generic]] = {
    "time_us": np.int64, "inputs": np.int64, "outputs": np.int64, "filtered": np.bool_,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Columns:
    """Messages of one device in device-time order. Absent values are NaN (floats) or -1
    (`inputs`, `outputs`); `params` holds only the parameters asked for, as numbers (NaN where
    a message lacks one or its value is not a number)."""

    time_us: IntArray  # device time, microseconds since the Unix epoch (UTC)
    lat: FloatArray
    lon: FloatArray
    speed: FloatArray  # km/h
    altitude: FloatArray
    course: FloatArray
    satellites: FloatArray
    hdop: FloatArray
    inputs: IntArray
    outputs: IntArray
    filtered: BoolArray
    params: dict[str, FloatArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time_us)

    def time(self, index: int) -> datetime:
        return time_of(int(self.time_us[index]))

    def equals(self, other: "Columns") -> bool:
        """The same values, in the same types: NaN equals NaN, -0.0 does not equal 0.0."""
        if self.params.keys() != other.params.keys():
            return False
        pairs = [(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)]
        pairs = [pair for pair in pairs if not isinstance(pair[0], dict)]
        pairs += [(self.params[name], other.params[name]) for name in self.params]
        return all(_same_values(mine, theirs) for mine, theirs in pairs)

    def between(self, after: int | None, until: int) -> "Columns":
        """The messages with `after` < time_us <= `until` (microseconds, None: no bound)."""
        first = 0 if after is None else int(np.searchsorted(self.time_us, after, "right"))
        last = int(np.searchsorted(self.time_us, until, "right"))
        return self.rows(first, last)

    def rows(self, first: int, last: int) -> "Columns":
        """The messages from position `first` up to (not including) `last`, as views."""
        if first == 0 and last == len(self):
            return self
        return Columns(
            **{name: getattr(self, name)[first:last] for name in _FIELDS},
            params={name: values[first:last] for name, values in self.params.items()},
        )


def _same_values(mine: npt.NDArray[np.generic], theirs: npt.NDArray[np.generic]) -> bool:
    if mine.dtype != theirs.dtype or mine.shape != theirs.shape:
        return False
    if mine.dtype.kind != "f":
        return bool(np.array_equal(mine, theirs))
    nan = np.isnan(mine)
    if not np.array_equal(nan, np.isnan(theirs)):
        return False
    return bool(np.array_equal(mine[~nan].view(np.int64), theirs[~nan].view(np.int64)))


def concatenate(pieces: Sequence[Columns], params: Sequence[str]) -> Columns:
    """The pieces one after the other (each in time order, each older than the next); a
    parameter a piece lacks is NaN there."""
    if len(pieces) == 1 and list(pieces[0].params) == list(params):
        return pieces[0]
    if not pieces:
        return from_messages([], params)
    return Columns(
        **{name: np.concatenate([getattr(p, name) for p in pieces]) for name in _FIELDS},
        params={
            name: np.concatenate([p.params.get(name, _nan(len(p))) for p in pieces])
            for name in params
        },
    )


def _nan(count: int) -> FloatArray:
    return np.full(count, np.nan, dtype=np.float64)


def time_us(at: datetime) -> int:
    """A time as the microseconds since the epoch `Columns.time_us` holds."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _MICROSECONDS_PER_SECOND + delta.microseconds


def time_of(microseconds: int) -> datetime:
    return _EPOCH + _MICROSECOND * microseconds  # in UTC; a sixth of fromtimestamp's time


def from_messages(
    messages: Sequence[Message], params: Sequence[str] = (), *, unread: Collection[str] = ()
) -> Columns:
    """The columns of messages as read back from storage (or as the intake hands them over).
    The fields named in `unread` (of altitude, course, hdop, inputs, outputs) are not taken
    from the messages but left missing (NaN, -1): for a caller that never looks at them."""

    def floats(name: str) -> FloatArray:
        if name in unread:
            return np.full(len(messages), np.nan, dtype=np.float64)
        values = [getattr(m, name) for m in messages]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def masks(name: str) -> IntArray:
        if name in unread:
            return np.full(len(messages), -1, dtype=np.int64)
        values = [getattr(m, name) for m in messages]
        return np.array([-1 if v is None else v for v in values], dtype=np.int64)

    return Columns(
        time_us=np.array([time_us(m.device_time) for m in messages], dtype=np.int64),
        lat=floats("lat"),
        lon=floats("lon"),
        speed=floats("speed"),
        altitude=floats("altitude"),
        course=floats("course"),
        satellites=floats("satellites"),
        hdop=floats("hdop"),
        inputs=masks("inputs"),
        outputs=masks("outputs"),
        filtered=np.array([m.filtered for m in messages], dtype=np.bool_),
        params={name: _param_column(messages, name) for name in params},
    )


def _param_column(messages: Sequence[Message], name: str) -> FloatArray:
    out = np.full(len(messages), np.nan, dtype=np.float64)
    for index, message in enumerate(messages):
        value = message.params.get(name)
        if isinstance(value, int | float):
            out[index] = value
    return out


async def read(
    session: AsyncSession,
    device_seq: int,
    *,
    after: datetime | None,
    until: datetime,
    params: Sequence[str] = (),
) -> Columns:
    """The device's stored messages with `after` < device time <= `until`, as columns: what
    `from_messages` makes of `service.stored_since` over the same range. Days with a chunk
    that still holds their rows come from the column store, the rest from the rows."""
    chunks = await column_store.current_chunks(session, device_seq, after=after, until=until)
    pieces: list[Columns | column_chunks.Run] = []
    run: list[bytes] = []  # chunks of consecutive days, unpacked together
    covered = after  # every message up to this time is in `pieces` or `run`
    for chunk in chunks:
        gap_until = min(chunk.start - _MICROSECOND, until)
        if covered is None or covered < gap_until:
            if run:
                pieces.append(column_chunks.Run(run))
                run = []
            pieces.append(
                await read_rows(session, device_seq, after=covered, until=gap_until, params=params)
            )
        run.append(chunk.packed)
        covered = chunk.end - _MICROSECOND
    if run:
        pieces.append(column_chunks.Run(run))
    if covered is None or covered < until:
        pieces.append(
            await read_rows(session, device_seq, after=covered, until=until, params=params)
        )
    # The rows were read within the bounds; only the first and the last chunk may hold
    # messages beyond them, and they are at either end.
    bounds = (None if after is None else time_us(after), time_us(until))
    return _assemble(pieces, params).between(*bounds)


def _assemble(pieces: Sequence[Columns | column_chunks.Run], params: Sequence[str]) -> Columns:
    """The pieces one after the other (each in time order, each older than the next), each
    written once into the arrays of the whole: a year of chunks is unpacked where it ends,
    not copied again (a copy of 3 M messages' columns costs as much as unpacking them)."""
    if len(pieces) == 1 and isinstance(pieces[0], Columns):
        return pieces[0]
    total = sum(p.count if isinstance(p, column_chunks.Run) else len(p) for p in pieces)
    out = Columns(
        **{name: np.empty(total, _DTYPES.get(name, np.float64)) for name in _FIELDS},
        params={name: np.empty(total) for name in params},
    )
    start = 0
    for piece in pieces:
        if isinstance(piece, column_chunks.Run):
            end = start + piece.count
            for name in _FIELDS:
                piece.unpack_into(name, getattr(out, name)[start:end])
            for name in params:
                piece.unpack_into(name, out.params[name][start:end], column_chunks.Role.PARAMETER)
        else:
            end = start + len(piece)
            for name in _FIELDS:
                getattr(out, name)[start:end] = getattr(piece, name)
            for name in params:
                out.params[name][start:end] = piece.params.get(name, np.nan)
        start = end
    return out


async def read_rows(
    session: AsyncSession,
    device_seq: int,
    *,
    after: datetime | None,
    until: datetime,
    params: Sequence[str] | None,
) -> Columns:
    """`read` from the message rows alone, decoded straight into columns (`from_rows`);
    `params` None: every parameter that is a number in some message."""
    pieces: list[Columns] = []
    while True:
        rows = await service.stored_rows(
            session, device_seq, after=after, until=until, limit=READ_CHUNK
        )
        times, lat_e7, lon_e7, packed = zip(*rows, strict=True) if rows else ((), (), (), ())
        pieces.append(from_rows(stored_times_us(times), lat_e7, lon_e7, packed, params))
        if len(rows) < READ_CHUNK:
            break
        after = as_utc(times[-1])
    if params is None:
        params = list(dict.fromkeys(name for piece in pieces for name in piece.params))
    return concatenate(pieces, params)


def from_rows(
    times_us: IntArray,
    lat_e7: Sequence[int | None],
    lon_e7: Sequence[int | None],
    packed: Sequence[bytes],
    params: Sequence[str] | None = None,
) -> Columns:
    """The columns of stored rows (their times, coordinates and packed parts): what
    `from_messages` makes of them as messages, without a message per row. `params` None:
    every parameter that is a number in some row."""
    decoded = codec_columns.decode(lat_e7, lon_e7, packed)
    found = decoded.params
    if params is not None:
        found = {name: found[name] if name in found else _nan(len(packed)) for name in params}
    return Columns(time_us=times_us, **decoded.fields, params=found)  # type: ignore[arg-type]


def stored_times_us(times: Sequence[datetime]) -> IntArray:
    """The microseconds since the epoch of stored times, naive ones being in UTC (SQLite)."""
    # A subtraction per time: numpy's own conversion of datetimes takes five times as long.
    epoch = _NAIVE_EPOCH if times and times[0].tzinfo is None else _EPOCH
    return np.fromiter(((at - epoch) // _MICROSECOND for at in times), np.int64, len(times))


async def read_day(
    session: AsyncSession, device_seq: int, start: datetime, end: datetime
) -> Columns:
    """The device's messages with `start` <= device time < `end` from the rows, with every
    parameter that is a number in some message: what a chunk holds."""
    return await read_rows(
        session, device_seq, after=start - _MICROSECOND, until=end - _MICROSECOND, params=None
    )


def to_chunk(columns: Columns) -> bytes:
    """The columns packed for the column store."""
    values = {name: getattr(columns, name) for name in _FIELDS}
    return column_chunks.pack(values, columns.params, len(columns))


def from_chunks(chunks: Sequence[bytes], params: Sequence[str]) -> Columns:
    """The columns of consecutive chunks, with the parameters in `params` (NaN where a chunk
    holds none)."""
    return _assemble([column_chunks.Run(chunks)], params)
