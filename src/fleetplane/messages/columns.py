"""A device's messages as columns (numpy arrays), for what works on many of them at once: trip
detection, reports. One array per field, no Python object per message.

Two ways in, with the same result: `from_messages` (the messages a pipeline step was handed)
and `read` (a device's stored messages over a time range).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages import service
from fleetplane.telemetry import Message

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECONDS_PER_SECOND = 1_000_000
# A device's messages read from storage in one go.
READ_CHUNK = 50_000


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


def time_us(at: datetime) -> int:
    """A time as the microseconds since the epoch `Columns.time_us` holds."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _MICROSECONDS_PER_SECOND + delta.microseconds


def time_of(microseconds: int) -> datetime:
    seconds, micro = divmod(microseconds, _MICROSECONDS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micro)


def from_messages(messages: Sequence[Message], params: Sequence[str] = ()) -> Columns:
    """The columns of messages as read back from storage (or as the intake hands them over)."""

    def floats(name: str) -> FloatArray:
        values = [getattr(m, name) for m in messages]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def masks(name: str) -> IntArray:
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
    """The device's stored messages with `after` < device time <= `until`, as columns."""
    messages: list[Message] = []
    while True:
        chunk = await service.stored_since(
            session, device_seq, after=after, until=until, limit=READ_CHUNK
        )
        messages += chunk
        if len(chunk) < READ_CHUNK:
            return from_messages(messages, params)
        after = chunk[-1].device_time
