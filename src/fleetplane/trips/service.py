"""Trip rules around the detector: each device's settings, its intervals as the API shows them,
and what the pipeline step keeps (the intervals it found and the detector's state)."""

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import DateTime, Row, Select, delete, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core import bulk
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks
from fleetplane.core.errors import not_found, validation_error
from fleetplane.core.events import EventHub, publish_each
from fleetplane.core.ids import id_at, looks_like_id
from fleetplane.core.timeutil import EARLIEST, utcnow
from fleetplane.devices import service as devices
from fleetplane.drivers import service as drivers
from fleetplane.geofences import service as geofences
from fleetplane.messages import columns as message_columns
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.steps import service as steps
from fleetplane.steps.contract import ANNOUNCE_WITHIN, StepDevice
from fleetplane.trips.detector import (
    Detection,
    DetectorSettings,
    DetectorState,
    Interval,
    Kind,
    Method,
    checkpoint_json,
    fix_mask,
    resume_point,
)
from fleetplane.trips.models import TripDetectorState, TripInterval, TripSettings
from fleetplane.trips.schemas import TripSettingsBody

STEP_NAME = "trips"  # stable: the step's progress is stored under it
# The kind of change notice of trips that started or ended (values: `_trip_event_values`),
# which the server turns into live events.
TRIP_EVENT_CHANGE = "trip_event"
DEVICES_PER_QUERY = 1000
ID_PREFIX = "ivl"
_KIND_CODES = {Kind.TRIP.value: 0, Kind.PARKING.value: 1, Kind.STOP.value: 2}
_MICROSECOND = timedelta(microseconds=1)
# The sensor each method reads, by the sensor's type.
METHOD_SENSORS = {Method.IGNITION: SensorType.IGNITION, Method.MILEAGE: SensorType.MILEAGE}
_SETTINGS_FIELDS = tuple(TripSettingsBody.model_fields)


# --- settings -------------------------------------------------------------------------------


async def settings_out(
    session: AsyncSession, provider_id: str, customer_id: str, device_id: str
) -> dict[str, Any]:
    device = await devices.get_for_customer(session, provider_id, customer_id, device_id)
    row = await session.get(TripSettings, device.id)
    if row is None:
        values = TripSettingsBody().model_dump()
        return {"device_id": device.id, **values, "updated_at": None}
    return {
        "device_id": device.id,
        **{name: getattr(row, name) for name in _SETTINGS_FIELDS},
        "updated_at": row.updated_at,
    }


async def put_settings(
    session: AsyncSession, actor: Actor, customer_id: str, device_id: str, body: TripSettingsBody
) -> dict[str, Any]:
    """Replaces the device's settings and has its intervals detected again, from its first
    message, with them (the step is told as it is told of late data)."""
    device = await devices.get_for_customer(session, actor.provider_id, customer_id, device_id)
    await _require_method_sensor(session, actor.provider_id, device.id, body.method)
    values = body.model_dump(mode="json")
    row = await session.get(TripSettings, device.id)
    if row is None:
        row = TripSettings(device_id=device.id)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    await audit.record(
        session, actor, "trips.settings.update", "device", device.id, values, customer_id
    )
    await session.flush()
    step_device = StepDevice(device.id, device.seq, device.provider_id, device.customer_id)
    await steps.rewind_step(session, STEP_NAME, step_device, EARLIEST)
    return await settings_out(session, actor.provider_id, customer_id, device.id)


async def _require_method_sensor(
    session: AsyncSession, provider_id: str, device_id: str, method: Method
) -> None:
    wanted = METHOD_SENSORS.get(method)
    if wanted is None:
        return
    found = await sensors.values_for_devices(session, provider_id, [device_id])
    if not any(sensor.type == wanted for sensor in found[device_id]):
        raise validation_error(
            ["body", "method"],
            f"The {method.value} method needs a {wanted.value} sensor on the device; "
            "add one first (POST /api/sensors).",
        )


# --- intervals as the API shows them --------------------------------------------------------


