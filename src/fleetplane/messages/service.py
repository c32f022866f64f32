"""Message rows: turning decoded messages into rows, and writing them in bulk."""

from datetime import datetime
from typing import Any

from fastapi import Response
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.errors import validation_error
from fleetplane.core.ids import new_id
from fleetplane.core.pagination import PageParams, encode_cursor, json_response
from fleetplane.ingest.message import DriverMessage, Message
from fleetplane.messages.models import (
    FLAG_BLACK_BOX,
    FLAG_FILTERED,
    FLAG_TIME_MISSING,
    DriverChatMessage,
    StoredMessage,
)


def to_row(device_id: str, message: Message) -> dict[str, Any]:
    params: dict[str, Any] = dict(message.params)
    for number, value in enumerate(message.adc, start=1):
        if value is not None:
            params[f"adc{number}"] = value
    if message.driver_key is not None:
        params["driver_key"] = message.driver_key
    flags = (
        (FLAG_BLACK_BOX if message.from_black_box else 0)
        | (FLAG_TIME_MISSING if message.device_time_missing else 0)
        | (FLAG_FILTERED if message.filtered else 0)
    )
    return {
        "device_id": device_id,
        "device_time": message.device_time,
        "received_at": message.received_at,
        "lat": message.lat,
        "lon": message.lon,
        "altitude": message.altitude,
        "speed": message.speed,
        "course": message.course,
        "satellites": None if message.satellites is None else int(message.satellites),
        "hdop": message.hdop,
        "inputs": message.inputs,
        "outputs": message.outputs,
        "params": params or None,
        "flags": flags,
    }


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
) -> Response:
    """One page of a device's messages in device-time order; the cursor is the last time."""
    statement = select(*_MESSAGE_COLUMNS).where(StoredMessage.device_id == device_id)
    if since is not None:
        statement = statement.where(StoredMessage.device_time >= since)
    if until is not None:
        statement = statement.where(StoredMessage.device_time < until)
    if params.after is not None:
        statement = statement.where(StoredMessage.device_time > _cursor_time(params.after))
    statement = statement.order_by(StoredMessage.device_time).limit(params.limit + 1)
    rows = (await session.execute(statement)).all()
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        next_cursor = encode_cursor(rows[-1].device_time.isoformat())
    return json_response({"items": [_shape(row) for row in rows], "next_cursor": next_cursor})


_MESSAGE_COLUMNS = [
    column for column in StoredMessage.__table__.columns if column.name != "device_id"
]


def _cursor_time(after: str) -> datetime:
    try:
        return datetime.fromisoformat(after)
    except ValueError:
        raise validation_error(
            ["query", "cursor"], "Invalid cursor; use a next_cursor you got."
        ) from None


def _shape(row: Row[Any]) -> dict[str, Any]:
    return {
        "time": row.device_time,
        "received_at": row.received_at,
        "lat": row.lat,
        "lon": row.lon,
        "altitude": row.altitude,
        "speed": row.speed,
        "course": row.course,
        "satellites": row.satellites,
        "hdop": row.hdop,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "params": row.params or {},
        "black_box": bool(row.flags & FLAG_BLACK_BOX),
        "valid": not row.flags & FLAG_FILTERED,
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
