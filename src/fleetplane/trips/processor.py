"""The trips step of the telemetry pipeline: each device's new messages go through the trip
detector from the state the previous round left, and the round's intervals and states are
written together (a statement per table), with the step's progress marks."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages.columns import from_messages
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.trips import service
from fleetplane.trips.detector import DeviceInput, detect_all
from fleetplane.trips.odometers import OdometersAt, interval_odometers


class TripDetectorStep:
    name = service.STEP_NAME
    reads_filtered = False  # only the messages the device's validity filter kept

    def __init__(self, odometers_at: OdometersAt | None = None) -> None:
        # The device counters' odometer at given moments: another domain's step, so the
        # registry hands it in (`devices.counters.odometers_at`); without it, null odometers.
        self.odometers_at = odometers_at

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        device_ids = [batch.device.id for batch in batches]
        settings = await service.detector_settings(session, device_ids)
        states = await service.detector_states(session, device_ids)
        sensors = await service.method_sensors(
            session, [batch.device for batch in batches], settings
        )
        inputs = []
        for batch in batches:
            sensor = sensors.get(batch.device.id)
            params = () if sensor is None else (sensor.parameter,)
            columns = from_messages(batch.messages, params)
            state = states[batch.device.id]
            inputs.append(DeviceInput(columns, settings[batch.device.id], state, sensor))
        # The whole round at once: numpy's cost per call is paid once, not once per device.
        found = detect_all(inputs)
        detections = [(batch.device, answer) for batch, answer in zip(batches, found, strict=True)]
        odometers = {}
        if self.odometers_at is not None:
            odometers = await interval_odometers(session, self.odometers_at, batches, found)
        await service.save_detections(session, detections, odometers)

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        return await service.rewind(session, device, from_time)