def intervals_query(
    provider_id: str,
    customer_id: str,
    *,
    device_ids: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    kind: Kind | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's devices' intervals that overlap [since, until) (an open one goes on to
    now), each only when it began in the window of its device's history the customer sees."""
    windows = devices.history_windows_query(provider_id, customer_id).subquery()
    statement: Select[*tuple[Any, ...]] = (
        select(*_INTERVAL_COLUMNS)
        .join(windows, windows.c.device_id == TripInterval.device_id)
        .where(or_(windows.c.since.is_(None), TripInterval.start_time >= windows.c.since))
    )
    if device_ids:
        statement = statement.where(TripInterval.device_id.in_(device_ids))
    if kind is not None:
        statement = statement.where(TripInterval.kind == kind.value)
    if until is not None:
        statement = statement.where(TripInterval.start_time < until)
    if since is not None:
        statement = statement.where(or_(TripInterval.end_time > since, TripInterval.open))
    return statement


@dataclass(frozen=True, slots=True)
class IntervalColumns:
    """A device's intervals of one kind as numpy columns, in start order: what reports sum up
    per period. Times are epoch microseconds (`messages.columns`); an open interval ends at its
    last message so far."""

    start_us: npt.NDArray[np.int64]
    end_us: npt.NDArray[np.int64]
    distance_m: npt.NDArray[np.float64]
    max_speed: npt.NDArray[np.float64]  # km/h, NaN where no message had a speed
    open: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.start_us)


async def interval_columns(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    device_ids: Sequence[str],
    *,
    since: datetime,
    until: datetime,
    kind: str,
) -> dict[str, IntervalColumns]:
    """The intervals of `kind` (`trip`, `parking` or `stop`) of each of these devices of the
    customer: exactly those the intervals list returns for [since, until) (`intervals_query`),
    each device's as columns (empty ones for a device without any)."""
    found = {device_id: _EMPTY_COLUMNS for device_id in device_ids}
    connection = await session.connection()
    for chunk in id_chunks(list(found), DEVICES_PER_QUERY):
        statement = (
            intervals_query(
                provider_id, customer_id, device_ids=chunk, since=since, until=until,
                kind=Kind(kind),
            )
            .with_only_columns(*_COLUMNS_READ)
            .order_by(TripInterval.device_id, TripInterval.start_time)
        )  # fmt: skip
        rows = (await connection.execute(statement)).all()
        for device_id, device_rows in groupby(rows, key=itemgetter(0)):
            found[device_id] = _as_columns(list(device_rows))
    return found


# What reports read of an interval: a fleet's month is hundreds of thousands of rows, so
# only these, and the times as the driver gives them (SQLite: naive, in UTC), not through
# `UTCDateTime` and the ORM, which cost more per row than the rest (`messages.stored_rows`).
_COLUMNS_READ = (
    TripInterval.device_id,
    type_coerce(TripInterval.start_time, DateTime(timezone=True)),
    type_coerce(TripInterval.end_time, DateTime(timezone=True)),
    TripInterval.distance_m,
    TripInterval.max_speed,
    TripInterval.open,
)


def _as_columns(rows: Sequence[Sequence[Any]]) -> IntervalColumns:
    """Columns of rows of `_COLUMNS_READ` (a missing `max_speed` becomes NaN)."""
    _, start, end, distance, max_speed, open_ = zip(*rows, strict=True)
    return IntervalColumns(
        start_us=message_columns.stored_times_us(start),
        end_us=message_columns.stored_times_us(end),
        distance_m=np.array(distance, dtype=np.float64),
        max_speed=np.array(max_speed, dtype=np.float64),  # None: NaN
        open=np.array(open_, dtype=np.bool_),
    )


_EMPTY_COLUMNS = IntervalColumns(
    start_us=np.zeros(0, dtype=np.int64),
    end_us=np.zeros(0, dtype=np.int64),
    distance_m=np.zeros(0, dtype=np.float64),
    max_speed=np.zeros(0, dtype=np.float64),
    open=np.zeros(0, dtype=np.bool_),
)


_INTERVAL_COLUMNS = (
    TripInterval.id,
    TripInterval.device_id,
    TripInterval.kind,
    TripInterval.start_time,
    TripInterval.end_time,
    TripInterval.start_lat,
    TripInterval.start_lon,
    TripInterval.end_lat,
    TripInterval.end_lon,
    TripInterval.distance_m,
    TripInterval.max_speed,
    TripInterval.avg_speed,
    TripInterval.odometer_start_m,
    TripInterval.odometer_end_m,
    TripInterval.open,
)


