"""Message rows: turning decoded messages into rows, and writing them in bulk."""

from typing import Any

from sqlalchemy import Insert, insert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.ingest.message import Message
from fleetplane.messages.models import FLAG_BLACK_BOX, FLAG_TIME_MISSING, StoredMessage


def to_row(device_id: str, message: Message) -> dict[str, Any]:
    params: dict[str, Any] = dict(message.params)
    for number, value in enumerate(message.adc, start=1):
        if value is not None:
            params[f"adc{number}"] = value
    if message.driver_key is not None:
        params["driver_key"] = message.driver_key
    flags = (FLAG_BLACK_BOX if message.from_black_box else 0) | (
        FLAG_TIME_MISSING if message.device_time_missing else 0
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


def _insert_ignoring_duplicates(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgres_insert(StoredMessage).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite_insert(StoredMessage).on_conflict_do_nothing()
    return insert(StoredMessage)


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One bulk statement per batch; rows with a (device, time) already stored are skipped."""
    if rows:
        statement = _insert_ignoring_duplicates(session.bind.dialect.name)
        await session.execute(statement, rows)
