"""Cursor pagination: lists are ordered by id (time-ordered), the cursor is the last id seen,
so a cursor keeps working while rows are added."""

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import Row, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from starlette.datastructures import QueryParams

from fleetplane.core.errors import validation_error

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 512
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"  # what encode_cursor gives: base64url, unpadded


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    after: str | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page.",
        ),
    ] = None,
) -> PageParams:
    """`limit` and `cursor`, shared by every list endpoint (async: no thread hop per call)."""
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


def plain_page_params(query: QueryParams) -> PageParams | None:
    """`limit` and `cursor` read without FastAPI when each is absent or plainly valid (digits
    in range, a cursor this API gave); None for anything else, which `page_params` then
    validates and answers."""
    limits, cursors = query.getlist("limit"), query.getlist("cursor")
    if len(limits) > 1 or len(cursors) > 1:
        return None
    limit = DEFAULT_LIMIT
    if limits:
        if not (limits[0].isascii() and limits[0].isdigit() and len(limits[0]) <= 4):
            return None
        limit = int(limits[0])
        if not 1 <= limit <= MAX_LIMIT:
            return None
    if not cursors:
        return PageParams(limit=limit, after=None)
    after = _cursor_value(cursors[0]) if 0 < len(cursors[0]) <= MAX_CURSOR_LENGTH else None
    return None if after is None else PageParams(limit=limit, after=after)


PageDep = Depends(page_params)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    after = _cursor_value(cursor)
    if after is None:
        raise validation_error(["query", "cursor"], "Invalid cursor; use a next_cursor you got.")
    return after


def _cursor_value(cursor: str) -> str | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = orjson.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return None
    # What a cursor holds is an id or a time this API wrote: never a control character (and
    # PostgreSQL could not even compare a NUL).
    if not isinstance(after, str) or not after.isprintable():
        return None
    return after


async def paginate(
    session: AsyncSession,
    statement: Select[*tuple[Any, ...]],
    id_column: InstrumentedAttribute[str],
    params: PageParams,
    schema: type[BaseModel],
) -> Response:
    """One page of `statement`'s rows, shaped as `schema`, as a ready JSON answer.

    Lists are the hottest reads, so rows are selected as exactly the schema's columns and
    encoded straight to JSON: no ORM object or model instance per row. Every field of a list
    schema must therefore be a mapped attribute (a column or a hybrid expression).
    """
    entity = statement.column_descriptions[0]["entity"]
    names = tuple(schema.model_fields)
    statement = statement.with_only_columns(*(getattr(entity, name) for name in names))
    return await paginate_rows(
        session, statement, id_column, params, lambda row: dict(zip(names, row, strict=True))
    )


async def paginate_rows(
    session: AsyncSession,
    statement: Select[*tuple[Any, ...]],
    id_column: Any,
    params: PageParams,
    shape: Callable[[Row[*tuple[Any, ...]]], dict[str, Any]],
) -> Response:
    """One page of rows, each turned into a JSON object by `shape`, as a ready answer."""
    rows, next_cursor = await fetch_page(session, statement, id_column, params)
    return json_response({"items": [shape(row) for row in rows], "next_cursor": next_cursor})


async def fetch_page(
    session: AsyncSession, statement: Select[*tuple[Any, ...]], id_column: Any, params: PageParams
) -> tuple[list[Row[*tuple[Any, ...]]], str | None]:
    """The rows of one page (ordered by `id_column`) and the cursor of the next, if any."""
    if params.after is not None:
        statement = statement.where(id_column > params.after)
    result = await session.execute(statement.order_by(id_column).limit(params.limit + 1))
    rows = list(result.all())
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    return rows, encode_cursor(rows[-1].id)


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type="application/json",
    )
