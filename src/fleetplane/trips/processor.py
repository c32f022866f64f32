"""The trips step of the telemetry pipeline: each device's new messages go through the trip
detector from the state the previous round left, and the round's intervals and states are
written together (a statement per table), with the step's progress marks."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.messages.columns import from_messages
from fleetplane.steps.contract import DeviceMessages, StepDevice, in_slices
from fleetplane.trips import service
from fleetplane.trips.detector import DetectorSettings, DetectorState, DeviceInput, detect_all
from fleetplane.trips.odometers import OdometersAt, interval_odometers


class TripDetectorStep:
    name = service.STEP_NAME
    reads_filtered = False  # only the messages the device's validity filter kept

    def __init__(self, odometers_at: OdometersAt | None = None) -> None:
        # The device counters' odometer at given moments: another domain's step, so the
        # registry hands it in (`devices.counters.odometers_at`); without it, null odometers.
        self.odometers_at = odometers_at
        # Each device's settings and detector state after its last round here, trusted for
        # the devices that follow on (a settings change comes with a rewind, which they do
        # not): neither is read and parsed again every round.
        self._kept: dict[str, tuple[DetectorSettings, DetectorState | None]] = {}

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        kept = self._kept
        settings: dict[str, DetectorSettings] = {}
        states: dict[str, DetectorState | None] = {}
        unknown = []
        for batch in batches:
            device_id = batch.device.id
            if batch.follows_on and device_id in kept:
                settings[device_id], states[device_id] = kept[device_id]
            else:
                unknown.append(device_id)
        if unknown:
            settings.update(await service.detector_settings(session, unknown))
            states.update(await service.detector_states(session, unknown))
        sensors = await service.method_sensors(
            session, [batch.device for batch in batches], settings
        )
        detections, found = [], []
        async for part in in_slices(batches):
            # The slice's messages as columns in one go, each device's a view of them.
            params = sorted({s.parameter for b in part if (s := sensors.get(b.device.id))})
            together = from_messages([m for batch in part for m in batch.messages], params)
            inputs, first = [], 0
            for batch in part:
                last = first + len(batch.messages)
                device_id = batch.device.id
                columns = together.rows(first, last)
                state, sensor = states[device_id], sensors.get(device_id)
                inputs.append(DeviceInput(columns, settings[device_id], state, sensor))
                first = last
            # Many devices at once: numpy's cost per call is paid once, not once per device.
            answers = detect_all(inputs)
            found += answers
            detections += [(b.device, answer) for b, answer in zip(part, answers, strict=True)]
        for device, detection in detections:
            kept[device.id] = (settings[device.id], detection.state)
        odometers = {}
        if self.odometers_at is not None:
            odometers = await interval_odometers(session, self.odometers_at, batches, found)
        newest = {batch.device.id: batch.messages[-1].device_time for batch in batches}
        await service.note_trip_events(session, detections, newest)
        await service.save_detections(session, detections, odometers)

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        self._kept.pop(device.id, None)
        return await service.rewind(session, device, from_time)
