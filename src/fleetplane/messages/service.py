"""Message rows: turning decoded messages into rows, and writing them in bulk."""

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Response
from sqlalchemy import JSON, Column, DateTime, Row, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.db import UTCDateTime, sqlite_utc_text
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


_TABLE = StoredMessage.__table__
Encoder = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _BulkInsert:
    """One statement that writes a whole batch and skips rows already stored, with each
    column's values encoded for the driver by the column type's own bind processing.

    The rows go to the driver as they are, without SQLAlchemy's per-row parameter handling
    (the largest cost of the ingest path): SQLite gets `executemany` of one tuple per row,
    PostgreSQL one array per column, unnested into a single `INSERT ... SELECT`."""

    sql: str
    names: tuple[str, ...]
    encoders: tuple[Encoder | None, ...]
    one_array_per_column: bool
    times: frozenset[str]  # columns of times: a packet's messages share their receive time

    def parameters(self, rows: list[dict[str, Any]]) -> Any:
        columns = [
            _encoded([row[name] for row in rows], encoder, name in self.times)
            for name, encoder in zip(self.names, self.encoders, strict=True)
        ]
        if self.one_array_per_column:
            return tuple(columns)  # one execution with one parameter per column
        return list(zip(*columns, strict=True))  # executemany, one tuple per row


def _encoded(values: list[Any], encoder: Encoder | None, repeats: bool) -> list[Any]:
    if encoder is None:
        return values
    if repeats:  # each distinct value encoded once
        encoded = {value: encoder(value) for value in set(values)}
        return list(map(encoded.__getitem__, values))
    return list(map(encoder, values))


def _encoder(column: Column[Any], dialect: Dialect) -> Encoder | None:
    """The column type's bind processing, or a faster one proven to give the same values."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    if dialect.name == "sqlite" and isinstance(column.type, UTCDateTime) and processor:
        probes = (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(1999, 12, 31, 23, 59))
        if all(sqlite_utc_text(p) == processor(p) for p in probes):
            return sqlite_utc_text
    return processor


def _bulk_insert(dialect: Dialect) -> _BulkInsert | None:
    """The batch insert for this dialect; None when only the generic Core path fits."""
    columns = list(_TABLE.columns)
    names = tuple(column.name for column in columns)
    encoders = tuple(_encoder(column, dialect) for column in columns)
    times = frozenset(c.name for c in columns if isinstance(c.type, DateTime | UTCDateTime))
    listed = ", ".join(_quoted(names, dialect))
    table = dialect.identifier_preparer.format_table(_TABLE)
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in names)
        sql = f"INSERT INTO {table} ({listed}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        return _BulkInsert(sql, names, encoders, one_array_per_column=False, times=times)
    if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
        arrays = ", ".join(
            f"${number}::{_array_type(column, dialect)}"
            for number, column in enumerate(columns, start=1)
        )
        # JSON travels as text arrays (the encoder made the text) and is cast back per row.
        selected = ", ".join(
            f"{name}::{column.type.compile(dialect=dialect)}"
            if isinstance(column.type, JSON)
            else name
            for name, column in zip(_quoted(names, dialect), columns, strict=True)
        )
        sql = (
            f"INSERT INTO {table} ({listed}) SELECT {selected}"
            f" FROM unnest({arrays}) AS batch ({listed}) ON CONFLICT DO NOTHING"
        )
        return _BulkInsert(sql, names, encoders, one_array_per_column=True, times=times)
    return None


def _quoted(names: tuple[str, ...], dialect: Dialect) -> list[str]:
    return [dialect.identifier_preparer.quote(name) for name in names]


def _array_type(column: Column[Any], dialect: Dialect) -> str:
    if isinstance(column.type, JSON):
        return "text[]"
    return f"{column.type.compile(dialect=dialect)}[]"


# One per engine's dialect (its JSON serializer is part of the encoding); built on first use.
_BULK_INSERTS: "weakref.WeakKeyDictionary[Dialect, _BulkInsert | None]" = (
    weakref.WeakKeyDictionary()
)


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Writes a batch of `to_row` rows in one statement; a row whose (device, time) is already
    stored, or repeated in the batch, is skipped."""
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    if dialect not in _BULK_INSERTS:
        _BULK_INSERTS[dialect] = _bulk_insert(dialect)
    bulk = _BULK_INSERTS[dialect]
    if bulk is None:
        await connection.execute(insert(_TABLE), rows)
        return
    await connection.exec_driver_sql(bulk.sql, bulk.parameters(rows))


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
