"""The one table of reports. Adding a report is adding its `Report` here: a name, its
figures and one `compute` function (see `report.Compute`)."""

from fleetplane.analytics.fuel import FUEL
from fleetplane.analytics.message_reports import ENGINE_HOURS, IDLING, SPEEDING
from fleetplane.analytics.report import Report
from fleetplane.analytics.trip_reports import MILEAGE, PARKINGS, TRIPS, UTILIZATION

REPORTS: dict[str, Report] = {
    report.name: report
    for report in (
        MILEAGE,
        TRIPS,
        PARKINGS,
        ENGINE_HOURS,
        IDLING,
        SPEEDING,
        FUEL,
        UTILIZATION,
    )
}
