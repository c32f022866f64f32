"""Cursor pagination: lists are ordered by id (time-ordered), the cursor is the last id seen,
so a cursor keeps working while rows are added."""

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query, Response
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


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    after: str | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageParams:
    """`limit` and `cursor`, shared by every list endpoint (async: no thread hop per call)."""
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


PageDep = Depends(page_params)


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
    schema: type[BaseModel],
) -> Response:
    """One page of `statement`'s rows, shaped as `schema`, as a ready JSON answer.

    Lists are the hottest reads, so rows are selected as exactly the schema's columns and
    encoded straight to JSON: no ORM object or model instance per row. Every field of a list
    schema must therefore be a mapped attribute (a column or a column_property).
    """
    entity = statement.column_descriptions[0]["entity"]
    columns = [getattr(entity, name) for name in schema.model_fields]
    statement = statement.with_only_columns(*columns)
    if params.after is not None:
        statement = statement.where(id_column > params.after)
    result = await session.execute(statement.order_by(id_column).limit(params.limit + 1))
    names = tuple(result.keys())
    rows = [dict(zip(names, row, strict=True)) for row in result.all()]
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        next_cursor = encode_cursor(rows[-1]["id"])
    body = orjson.dumps({"items": rows, "next_cursor": next_cursor}, option=orjson.OPT_UTC_Z)
    return Response(body, media_type="application/json")
