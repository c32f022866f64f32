"""The customer-facing modules a provider can enable for a customer, as plain data.

The customers domain validates a customer's `modules` against these names, and each module's
router takes its name, title and description from here, so knowing which modules exist imports
no router. `registry.MODULES` binds each entry to its router, in the same order (a test checks
that they match).
"""

from fleetplane.core.modules import ModuleInfo

DEVICES = ModuleInfo(
    "devices",
    "Devices",
    "The customer's devices: what they are, where they are now, and what they reported.",
)

TRIPS = ModuleInfo(
    "trips",
    "Trips",
    "Trips, stops and parkings detected from each device's messages, and their tracks.",
)

DRIVERS = ModuleInfo(
    "drivers",
    "Drivers",
    "The customer's drivers, their key codes, and who drove which vehicle when: assigned "
    "by the trackers' key readers or by hand.",
)

GEOFENCES = ModuleInfo(
    "geofences",
    "Geofences",
    "The customer's geofences: circles, polygons and corridors, their groups, which of them "
    "hold a position, and import and export as GeoJSON.",
)

AUTOMATIONS = ModuleInfo(
    "automations",
    "Automations",
    "Rules that watch the customer's devices (geofences, speed, ignition, sensors, inputs, "
    "alarms, idling, connection) and act: signed webhooks, in-app notifications, device "
    "commands and e-mails; what fired, and how each delivery went.",
)

ANALYTICS = ModuleInfo(
    "analytics",
    "Analytics",
    "Reports over the customer's devices: engine hours, idling, speeding, fuel, as JSON, "
    "CSV, XLSX or a chart.",
)

MODULE_INFOS: tuple[ModuleInfo, ...] = (
    DEVICES,
    TRIPS,
    DRIVERS,
    GEOFENCES,
    AUTOMATIONS,
    ANALYTICS,
)


def module_names() -> set[str]:
    return {info.name for info in MODULE_INFOS}
