"""Message rows: turning decoded messages into rows, and writing them in bulk."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import Response
from sqlalchemy import DateTime, Row, and_, func, or_, select, true, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.errors import validation_error
from fleetplane.core.ids import new_id
from fleetplane.core.pagination import PageParams, encode_cursor, json_response
from fleetplane.core.timeutil import checked_utc
from fleetplane.devices import service as devices
from fleetplane.messages import codec
from fleetplane.messages.models import (
    FLAG_BLACK_BOX,
    FLAG_FILTERED,
    FLAG_TIME_MISSING,
    DriverChatMessage,
    StoredMessage,
)
from fleetplane.sensors.calculation import SensorDefinition, SensorValue, compute_value
from fleetplane.telemetry import DriverMessage, Message

# A stored message as read back: device time, lat_e7, lon_e7, packed.
_StoredRow = Row[datetime, int | None, int | None, bytes]
_MILLISECOND = timedelta(milliseconds=1)


def add_stored_params(params: dict[str, Any], message: Message) -> dict[str, Any]:
    """Adds the message's parameters to `params` as they are stored and shown: the device's
    own, then its analog inputs as `adc1`.. and its driver key as `driver_key` (messages read
    back from storage carry them in `params` already). Returns `params`."""
    params.update(message.params)
    for number, value in enumerate(message.adc, start=1):
        if value is not None:
            params[f"adc{number}"] = value
    if message.driver_key is not None:
        params["driver_key"] = message.driver_key
    return params


def to_row(device_seq: int, message: Message) -> dict[str, Any]:
    """The row of a decoded message; `device_seq` is the device's `seq`
    (`devices.service.seqs_of`). The ingest writer calls this for every message it stores."""
    lat, lon = message.lat, message.lon
    return _row(
        device_seq,
        message,
        None if lat is None else round(lat * codec.COORDINATE_SCALE),
        None if lon is None else round(lon * codec.COORDINATE_SCALE),
        add_stored_params({}, message),
    )


def to_row_and_stored(device_seq: int, message: Message) -> tuple[dict[str, Any], Message]:
    """`to_row` and `stored_form` at once, sharing their work (the rounded coordinates, the
    parameters as stored): what the intake calls when pipeline steps take its messages."""
    lat, lon = message.lat, message.lon
    lat_e7 = None if lat is None else round(lat * codec.COORDINATE_SCALE)
    lon_e7 = None if lon is None else round(lon * codec.COORDINATE_SCALE)
    params = add_stored_params({}, message)
    row = _row(device_seq, message, lat_e7, lon_e7, params)
    return row, _stored_message(message, lat_e7, lon_e7, params)


def _row(
    device_seq: int,
    message: Message,
    lat_e7: int | None,
    lon_e7: int | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    flags = (
        (FLAG_BLACK_BOX if message.from_black_box else 0)
        | (FLAG_TIME_MISSING if message.device_time_missing else 0)
        | (FLAG_FILTERED if message.filtered else 0)
    )
    satellites = message.satellites
    return {
        "device_seq": device_seq,
        "device_time": message.device_time,
        "lat_e7": lat_e7,
        "lon_e7": lon_e7,
        "packed": codec.pack_values(
            message.device_time,
            message.received_at,
            message.altitude,
            message.speed,
            message.course,
            None if satellites is None else int(satellites),
            message.hdop,
            message.inputs,
            message.outputs,
            params,
            flags,
        ),
    }


def stored_form(message: Message) -> Message:
    """The message as it reads back from its row (`to_row`, then `stored_since`), without the
    round trip: what the intake hands the pipeline steps, which must see the same message
    whether it came from the intake or from storage (a rewind reads it back)."""
    return _stored_message(
        message,
        codec.to_coordinate(message.lat),
        codec.to_coordinate(message.lon),
        add_stored_params({}, message),
    )


def _stored_message(
    message: Message, lat_e7: int | None, lon_e7: int | None, params: dict[str, Any]
) -> Message:
    """The message as it reads back, from the parts of its row (`params` is taken over)."""
    received_at = message.received_at
    if received_at.microsecond % 1000 or message.device_time.microsecond % 1000:
        received_at -= (received_at - message.device_time) % _MILLISECOND  # stored to the ms
    return Message(
        device_time=message.device_time,
        received_at=received_at,
        lat=None if lat_e7 is None else lat_e7 / codec.COORDINATE_SCALE,
        lon=None if lon_e7 is None else lon_e7 / codec.COORDINATE_SCALE,
        altitude=_as_float(message.altitude),
        speed=_as_float(message.speed),
        course=_as_float(message.course),
        satellites=None if message.satellites is None else int(message.satellites),
        hdop=_as_float(message.hdop),
        inputs=message.inputs,
        outputs=message.outputs,
        params=params,
        from_black_box=message.from_black_box,
        device_time_missing=message.device_time_missing,
        filtered=message.filtered,
    )


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Writes a batch of `to_row` rows in one statement; a row whose (device, time) is already
    stored, or repeated in the batch, is skipped."""
    if rows:
        await bulk.write_rows(await session.connection(), StoredMessage.__table__, rows)