async def shape_intervals(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    rows: Sequence[Row[Any]],
    since: datetime | None,
    until: datetime | None,
) -> list[dict[str, Any]]:
    """Rows of `intervals_query` as the API, the event stream and exports show an interval,
    the one place that shapes them: what other domains add is asked for the whole page at
    once (one query for the drivers, one for the address geofences); `clipped` when [since,
    until) cuts it."""
    drivers_ = await interval_drivers(session, customer_id, rows)
    places = await interval_geofences(session, provider_id, customer_id, rows)
    return [
        _shaped(row, drivers_.get(row.id, _NO_DRIVER), places[row.id], since, until) for row in rows
    ]


def _shaped(
    row: Row[Any],
    driver: tuple[str | None, str | None],
    geofences_: tuple[str | None, str | None],
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    clipped = (since is not None and row.start_time < since) or (
        until is not None and row.end_time > until
    )
    geofence_start, geofence_end = geofences_
    return {
        "id": row.id,
        "device_id": row.device_id,
        "kind": row.kind,
        "start": {"time": row.start_time, "lat": row.start_lat, "lon": row.start_lon},
        "end": {"time": row.end_time, "lat": row.end_lat, "lon": row.end_lon},
        "duration_s": (row.end_time - row.start_time).total_seconds(),
        "distance_m": row.distance_m,
        "max_speed": row.max_speed,
        "avg_speed": row.avg_speed,
        "odometer_start_m": row.odometer_start_m,
        "odometer_end_m": row.odometer_end_m,
        "driver_id": driver[0],
        "driver_name": driver[1],
        "geofence_start": geofence_start,
        "geofence_end": geofence_end,
        "open": row.open,
        "clipped": bool(clipped),
    }


# What other domains add to an interval, in one place each. The device's odometer is the
# device counters' at the start and end, which the trips step stores on the row
# (`trips.odometers`); the driver is asked of the drivers module per page, the names of the
# address geofences at the start and end of the geofences module.

_NO_DRIVER: tuple[str | None, str | None] = (None, None)


async def interval_drivers(
    session: AsyncSession, customer_id: str, rows: Sequence[Row[Any]]
) -> dict[str, tuple[str, str]]:
    """(driver_id, driver_name) by interval id: the customer's driver assigned to the device
    at the interval's start (a key reading or a manual assignment), for those that had one."""
    pairs = [(row.device_id, row.start_time) for row in rows]
    found = await drivers.drivers_at(session, customer_id, pairs)
    return {
        row.id: (driver.driver_id, driver.driver_name)
        for row in rows
        if (driver := found.get((row.device_id, row.start_time))) is not None
    }


async def interval_geofences(
    session: AsyncSession, provider_id: str, customer_id: str, rows: Sequence[Row[Any]]
) -> dict[str, tuple[str | None, str | None]]:
    """By interval id, the names of the customer's address geofences at its start and end:
    one question to the geofences module for the whole page."""
    points = []
    for row in rows:
        points += [(row.start_lat, row.start_lon), (row.end_lat, row.end_lon)]
    names = await geofences.address_names_at(session, provider_id, customer_id, points)
    return {row.id: (names[2 * i], names[2 * i + 1]) for i, row in enumerate(rows)}


async def track(
    session: AsyncSession, provider_id: str, customer_id: str, interval_id: str
) -> dict[str, Any]:
    """The interval's points as a GeoJSON Feature: a LineString of the fixes detection used
    between its start and end, their times in `properties.times`."""
    row = None
    if looks_like_id(interval_id):
        statement = intervals_query(provider_id, customer_id).where(TripInterval.id == interval_id)
        row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise not_found("interval")
    settings = (await detector_settings(session, [row.device_id]))[row.device_id]
    seq = (await devices.seqs_of(session, [row.device_id]))[row.device_id]
    found = await message_columns.read(
        session, seq, after=row.start_time - _MICROSECOND, until=row.end_time
    )
    used = fix_mask(found, settings)
    times = [message_columns.time_of(int(us)) for us in found.time_us[used].tolist()]
    coordinates = [
        [lon, lat]
        for lon, lat in zip(found.lon[used].tolist(), found.lat[used].tolist(), strict=True)
    ]
    geometry = {"type": "LineString", "coordinates": coordinates} if len(times) > 1 else None
    properties = {"interval_id": row.id, "device_id": row.device_id, "kind": row.kind}
    return {"type": "Feature", "geometry": geometry, "properties": {**properties, "times": times}}


# --- what the pipeline step keeps -----------------------------------------------------------


async def detector_settings(
    session: AsyncSession, device_ids: Sequence[str]
) -> dict[str, DetectorSettings]:
    """Each device's settings (the defaults for a device without its own)."""
    found = {device_id: DetectorSettings() for device_id in device_ids}
    for chunk in id_chunks(list(found), DEVICES_PER_QUERY):
        statement = select(TripSettings).where(TripSettings.device_id.in_(chunk))
        for row in (await session.execute(statement)).scalars():
            values = {name: getattr(row, name) for name in _SETTINGS_FIELDS}
            found[row.device_id] = DetectorSettings(**{**values, "method": Method(row.method)})
    return found


async def detector_states(
    session: AsyncSession, device_ids: Sequence[str]
) -> dict[str, DetectorState | None]:
    found: dict[str, DetectorState | None] = dict.fromkeys(device_ids)
    for chunk in id_chunks(list(found), DEVICES_PER_QUERY):
        statement = select(TripDetectorState.device_id, TripDetectorState.state).where(
            TripDetectorState.device_id.in_(chunk)
        )
        for device_id, state in await session.execute(statement):
            found[device_id] = DetectorState.from_json(state)
    return found


async def method_sensors(
    session: AsyncSession,
    devices_: Sequence[StepDevice],
    settings: dict[str, DetectorSettings],
) -> dict[str, SensorDefinition]:
    """The sensor each device's method reads (its first of that type), for the devices whose
    method reads one."""
    by_provider: dict[str, list[str]] = {}
    for device in devices_:
        if settings[device.id].needs_sensor():
            by_provider.setdefault(device.provider_id, []).append(device.id)
    found: dict[str, SensorDefinition] = {}
    for provider_id, device_ids in by_provider.items():
        definitions = await sensors.values_for_devices(session, provider_id, device_ids)
        for device_id, listed in definitions.items():
            wanted = METHOD_SENSORS[settings[device_id].method]
            match = next((sensor for sensor in listed if sensor.type == wanted), None)
            if match is not None:
                found[device_id] = match
    return found


def interval_id(device: StepDevice, kind: str, start_us: int) -> str:
    """The id of a device's interval of a kind starting at a time: ids sort by start time."""
    return _interval_id(device.seq, kind, start_us)


@functools.lru_cache(maxsize=16_384)  # an open interval is written again every round
def _interval_id(seq: int, kind: str, start_us: int) -> str:
    millis, micros = divmod(start_us, 1000)
    return id_at(ID_PREFIX, millis, (seq << 32) | (_KIND_CODES[kind] << 16) | micros)


async def save_detections(
    session: AsyncSession,
    detections: Sequence[tuple[StepDevice, Detection]],
    odometers: Mapping[tuple[str, tuple[str, int]], tuple[float | None, float | None]],
) -> None:
    """Writes a round's intervals (each replacing its earlier self) with their odometers (by
    device and interval key, `odometers.interval_odometers`), deletes the open ones that are
    gone and keeps each device's state: a statement per table."""
    rows = [
        interval_row(device, i, odometers.get((device.id, i.key), _NO_ODOMETERS))
        for device, detection in detections
        for i in detection.intervals
    ]
    gone = [
        interval_id(device, kind, start)
        for device, detection in detections
        for kind, start in detection.gone
    ]
    connection = await session.connection()
    if gone:
        await session.execute(delete(TripInterval).where(TripInterval.id.in_(gone)))
    if rows:
        await bulk.write_rows(connection, TripInterval.__table__, rows, update_on=("id",))
    now = utcnow()
    states = [
        {"device_id": device.id, "state": detection.state.to_json(), "updated_at": now}
        for device, detection in detections
    ]
    if states:
        table = TripDetectorState.__table__
        await bulk.write_rows(connection, table, states, update_on=("device_id",))


_NO_ODOMETERS: tuple[float | None, float | None] = (None, None)


async def note_trip_events(
    session: AsyncSession,
    detections: Sequence[tuple[StepDevice, Detection]],
    newest: Mapping[str, datetime],
) -> None:
    """Raises the notice of the trips that started or ended in a round's detections, before
    they are written: a trip not stored before started, one stored open that is closed now
    ended. Those older than `ANNOUNCE_WITHIN` before the device's newest message (`newest`)
    are not announced (found again after late data, say)."""
    trips = [
        (device, interval, interval_id(device, Kind.TRIP.value, interval.start_us))
        for device, detection in detections
        if device.customer_id is not None
        for interval in detection.intervals
        if interval.kind == Kind.TRIP
    ]
    if not trips:
        return
    stored: dict[str, bool] = {}
    for chunk in id_chunks([id_ for _, _, id_ in trips], DEVICES_PER_QUERY):
        statement = select(TripInterval.id, TripInterval.open).where(TripInterval.id.in_(chunk))
        stored.update((row.id, row.open) for row in await session.execute(statement))
    values = []
    for device, interval, id_ in trips:
        since = message_columns.time_us(newest[device.id] - ANNOUNCE_WITHIN)
        was_open = stored.get(id_)
        if was_open is None and interval.start_us >= since:
            values.append(_trip_event_values("start", device, interval, id_))
        if not interval.open and was_open is not False and interval.end_us >= since:
            values.append(_trip_event_values("end", device, interval, id_))
    if values:
        ids = tuple(value["trip_id"] for value in values)
        devices_ = tuple(dict.fromkeys(value["device_id"] for value in values))
        note(session, Change(TRIP_EVENT_CHANGE, ids, None, None, devices_, tuple(values)))


def _trip_event_values(
    kind: str, device: StepDevice, interval: Interval, id_: str
) -> dict[str, Any]:
    start = kind == "start"
    values = {
        "kind": kind,
        "device_id": device.id,
        "provider_id": device.provider_id,
        "customer_id": device.customer_id,
        "trip_id": id_,
        "time": message_columns.time_of(interval.start_us if start else interval.end_us),
        "lat": interval.start_lat if start else interval.end_lat,
        "lon": interval.start_lon if start else interval.end_lon,
    }
    if not start:
        values |= {
            "start_time": message_columns.time_of(interval.start_us),
            "duration_s": interval.duration_s,
            "distance_m": interval.distance_m,
            "max_speed": interval.max_speed,
        }
    return values


def announce_trip_events(events: EventHub, change: Change) -> None:
    """Tells the live event streams of trips that started or ended (a committed `trip_event`
    notice): `trip_start` and `trip_end` events for the device's customer."""
    publish_each(events, change.values, "trip")


def interval_row(
    device: StepDevice,
    interval: Interval,
    odometers: tuple[float | None, float | None] = _NO_ODOMETERS,
) -> dict[str, Any]:
    kind, checkpoint = interval.kind.value, interval.checkpoint
    return {
        "id": interval_id(device, kind, interval.start_us),
        "device_id": device.id,
        "kind": kind,
        "start_time": message_columns.time_of(interval.start_us),
        "end_time": message_columns.time_of(interval.end_us),
        "start_lat": interval.start_lat,
        "start_lon": interval.start_lon,
        "end_lat": interval.end_lat,
        "end_lon": interval.end_lon,
        "distance_m": interval.distance_m,
        "max_speed": interval.max_speed,
        "avg_speed": interval.avg_speed,
        "open": interval.open,
        "odometer_start_m": odometers[0],
        "odometer_end_m": odometers[1],
        "resume_state": None if checkpoint is None else checkpoint_json(checkpoint),
    }


async def rewind(session: AsyncSession, device: StepDevice, from_time: datetime) -> datetime:
    """Late data from `from_time` on: deletes the intervals from the start of the latest trip
    before it on, puts back the detector's state at that start, and returns the time after
    which the messages are to be detected again (from the beginning when no trip began
    before it)."""
    statement = (
        select(TripInterval.start_time, TripInterval.resume_state)
        .where(
            TripInterval.device_id == device.id,
            TripInterval.kind == Kind.TRIP.value,
            TripInterval.start_time < from_time,
        )
        .order_by(TripInterval.start_time.desc())
        .limit(1)
    )
    found = (await session.execute(statement)).one_or_none()
    trips = []
    if found is not None:
        start_us = message_columns.time_us(found.start_time)
        trips.append((start_us, DetectorState.from_json(found.resume_state)))
    resume_us, state = resume_point(trips, message_columns.time_us(from_time))
    intervals = delete(TripInterval).where(TripInterval.device_id == device.id)
    if resume_us is None or state is None:
        await session.execute(intervals)
        await session.execute(
            delete(TripDetectorState).where(TripDetectorState.device_id == device.id)
        )
        return EARLIEST
    start = message_columns.time_of(resume_us)
    await session.execute(intervals.where(TripInterval.end_time >= start))
    row = {"device_id": device.id, "state": state.to_json(), "updated_at": utcnow()}
    table = TripDetectorState.__table__
    await bulk.write_rows(await session.connection(), table, [row], update_on=("device_id",))
    return start + _MICROSECOND
