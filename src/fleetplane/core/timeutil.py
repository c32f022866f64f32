"""Times are aware datetimes in UTC everywhere inside the platform."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive values (SQLite hands them back that way) are UTC by our own convention."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
OUT_OF_RANGE = "out of range: the time in UTC must be between year 1 and year 9999"


def checked_utc(value: datetime) -> datetime:
    """`value` in UTC, for a time given from outside. A time near either end of the calendar
    with an offset (`9999-12-31T23:59:59-14:00`) has no UTC value: ValueError, which callers
    answer as bad input."""
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError(OUT_OF_RANGE) from None