async def page(
    session: AsyncSession,
    device_id: str,
    params: PageParams,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sensors: Sequence[SensorDefinition] = (),
) -> Response:
    """One page of a device's messages in device-time order, each with the values of the
    device's `sensors` in it; the cursor is the last time."""
    after = None if params.after is None else _cursor_time(params.after)
    items = await read(
        session, device_id, since=since, until=until, after=after, limit=params.limit + 1
    )
    next_cursor = None
    if len(items) > params.limit:
        items = items[: params.limit]
        next_cursor = encode_cursor(items[-1]["time"].isoformat())
    for item in items:
        item["sensors"] = sensor_values(sensors, item)
    return json_response({"items": items, "next_cursor": next_cursor})


def sensor_values(
    sensors: Sequence[SensorDefinition], item: dict[str, Any]
) -> dict[str, SensorValue | None]:
    """Each sensor's value in one message shaped by `read`, by sensor id (null: none)."""
    params, inputs, outputs = item["params"], item["inputs"], item["outputs"]
    return {sensor.id: compute_value(sensor, params, inputs, outputs) for sensor in sensors}


async def read(
    session: AsyncSession,
    device_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: datetime | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """A device's messages in device-time order, shaped as the API returns them
    (`MessageOut`): `since` <= time < `until`, time > `after`."""
    seqs = await devices.seqs_of(session, [device_id])
    if device_id not in seqs:
        return []
    statement = select(
        StoredMessage.device_time, StoredMessage.lat_e7, StoredMessage.lon_e7, StoredMessage.packed
    ).where(StoredMessage.device_seq == seqs[device_id])
    if since is not None:
        statement = statement.where(StoredMessage.device_time >= since)
    if until is not None:
        statement = statement.where(StoredMessage.device_time < until)
    if after is not None:
        statement = statement.where(StoredMessage.device_time > after)
    statement = statement.order_by(StoredMessage.device_time).limit(limit)
    return [_shape(row) for row in await session.execute(statement)]


def _cursor_time(after: str) -> datetime:
    try:
        return checked_utc(datetime.fromisoformat(after))
    except ValueError:
        raise validation_error(
            ["query", "cursor"], "Invalid cursor; use a next_cursor you got."
        ) from None


def _shape(row: _StoredRow) -> dict[str, Any]:
    values = codec.unpack(row.device_time, row.packed)
    return {
        "time": row.device_time,
        "received_at": values.received_at,
        "lat": codec.from_coordinate(row.lat_e7),
        "lon": codec.from_coordinate(row.lon_e7),
        "altitude": values.altitude,
        "speed": values.speed,
        "course": values.course,
        "satellites": values.satellites,
        "hdop": values.hdop,
        "inputs": values.inputs,
        "outputs": values.outputs,
        "params": values.params,
        "black_box": bool(values.flags & FLAG_BLACK_BOX),
        "valid": not values.flags & FLAG_FILTERED,
    }


async def store_chat(session: AsyncSession, device_id: str, chat: DriverMessage) -> None:
    session.add(
        DriverChatMessage(
            id=new_id("chat"),
            device_id=device_id,
            text=chat.text[:1400],
            received_at=chat.received_at,
        )
    )
    await session.flush()


async def stored_since(
    session: AsyncSession,
    device_seq: int,
    *,
    after: datetime | None,
    until: datetime,
    limit: int,
) -> list[Message]:
    """A device's stored messages with `after` < time <= `until`, oldest first, at most
    `limit`, as messages again (what pipeline steps take in)."""
    statement = select(
        StoredMessage.device_time, StoredMessage.lat_e7, StoredMessage.lon_e7, StoredMessage.packed
    ).where(StoredMessage.device_seq == device_seq, StoredMessage.device_time <= until)
    if after is not None:
        statement = statement.where(StoredMessage.device_time > after)
    statement = statement.order_by(StoredMessage.device_time).limit(limit)
    return [from_stored_row(*row) for row in await session.execute(statement)]


async def stored_rows(
    session: AsyncSession,
    device_seq: int,
    *,
    after: datetime | None,
    until: datetime,
    limit: int,
) -> Sequence[_StoredRow]:
    """`stored_since`'s rows as they are stored (device time, lat_e7, lon_e7, packed), for
    decoding many at once (`messages.codec_columns`): the device time as the driver gives it
    (SQLite: naive, in UTC), not through `UTCDateTime` and the ORM, which cost more per row
    than the rest."""
    statement = select(
        type_coerce(StoredMessage.device_time, DateTime(timezone=True)),
        StoredMessage.lat_e7,
        StoredMessage.lon_e7,
        StoredMessage.packed,
    ).where(StoredMessage.device_seq == device_seq, StoredMessage.device_time <= until)
    if after is not None:
        statement = statement.where(StoredMessage.device_time > after)
    statement = statement.order_by(StoredMessage.device_time).limit(limit)
    connection = await session.connection()
    return (await connection.execute(statement)).all()


async def newest_before(
    session: AsyncSession, device_seq: int, before: datetime
) -> datetime | None:
    """The time of the device's newest stored message older than `before`."""
    statement = select(func.max(StoredMessage.device_time)).where(
        StoredMessage.device_seq == device_seq, StoredMessage.device_time < before
    )
    return (await session.execute(statement)).scalar_one_or_none()


# Device ranges asked about in one statement (an OR of index range scans).
RANGES_PER_QUERY = 100


async def with_positions_between(
    session: AsyncSession, ranges: Sequence[tuple[int, datetime | None, datetime]]
) -> set[int]:
    """Of these (device seq, after, before) ranges, the devices with a stored message with a
    position strictly inside theirs (`after` None: from the first): a statement per hundred
    devices, nothing unpacked."""
    found: set[int] = set()
    for start in range(0, len(ranges), RANGES_PER_QUERY):
        inside = [
            and_(
                StoredMessage.device_seq == seq,
                StoredMessage.device_time < before,
                true() if after is None else StoredMessage.device_time > after,
            )
            for seq, after, before in ranges[start : start + RANGES_PER_QUERY]
        ]
        statement = (
            select(StoredMessage.device_seq)
            .where(or_(*inside), StoredMessage.lat_e7.is_not(None))
            .distinct()
        )
        found.update((await session.execute(statement)).scalars())
    return found


def from_stored_row(
    device_time: datetime, lat_e7: int | None, lon_e7: int | None, packed: bytes
) -> Message:
    """The message of a stored row's values (`to_row`'s), as `stored_since` reads it back."""
    (
        received_at,
        altitude,
        speed,
        course,
        satellites,
        hdop,
        inputs,
        outputs,
        params,
        flags,
    ) = codec.unpack_values(device_time, packed)
    # By position, in `Message`'s order: a third of the time of keywords, for every message
    # the pipeline steps take in (tests/messages/test_codec.py checks it against keywords).
    return Message(
        device_time,
        received_at,
        None if lat_e7 is None else lat_e7 / codec.COORDINATE_SCALE,
        None if lon_e7 is None else lon_e7 / codec.COORDINATE_SCALE,
        altitude,
        speed,
        course,
        satellites,
        hdop,
        inputs,
        outputs,
        (),  # adc: in params once stored
        None,  # driver_key: in params once stored
        params,
        bool(flags & FLAG_BLACK_BOX),
        bool(flags & FLAG_TIME_MISSING),
        bool(flags & FLAG_FILTERED),
    )
