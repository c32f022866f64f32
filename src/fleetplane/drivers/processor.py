"""The drivers' pipeline step: assignments from the devices' key readers.

A round costs at most three reads, whatever its size: the devices' `driver_key` sensors, the
key codes the round's readings name (of the devices' customers), and the devices' ongoing
assignments; then one statement per kind of write (ends of stored assignments, new ones).
Only changes of the reading make work; the messages themselves are the ones the runner hands
over. The rules are `drivers.timeline`'s, the state is the assignments themselves (the
ongoing key assignment of a device is its reading's state), so a rewind is a few statements
on the assignments and nothing else.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.ids import new_id
from fleetplane.drivers import service
from fleetplane.drivers.timeline import NoReading, key_reading
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.steps.contract import DeviceMessages, StepDevice


def _assignment_id() -> str:
    return new_id("dra")


class DriverKeyStep:
    name = "drivers"
    # A message the device's validity filter dropped is ignored for keys too, as by every
    # derived figure.
    reads_filtered = False

    def __init__(self) -> None:
        # Devices with no key assignment going on after their last round here: for those that
        # follow on, a round of empty readers changes nothing and costs no read.
        self._unassigned: set[str] = set()

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        device_ids = [batch.device.id for batch in batches]
        key_sensors = await sensors.first_sensors_of_type(
            session, device_ids, SensorType.DRIVER_KEY
        )
        readings: dict[str, list[tuple[datetime, str | None]]] = {}
        devices: dict[str, StepDevice] = {}
        for batch in batches:
            changes = _reading_changes(batch, key_sensors.get(batch.device.id))
            if not changes or _changes_nothing(batch, changes, self._unassigned):
                continue
            readings[batch.device.id] = changes
            devices[batch.device.id] = batch.device
        if not readings:
            return
        # A device of no customer has no drivers: its readings only end what was going on.
        wanted = {
            (customer_id, code)
            for device_id, changes in readings.items()
            if (customer_id := devices[device_id].customer_id) is not None
            for _, code in changes
            if code is not None
        }
        drivers = await service.drivers_by_code(session, wanted)
        first_times = {device_id: changes[0][0] for device_id, changes in readings.items()}
        customers = {device_id: device.customer_id for device_id, device in devices.items()}
        timelines = await service.timelines_of(session, first_times, customers)
        for device_id, changes in readings.items():
            customer_id = devices[device_id].customer_id
            timeline = timelines[device_id]
            for at, code in changes:
                driver = None
                if code is not None and customer_id is not None:
                    driver = drivers.get((customer_id, code))
                timeline.read(at, driver, _assignment_id)
            if timeline.current is None:
                self._unassigned.add(device_id)
            else:
                self._unassigned.discard(device_id)
        providers = {device_id: device.provider_id for device_id, device in devices.items()}
        await service.save_timelines(session, providers, timelines.values())

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        self._unassigned.discard(device.id)
        await service.rewind(session, device.id, from_time)
        return from_time


def _changes_nothing(
    batch: DeviceMessages, changes: list[tuple[datetime, str | None]], unassigned: set[str]
) -> bool:
    """Empty readers on a device with no key assignment going on (as this process left it)."""
    return (
        batch.follows_on
        and batch.device.id in unassigned
        and all(code is None for _, code in changes)
    )


def _reading_changes(
    batch: DeviceMessages, sensor: SensorDefinition | None
) -> list[tuple[datetime, str | None]]:
    """The device's readings in the batch where they differ from the one before (the first
    always counts: the state before it is the database's)."""
    changes: list[tuple[datetime, str | None]] = []
    for message in batch.messages:
        reading = key_reading(message, sensor)
        if isinstance(reading, NoReading):
            continue
        if not changes or changes[-1][1] != reading:
            changes.append((message.device_time, reading))
    return changes


step = DriverKeyStep()
