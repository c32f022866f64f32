"""Base classes for request and response bodies, and the validated types inputs share.

The types put every constraint they enforce in the OpenAPI documents too (lengths, patterns,
ranges), so a client (or a fuzzer) reading a document knows what is accepted."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from fleetplane.core.errors import validation_error
from fleetplane.core.timeutil import EARLIEST, LATEST, checked_utc


class RequestBody(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseBody(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Text of one line: no control characters. PostgreSQL cannot store NUL at all (SQLite would,
# and the two must agree), and no name, filter or id holds a tab or a line break.
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# The same with at least one character that is not a space: request bodies strip surrounding
# whitespace before they check lengths, so " " must not pass for a one-character name.
NON_BLANK_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"


def line_field(max_length: int, **field: Any) -> Any:
    """A field of one line of text, possibly empty, at most `max_length` characters."""
    return Field(max_length=max_length, pattern=LINE_PATTERN, **field)


def line_query(max_length: int, **query: Any) -> Any:
    """A query parameter of one line of text (a filter), at most `max_length` characters."""
    return Query(max_length=max_length, pattern=LINE_PATTERN, **query)


def name_field(max_length: int = 200, **field: Any) -> Any:
    """A field of one line of text with something in it, at most `max_length` characters."""
    return Field(min_length=1, max_length=max_length, pattern=NON_BLANK_LINE_PATTERN, **field)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# A time given by a client, held in UTC. Its UTC value must lie within years 1 to 9999 (what
# Python and both databases hold); the documents state the range as formatMinimum and
# formatMaximum. Without an offset, a time is UTC.
_IN_RANGE = (
    AfterValidator(checked_utc),
    Field(
        json_schema_extra={"formatMinimum": _rfc3339(EARLIEST), "formatMaximum": _rfc3339(LATEST)}
    ),
)
UtcDateTime = Annotated[datetime, *_IN_RANGE]
# The same, with the offset required.
AwareUtcDateTime = Annotated[AwareDatetime, *_IN_RANGE]


# Devices one list query may filter by (`device_id` repeated).
MAX_DEVICE_FILTERS = 1000
DeviceIdsQuery = Annotated[
    list[Annotated[str, Field(max_length=64, pattern=LINE_PATTERN)]] | None,
    Query(description="Repeat for several devices; none: all the customer's devices."),
]


def distinct_device_ids(given: list[str] | None) -> list[str]:
    """The devices a list query names (`DeviceIdsQuery`), each once, in the order given; a
    `422` on `device_id` beyond MAX_DEVICE_FILTERS."""
    device_ids = list(dict.fromkeys(given or ()))
    if len(device_ids) > MAX_DEVICE_FILTERS:
        raise validation_error(["query", "device_id"], f"At most {MAX_DEVICE_FILTERS} devices.")
    return device_ids
