"""The one list of routers, modules and pipeline steps. Adding a module is adding its folder,
its entry in `module_catalog` and its lines here."""

from fastapi import APIRouter

from fleetplane.analytics import module as analytics_module
from fleetplane.api_keys import studio as api_keys_studio
from fleetplane.audit import studio as audit_studio
from fleetplane.automations import module as automations_module
from fleetplane.automations import processor as automations_processor
from fleetplane.channels import studio as channels_studio
from fleetplane.core.modules import Module
from fleetplane.customers import studio as customers_studio
from fleetplane.devices import counters as device_counters
from fleetplane.devices import module as devices_module
from fleetplane.devices import studio as devices_studio
from fleetplane.drivers import module as drivers_module
from fleetplane.drivers import processor as drivers_processor
from fleetplane.geofences import module as geofences_module
from fleetplane.geofences import processor as geofences_processor
from fleetplane.geofences import service as geofences_service
from fleetplane.messages.retention import Purge
from fleetplane.notifications import service as notifications_service
from fleetplane.sensors import studio as sensors_studio
from fleetplane.steps import studio as steps_studio
from fleetplane.steps.contract import Step
from fleetplane.trips import module as trips_module
from fleetplane.trips import processor as trips_processor

STUDIO_ROUTERS: list[APIRouter] = [
    customers_studio.router,
    api_keys_studio.router,
    channels_studio.router,
    devices_studio.router,
    sensors_studio.router,
    audit_studio.router,
    steps_studio.router,
]

MODULES: list[Module] = [
    devices_module.module,
    trips_module.module,
    drivers_module.module,
    geofences_module.module,
    automations_module.module,
    analytics_module.module,
]


# What is derived from stored messages, after their devices were answered (steps.contract),
# in the order the steps run.
_counters = device_counters.DeviceCountersStep()
STEPS: list[Step] = [
    _counters,
    drivers_processor.step,
    # Intervals carry the counters' odometer at their start and end (after the counters step).
    trips_processor.TripDetectorStep(odometers_at=_counters.odometers_at),
    geofences_processor.VisitsStep(),
    # Rules over the messages and what the steps before derived (geofence visits).
    automations_processor.AutomationsStep(),
]

# What the domains derived from messages, purged by the customer's retention with them.
RETENTION: list[Purge] = [
    notifications_service.purge_before,
    geofences_service.purge_visits_before,
]
