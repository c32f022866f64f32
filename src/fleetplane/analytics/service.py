"""Running a report for a customer: the checks of the request, the customer's devices and
time zone, the report's `compute`, and the shaped answer."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.analytics import periods as periods_of
from fleetplane.analytics.periods import GroupBy
from fleetplane.analytics.report import (
    ReportCustomer,
    ReportDevice,
    ReportParameters,
    ShapedReport,
    shape,
)
from fleetplane.analytics.reports import REPORTS
from fleetplane.core.errors import validation_error
from fleetplane.customers import service as customers
from fleetplane.devices import service as devices

MAX_RANGE = timedelta(days=366)
# Device-periods in one answer: a year by day for 130 devices. More is a narrower question.
MAX_ROWS = 50_000
# Reports cover the years a fleet can have data for, with room for any time zone around them.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


async def run(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    report_name: str,
    *,
    device_ids: Sequence[str] | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    parameters: ReportParameters,
) -> ShapedReport:
    report = REPORTS.get(report_name)
    if report is None:
        names = ", ".join(REPORTS)
        raise validation_error(["path", "report"], f"No report {report_name!r}; one of {names}.")
    _check_range(start, end)
    customer = await customers.get(session, provider_id, customer_id)
    windows = await devices.history_windows(session, provider_id, customer_id, device_ids)
    period_count = periods_of.count(start, end, group_by, customer.timezone)
    if period_count * len(windows) > MAX_ROWS:
        raise validation_error(
            ["query", "group_by"],
            f"{len(windows)} devices x {period_count} periods is more than {MAX_ROWS} rows: "
            "group by a longer period, name fewer devices or ask for a shorter range.",
        )
    periods = periods_of.split(start, end, group_by, customer.timezone)
    report_devices = [
        ReportDevice(w.device.id, w.device.name, w.device.seq, w.since) for w in windows
    ]
    rows = await report.compute(
        session,
        ReportCustomer(customer.id, provider_id, customer.timezone),
        report_devices,
        periods,
        parameters,
    )
    return shape(report, periods, parameters, report_devices, rows)


def _check_range(start: datetime, end: datetime) -> None:
    if start < EARLIEST:
        raise validation_error(["query", "from"], f"from must not be before {EARLIEST:%Y}.")
    if end > LATEST:
        raise validation_error(["query", "to"], f"to must not be after {LATEST:%Y}.")
    if start >= end:
        raise validation_error(["query", "from"], "from must be before to.")
    if end - start > MAX_RANGE:
        raise validation_error(["query", "to"], f"The range is longer than {MAX_RANGE.days} days.")
