"""Cursor pagination: lists are ordered by id (time-ordered), the cursor is the last id seen,
so a cursor keeps working while rows are added."""

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from fleetplane.core.errors import validation_error

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class PageParams:
    """`limit` and `cursor` query parameters, shared by every list endpoint."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
        cursor: Annotated[
            str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
        ] = None,
    ) -> None:
        self.limit = limit
        self.after = decode_cursor(cursor) if cursor else None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = orjson.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        after = None
    if not isinstance(after, str):
        raise validation_error(["query", "cursor"], "Invalid cursor; use a next_cursor you got.")
    return after


async def paginate(
    session: AsyncSession,
    statement: Select[Any],
    id_column: InstrumentedAttribute[str],
    params: PageParams,
    to_item: Callable[[Any], Item],
) -> Page[Item]:
    if params.after is not None:
        statement = statement.where(id_column > params.after)
    rows: Sequence[Any] = (
        (await session.execute(statement.order_by(id_column).limit(params.limit + 1)))
        .scalars()
        .all()
    )
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = encode_cursor(rows[-1].id) if more and rows else None
    return Page[Any](items=[to_item(row) for row in rows], next_cursor=next_cursor)
