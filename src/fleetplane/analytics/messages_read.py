"""A device's messages for a report, as columns, and the rows made from what is computed on
them: the part every report on messages shares (`on_messages` makes such a report's
`compute` from its computation over one device's columns).

The read reaches `MAX_GAP_SECONDS` beyond both ends of the range (never before the customer's
history of the device): the span from the last message before `from` reaches into the range,
and the span after the last message in it ends at the next one. The pure computation over
the columns runs in a worker thread, so a long range does not hold up the event loop.
"""

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from datetime import timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from fleetplane.analytics.periods import Periods
from fleetplane.analytics.report import (
    Compute,
    PeriodFigures,
    ReportCustomer,
    ReportDevice,
    ReportParameters,
    ReportRow,
    period_rows,
)
from fleetplane.analytics.spans import MAX_GAP_US
from fleetplane.messages import columns as message_columns
from fleetplane.messages.columns import Columns
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType, compute_values

FloatArray = npt.NDArray[np.float64]
DeviceComputation = Callable[
    [Columns, SensorDefinition | None, Periods, ReportParameters], PeriodFigures
]

_MARGIN = timedelta(microseconds=MAX_GAP_US)
_JUST_BEFORE = timedelta(microseconds=1)


def on_messages(compute: DeviceComputation, *, sensor_type: SensorType | None) -> Compute:
    """A report's `compute`: `compute` over each device's valid messages (`rows_per_device`)."""

    async def report_compute(
        session: AsyncSession,
        customer: ReportCustomer,
        devices: Sequence[ReportDevice],
        periods: Periods,
        parameters: ReportParameters,
    ) -> list[ReportRow]:
        return await rows_per_device(
            session, customer, devices, periods, parameters, sensor_type, compute
        )

    return report_compute


async def rows_per_device(
    session: AsyncSession,
    customer: ReportCustomer,
    devices: Sequence[ReportDevice],
    periods: Periods,
    parameters: ReportParameters,
    sensor_type: SensorType | None,
    compute: DeviceComputation,
) -> list[ReportRow]:
    """A row per device and period, from `compute` over each device's valid messages. With a
    `sensor_type`, `compute` gets the device's first sensor of that type, and a device without
    one has rows of nulls (there is nothing to compute its figures from)."""
    definitions = await sensors.values_for_devices(
        session, customer.provider_id, [device.id for device in devices]
    )
    rows: list[ReportRow] = []
    for device in devices:
        sensor = None
        if sensor_type is not None:
            sensor = next((s for s in definitions[device.id] if s.type == sensor_type), None)
            if sensor is None:
                rows += [ReportRow(device, index, {}) for index in range(len(periods))]
                continue
        params = () if sensor is None else (sensor.parameter,)
        columns = await read_valid(session, device, periods, params)
        figures = await run_in_threadpool(compute, columns, sensor, periods, parameters)
        rows += period_rows(device, periods, figures)
    return rows


async def read_valid(
    session: AsyncSession, device: ReportDevice, periods: Periods, params: Sequence[str]
) -> Columns:
    """The device's messages the validity filter kept, from `MAX_GAP_SECONDS` before the
    range (or the start of the customer's history of it) to as long after it."""
    after = periods.start - _MARGIN
    if device.history_from is not None:
        after = max(after, device.history_from - _JUST_BEFORE)
    columns = await message_columns.read(
        session, device.seq, after=after, until=periods.end + _MARGIN, params=params
    )
    return only(columns, ~columns.filtered)


def only(columns: Columns, keep: npt.NDArray[np.bool_]) -> Columns:
    """The messages where `keep` is true."""
    if keep.all():
        return columns
    changes = {
        f.name: getattr(columns, f.name)[keep] for f in fields(columns) if f.name != "params"
    }
    params = {name: values[keep] for name, values in columns.params.items()}
    return replace(columns, **changes, params=params)


def sensor_values(columns: Columns, sensor: SensorDefinition) -> FloatArray:
    """The sensor's value in each message (NaN where it has none)."""
    raw = columns.params.get(sensor.parameter)
    if raw is None:
        raw = np.full(len(columns), np.nan)
    return compute_values(sensor, raw, columns.inputs, columns.outputs)


def carried_forward(values: FloatArray, initial: float) -> FloatArray:
    """Each NaN replaced by the last known value before it (`initial` before the first): a
    state (ignition, speed) lasts until a message says otherwise."""
    known = ~np.isnan(values)
    last_known = np.maximum.accumulate(np.where(known, np.arange(len(values)), -1))
    return np.where(last_known >= 0, values[np.maximum(last_known, 0)], initial)
