"""The one table of reports. Adding a report is adding its `Report` here: a name, its
figures and one `compute` function (see `report.Compute`)."""

from fleetplane.analytics.fuel import FUEL
from fleetplane.analytics.message_reports import ENGINE_HOURS, IDLING, SPEEDING
from fleetplane.analytics.report import Report

# Reports on the trips module's intervals. That module is not part of this server yet: each
# answers that it needs it, and becomes a `compute` over the intervals when it is.
_NEEDS_TRIPS = (
    "The {name} report is computed from the trips module's intervals (trips and parkings), "
    "which this server does not provide yet."
)


def _on_trips(name: str, title: str, description: str) -> Report:
    return Report(name, title, description, unavailable=_NEEDS_TRIPS.format(name=name))


MILEAGE = _on_trips("mileage", "Mileage", "Distance driven in trips.")
TRIPS = _on_trips("trips", "Trips", "Trips: how many, how long, how far.")
PARKINGS = _on_trips("parkings", "Parkings", "Parkings: how many and how long.")
UTILIZATION = _on_trips(
    "utilization", "Utilization", "The share of the time each device was in trips."
)

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
