"""A report's range split into periods (days, weeks, months) of the customer's time zone.

Boundaries are local midnights turned into UTC instants, so a day of a daylight-saving change
lasts 23 or 25 hours and a month is a calendar month. Everything else in a report works on
UTC microseconds (`messages.columns` time) and only asks which period an instant falls in.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from fleetplane.messages.columns import time_us


class GroupBy(StrEnum):
    NONE = "none"
    DAY = "day"
    WEEK = "week"  # Monday to Sunday, as ISO 8601 weeks
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # UTC, inclusive; the range's `from` for the first period
    end: datetime  # UTC, exclusive; the range's `to` for the last period
    label: str | None  # the local day, week or month ("2026-11-03", "2026-W45", "2026-11")


@dataclass(frozen=True, slots=True)
class Periods:
    """The range [start, end) of a report split by `group_by` in `timezone`."""

    start: datetime
    end: datetime
    group_by: GroupBy
    timezone: str
    items: tuple[Period, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def boundaries_us(self) -> npt.NDArray[np.int64]:
        """The start of every period and the end of the last, as epoch microseconds."""
        instants = [period.start for period in self.items] + [self.end]
        return np.array([time_us(instant) for instant in instants], dtype=np.int64)

    def index_of(self, instants_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The period each instant falls in; -1 outside the range. An instant on a boundary
        belongs to the period it starts."""
        boundaries = self.boundaries_us
        index = np.searchsorted(boundaries, instants_us, side="right") - 1
        index[(instants_us < boundaries[0]) | (instants_us >= boundaries[-1])] = -1
        return index.astype(np.int64)


def split(start: datetime, end: datetime, group_by: GroupBy, timezone: str) -> Periods:
    """[start, end) (UTC, start < end) cut at the local starts of days, weeks or months."""
    zone = ZoneInfo(timezone)
    if group_by == GroupBy.NONE:
        return Periods(start, end, group_by, timezone, (Period(start, end, None),))
    items: list[Period] = []
    local_day = _period_start(start.astimezone(zone).date(), group_by)
    while True:
        following = _next_start(local_day, group_by)
        period_start = max(start, _local_midnight(local_day, zone))
        period_end = min(end, _local_midnight(following, zone))
        if period_start < period_end:
            items.append(Period(period_start, period_end, _label(local_day, group_by)))
        if period_end >= end:
            return Periods(start, end, group_by, timezone, tuple(items))
        local_day = following


def count(start: datetime, end: datetime, group_by: GroupBy, timezone: str) -> int:
    """How many periods `split` would give, without making them."""
    if group_by == GroupBy.NONE:
        return 1
    zone = ZoneInfo(timezone)
    first = _period_start(start.astimezone(zone).date(), group_by)
    last = _period_start((end - timedelta(microseconds=1)).astimezone(zone).date(), group_by)
    if group_by == GroupBy.DAY:
        return (last - first).days + 1
    if group_by == GroupBy.WEEK:
        return (last - first).days // 7 + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _period_start(day: date, group_by: GroupBy) -> date:
    if group_by == GroupBy.WEEK:
        return day - timedelta(days=day.weekday())
    if group_by == GroupBy.MONTH:
        return day.replace(day=1)
    return day


def _next_start(day: date, group_by: GroupBy) -> date:
    if group_by == GroupBy.DAY:
        return day + timedelta(days=1)
    if group_by == GroupBy.WEEK:
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    # Where midnight does not exist (a daylight-saving jump at 00:00), zoneinfo gives the
    # instant the clocks jumped at: still the day's first instant.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _label(day: date, group_by: GroupBy) -> str:
    if group_by == GroupBy.WEEK:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if group_by == GroupBy.MONTH:
        return f"{day:%Y-%m}"
    return day.isoformat()
