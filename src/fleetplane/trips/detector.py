"""Trips, stops and parkings from a device's messages: one pure function, `detect`, for the live
path (a pipeline round's new messages, after the state the previous round left) and for the
re-computation (every stored message, from no state). Detection from a saved state plus more
messages equals detection from scratch over all of them; tests/trips/test_detector.py checks it
on random sequences cut at random points.

The rules (docs/decisions.md, "Trips"):

- **Points.** A valid message is a point when it has a position from at least
  `min_satellites` satellites (unknown satellites count as enough: OsmAnd sends none), and, for
  the mileage method, a mileage reading.
- **Segments** join successive points. A segment longer than `max_gap_s` is a gap. Otherwise it
  is moving when: (speed) either end's speed is at least `min_moving_speed`; (ignition) either
  end has the ignition on and that speed; (coordinates) the distance over the time is that
  speed; (mileage) the mileage increment over the time is. Else it is paused.
- **Runs** are maximal sequences of segments of one kind. A paused run between two moving runs
  that lasts less than `min_parking_s` (from its first point at rest to its last) is a
  **stop**; every other paused run, and every gap, breaks movement.
- **Trips**: each maximal sequence of moving runs and stops, from the point before it moved to
  the point where it came to rest, that lasts at least `min_trip_s` and covers at least
  `min_trip_m` (its moving segments' distance). Movement that does not is part of the parking.
- **Parkings** cover everything between trips, gaps included.
- A trip is **open** while the data ends inside it or in a pause shorter than `min_parking_s`
  after it (then that pause is an open stop); the parking after the last trip is open.

Exactness: distances are summed as whole millimetres and times are microseconds, so totals do
not depend on where the messages were cut into rounds.

The state (`DetectorState`, stored as JSON) holds the last point, and the unfinished tail in
summary: the open parking, the movement that may become a trip (with the stops it had while it
was too short to be one) and the pause after it. Each trip carries a checkpoint: the state just
after its first point, from which detection can start again (a rewind after late data).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetplane.core.geo import path_distances_m
from fleetplane.messages.columns import Columns
from fleetplane.sensors.calculation import SensorDefinition, compute_value

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MICROSECONDS = 1_000_000
_MM_PER_M = 1000
# A mileage sensor's value in metres per unit of its `unit`; kilometres when none is named.
MILEAGE_UNITS_M = {"m": 1.0, "km": 1000.0, "mi": 1609.344}
STATE_VERSION = 1


class Method(StrEnum):
    SPEED = "speed"
    COORDINATES = "coordinates"
    IGNITION = "ignition"
    MILEAGE = "mileage"


class Kind(StrEnum):
    TRIP = "trip"
    PARKING = "parking"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    method: Method = Method.SPEED
    min_moving_speed: float = 5.0  # km/h
    min_parking_s: int = 300
    min_trip_s: int = 60
    min_trip_m: float = 100.0
    min_satellites: int = 4
    max_gap_s: int = 3600

    def needs_sensor(self) -> bool:
        return self.method in (Method.IGNITION, Method.MILEAGE)


class _Run(IntEnum):
    """Kinds of run. BREAK is the open parking as the state holds it: already a break."""

    PAUSED = 0
    MOVING = 1
    GAP = 2
    BREAK = 3


# --- the state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    t: int  # device time, µs since the epoch
    lat: float
    lon: float
    moving: bool  # speed (and ignition) at this point say moving (speed, ignition methods)
    ignition: bool | None
    mileage: float | None  # the mileage sensor's reading, in metres


@dataclass(frozen=True, slots=True)
class Run:
    """A run of segments in summary: what the intervals made of it need."""

    kind: int
    t0: int
    t1: int
    lat0: float
    lon0: float
    lat1: float
    lon1: float
    moving_mm: int
    still_mm: int
    max_speed: float | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """Movement that is or may become a trip, in summary (a MOVING run), with the state at its
    start, and its stops while it is too short to be a trip (afterwards they are written)."""

    run: Run
    checkpoint: "DetectorState"
    stops: tuple[Run, ...] = ()


@dataclass(frozen=True, slots=True)
class DetectorState:
    last: Point | None = None
    ignition: bool | None = None  # the last ignition reading (ignition method)
    parking: Run | None = None  # the open parking so far (BREAK)
    candidate: Candidate | None = None
    pause: Run | None = None  # a pause after the candidate, shorter than a parking so far
    open: tuple[tuple[str, int], ...] = ()  # (kind, start µs) of the open intervals given

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last": None if self.last is None else list(_point_fields(self.last)),
            "ignition": self.ignition,
            "parking": _run_json(self.parking),
            "candidate": None
            if self.candidate is None
            else {
                "run": _run_json(self.candidate.run),
                "checkpoint": checkpoint_json(self.candidate.checkpoint),
                "stops": [_run_json(stop) for stop in self.candidate.stops],
            },
            "pause": _run_json(self.pause),
            "open": [list(key) for key in self.open],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "DetectorState | None":
        """The state `to_json` gave; None for none, or one of another format version (its
        device is then detected from scratch)."""
        if not data or data.get("version") != STATE_VERSION:
            return None
        candidate = data["candidate"]
        return cls(
            last=None if data["last"] is None else Point(*data["last"]),
            ignition=data["ignition"],
            parking=_run_of(data["parking"]),
            candidate=None
            if candidate is None
            else Candidate(
                _required(_run_of(candidate["run"])),
                cls.from_json(candidate["checkpoint"]) or cls(),
                tuple(_required(_run_of(stop)) for stop in candidate["stops"]),
            ),
            pause=_run_of(data["pause"]),
            open=tuple((kind, int(start)) for kind, start in data["open"]),
        )


def checkpoint_json(state: DetectorState) -> dict[str, Any]:
    """`state.to_json()` of a trip's checkpoint, made once per checkpoint: a trip's state and
    its row carry the same checkpoint every round while it goes on. The answer is shared:
    only read it."""
    kept = _CHECKPOINT_JSON.get(id(state))
    if kept is not None and kept[0] is state:
        return kept[1]
    if len(_CHECKPOINT_JSON) >= _CHECKPOINT_JSON_LIMIT:
        _CHECKPOINT_JSON.clear()
    data = state.to_json()
    _CHECKPOINT_JSON[id(state)] = (state, data)  # the state kept alive: its id stays its own
    return data


_CHECKPOINT_JSON: dict[int, tuple[DetectorState, dict[str, Any]]] = {}
_CHECKPOINT_JSON_LIMIT = 16_384


def _point_fields(point: Point) -> tuple[Any, ...]:
    return (point.t, point.lat, point.lon, point.moving, point.ignition, point.mileage)


def _run_json(run: Run | None) -> list[Any] | None:
    if run is None:
        return None
    return [
        run.kind, run.t0, run.t1, run.lat0, run.lon0, run.lat1, run.lon1,
        run.moving_mm, run.still_mm, run.max_speed,
    ]  # fmt: skip


def _run_of(data: list[Any] | None) -> Run | None:
    return None if data is None else Run(*data)


def _required(run: Run | None) -> Run:
    assert run is not None
    return run


# --- the answer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    kind: Kind
    start_us: int
    end_us: int
    start_lat: float
    start_lon: float
    end_lat: float
    end_lon: float
    distance_mm: int
    max_speed: float | None
    open: bool
    checkpoint: DetectorState | None = None  # trips: the state to start again from

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind.value, self.start_us)

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / _MICROSECONDS

    @property
    def distance_m(self) -> float:
        return self.distance_mm / _MM_PER_M

    @property
    def avg_speed(self) -> float:
        """km/h over the whole interval."""
        duration = self.duration_s
        return 0.0 if duration <= 0 else self.distance_m / duration * 3.6


@dataclass(frozen=True, slots=True)
class Detection:
    """What changed: intervals to write (each replaces one of the same kind and start), the
    open intervals given before that are gone, and the state to keep."""

    intervals: list[Interval]
    gone: list[tuple[str, int]]
    state: DetectorState


# --- detection ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """One device's next messages (`columns`, oldest first, newer than any `state` has seen),
    its settings, the state the earlier ones left (None: from scratch) and the ignition or
    mileage sensor its method reads, if it has one (`columns` must hold its parameter)."""

    columns: Columns
    settings: DetectorSettings
    state: DetectorState | None = None
    sensor: SensorDefinition | None = None


def detect(
    columns: Columns,
    settings: DetectorSettings,
    state: DetectorState | None = None,
    sensor: SensorDefinition | None = None,
) -> Detection:
    """The intervals of one device's next messages (see `DeviceInput`)."""
    return detect_all([DeviceInput(columns, settings, state, sensor)])[0]


def detect_all(devices: Sequence[DeviceInput]) -> list[Detection]:
    """The intervals of each device's next messages. The work per message is done for all the
    devices at once (one pass of numpy over a pipeline round, whatever its number of devices),
    then each device's runs; the answer for a device does not depend on the others."""
    answers = []
    for device, (points, kind, distance_mm) in zip(devices, _prepared(devices), strict=True):
        state = device.state or DetectorState()
        if len(points.t) < 2:
            last = state.last if len(points.t) == 0 else points.point(0)
            answers.append(Detection([], [], replace(state, last=last, ignition=points.ignition)))
            continue
        found = _tail_extended(points, kind, distance_mm, state, device.settings)
        if found is None:
            runs = _with_state(_runs(points, kind, distance_mm), state)
            found = _intervals(runs, points, state, device.settings)
        answers.append(found)
    return answers


def _tail_extended(
    points: "_Points",
    kind: npt.NDArray[np.int8],
    distance_mm: IntArray,
    state: DetectorState,
    settings: DetectorSettings,
) -> Detection | None:
    """The answer when the new segments only lengthen the state's last run and change no
    interval's kind (the usual round: still driving, still standing): exactly what
    `_intervals` gives then, without building the runs. None when they do more."""
    first = int(kind[0])
    if first == _Run.GAP or not (kind == first).all() or state.last is None:
        return None
    speeds = points.speed[1:]
    speed = float(np.fmax.reduce(speeds))
    total = int(distance_mm.sum())
    moving = first == _Run.MOVING
    new = Run(
        first,
        int(points.t[0]),
        int(points.t[-1]),
        float(points.lat[0]),
        float(points.lon[0]),
        float(points.lat[-1]),
        float(points.lon[-1]),
        total if moving else 0,
        0 if moving else total,
        None if np.isnan(speed) else speed,
    )
    candidate, pause, parking = state.candidate, state.pause, state.parking
    if candidate is None:
        if parking is None or moving:
            return None
        parking = _joined(parking, new)  # standing on: the parking goes on
    elif pause is not None:
        if moving:
            return None
        pause = _joined(pause, new)
        if pause.t1 - pause.t0 >= settings.min_parking_s * _MICROSECONDS:
            return None  # now a parking: the trip has ended
    else:
        if not moving:
            return None
        was_trip = _qualifies(candidate.run, settings)
        candidate = Candidate(_joined(candidate.run, new), candidate.checkpoint, candidate.stops)
        if not was_trip and _qualifies(candidate.run, settings):
            return None  # it has just become a trip
    # Built directly, not by `replace`: this runs for most devices of every round.
    last = points.point(len(points.t) - 1)
    new_state = DetectorState(last, points.ignition, parking, candidate, pause, state.open)
    found: list[Interval] = []
    if candidate is not None and _qualifies(candidate.run, settings):
        run = candidate.run
        trip = Interval(
            Kind.TRIP,
            run.t0,
            run.t1,
            run.lat0,
            run.lon0,
            run.lat1,
            run.lon1,
            run.moving_mm,
            run.max_speed,
            True,
            candidate.checkpoint,
        )
        found.append(trip)
        if pause is not None:
            found.append(_interval(Kind.STOP, pause, True))
    else:  # the open parking, with the movement that may yet become a trip
        tail = [
            run for run in (parking, None if candidate is None else candidate.run, pause) if run
        ]
        whole = tail[0]
        for run in tail[1:]:
            whole = _joined(whole, run)
        found.append(_interval(Kind.PARKING, replace(whole, kind=int(_Run.BREAK)), True))
    return Detection(found, [], new_state)


def _qualifies(run: Run, settings: DetectorSettings) -> bool:
    return run.t1 - run.t0 >= settings.min_trip_s * _MICROSECONDS and run.moving_mm >= round(
        settings.min_trip_m * _MM_PER_M
    )


@dataclass(frozen=True, slots=True)
class _Points:
    """The points, the state's last one first (when it has one)."""

    t: IntArray
    lat: FloatArray
    lon: FloatArray
    speed: FloatArray
    moving: BoolArray
    ignition_at: npt.NDArray[np.int8]  # -1 unknown, 0 off, 1 on
    mileage: FloatArray
    ignition: bool | None  # the last reading of all the messages

    def after(self, last: Point) -> "_Points":
        """These points after `last` (the state's)."""
        known = -1 if last.ignition is None else int(last.ignition)
        return _Points(
            np.concatenate(([last.t], self.t)).astype(np.int64),
            np.concatenate(([last.lat], self.lat)),
            np.concatenate(([last.lon], self.lon)),
            np.concatenate(([np.nan], self.speed)),
            np.concatenate(([last.moving], self.moving)).astype(np.bool_),
            np.concatenate(([known], self.ignition_at)).astype(np.int8),
            np.concatenate(([np.nan if last.mileage is None else last.mileage], self.mileage)),
            self.ignition,
        )

    def point(self, index: int) -> Point:
        ignition = int(self.ignition_at[index])
        mileage = float(self.mileage[index])
        return Point(
            int(self.t[index]),
            float(self.lat[index]),
            float(self.lon[index]),
            bool(self.moving[index]),
            None if ignition < 0 else bool(ignition),
            None if np.isnan(mileage) else mileage,
        )


def fix_mask(columns: Columns, settings: DetectorSettings) -> BoolArray:
    """The messages whose fixes detection uses: valid, with a position, from enough
    satellites (unknown satellites count as enough)."""
    return _fixes(columns, settings.min_satellites)


def _fixes(columns: Columns, min_satellites: int | IntArray) -> BoolArray:
    satellites = columns.satellites
    mask: BoolArray = ~columns.filtered & np.isfinite(columns.lat) & np.isfinite(columns.lon)
    return mask & (np.isnan(satellites) | (satellites >= min_satellites))


_SPEED, _COORDINATES, _IGNITION, _MILEAGE = 0, 1, 2, 3
_METHOD_CODES = {
    Method.SPEED: _SPEED,
    Method.COORDINATES: _COORDINATES,
    Method.IGNITION: _IGNITION,
    Method.MILEAGE: _MILEAGE,
}


def _prepared(
    devices: Sequence[DeviceInput],
) -> list[tuple["_Points", npt.NDArray[np.int8], IntArray]]:
    """Each device's points (its state's last point first) and the kind (a _Run) and distance
    (mm) of each segment between them, computed for all the devices in one pass."""
    count = len(devices)
    lengths = np.array([len(device.columns) for device in devices], dtype=np.int64)
    columns = _concatenated([device.columns for device in devices])
    row_device = np.repeat(np.arange(count), lengths)
    first_row = np.cumsum(lengths) - lengths
    settings = [device.settings for device in devices]
    method = np.array([_METHOD_CODES[s.method] for s in settings], dtype=np.int8)
    min_speed = np.array([s.min_moving_speed for s in settings])
    max_gap_us = np.array([s.max_gap_s * _MICROSECONDS for s in settings], dtype=np.int64)
    min_satellites = np.array([s.min_satellites for s in settings], dtype=np.int64)
    used = _fixes(columns, min_satellites[row_device])
    row_method = method[row_device]

    readings = np.full(len(row_device), np.nan)
    if any(device.sensor is not None for device in devices):
        readings = np.concatenate([_sensor_column(d.columns, d.sensor) for d in devices])
        readings[columns.filtered] = np.nan  # filtered messages say nothing
    ignition_readings = np.where(row_method == _IGNITION, readings, np.nan)
    ignition_at, last_ignition = _ignition(ignition_readings, row_device, first_row, devices)
    factor = np.array([_mileage_factor(device) for device in devices])
    mileage = np.where(row_method == _MILEAGE, readings, np.nan) * factor[row_device]
    used &= (row_method != _MILEAGE) | np.isfinite(mileage)
    moving = columns.speed >= min_speed[row_device]  # NaN: not moving
    moving &= (row_method == _SPEED) | ((row_method == _IGNITION) & (ignition_at == 1))

    chosen = np.flatnonzero(used)
    point_device = row_device[chosen]
    arrays: list[npt.NDArray[Any]] = [
        columns.time_us[chosen],
        columns.lat[chosen],
        columns.lon[chosen],
        columns.speed[chosen],
        moving[chosen],
        ignition_at[chosen],
        mileage[chosen],
        point_device,
    ]
    per_device = np.bincount(point_device, minlength=count)
    lasts = [(index, d.state.last) for index, d in enumerate(devices) if d.state and d.state.last]
    if lasts:  # each state's last point goes before its device's points
        at = (np.cumsum(per_device) - per_device)[[index for index, _ in lasts]]
        firsts: list[list[Any]] = [
            [p.t for _, p in lasts],
            [p.lat for _, p in lasts],
            [p.lon for _, p in lasts],
            [np.nan] * len(lasts),
            [p.moving for _, p in lasts],
            [-1 if p.ignition is None else int(p.ignition) for _, p in lasts],
            [np.nan if p.mileage is None else p.mileage for _, p in lasts],
            [index for index, _ in lasts],
        ]
        arrays = [
            np.insert(array, at, np.array(values))
            for array, values in zip(arrays, firsts, strict=True)
        ]
        per_device[[index for index, _ in lasts]] += 1
    t = arrays[0].astype(np.int64)
    lat, lon, speed = arrays[1], arrays[2], arrays[3]
    point_moving = arrays[4].astype(np.bool_)
    point_ignition = arrays[5].astype(np.int8)
    point_mileage = arrays[6]
    point_device = arrays[7].astype(np.int64)

    # Segments, over all the points at once; those joining two devices are never looked at.
    segment_device = point_device[:-1]
    segment_method = method[segment_device]
    elapsed = np.diff(t)
    by_mileage = segment_method == _MILEAGE
    distance_mm = np.zeros(len(elapsed), dtype=np.int64)
    if not by_mileage.all():
        distance_mm = _mm(path_distances_m(lat, lon))
    if by_mileage.any():  # a counter that went back was reset: no distance
        increments = np.nan_to_num(np.maximum(np.diff(point_mileage), 0.0))
        distance_mm = np.where(by_mileage, _mm(increments), distance_mm)
    by_speed = (segment_method == _SPEED) | (segment_method == _IGNITION)
    segment_moving = point_moving[:-1] | point_moving[1:]
    if not by_speed.all():  # the distance covered says whether it moved
        with np.errstate(divide="ignore", invalid="ignore"):
            implied = distance_mm / elapsed * 3600 >= min_speed[segment_device]
        segment_moving = np.where(by_speed, segment_moving, implied)
    kind = np.where(segment_moving, _Run.MOVING, _Run.PAUSED).astype(np.int8)
    kind[elapsed > max_gap_us[segment_device]] = _Run.GAP

    prepared = []
    starts = (np.cumsum(per_device) - per_device).tolist()
    for index, (start, size) in enumerate(zip(starts, per_device.tolist(), strict=True)):
        stop = start + size
        points = _Points(
            t[start:stop],
            lat[start:stop],
            lon[start:stop],
            speed[start:stop],
            point_moving[start:stop],
            point_ignition[start:stop],
            point_mileage[start:stop],
            last_ignition[index],
        )
        end = max(start, stop - 1)
        prepared.append((points, kind[start:end], distance_mm[start:end]))
    return prepared


def _mm(metres: FloatArray) -> IntArray:
    return np.rint(metres * _MM_PER_M).astype(np.int64)


def _mileage_factor(device: DeviceInput) -> float:
    if device.sensor is None:
        return 1000.0
    return MILEAGE_UNITS_M.get(device.sensor.unit.strip().lower(), 1000.0)


def _concatenated(parts: Sequence[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    fields = (
        "time_us", "lat", "lon", "speed", "altitude", "course", "satellites", "hdop", "inputs",
        "outputs", "filtered",
    )  # fmt: skip
    joined: dict[str, Any] = {
        name: np.concatenate([getattr(part, name) for part in parts]) for name in fields
    }
    return Columns(**joined)


def _ignition(
    readings: FloatArray,
    row_device: IntArray,
    first_row: IntArray,
    devices: Sequence[DeviceInput],
) -> tuple[npt.NDArray[np.int8], list[bool | None]]:
    """Each message's ignition (its device's last reading at or before it, else the one its
    state kept; -1 unknown) and each device's last reading."""
    before = np.array(
        [-1 if d.state is None or d.state.ignition is None else int(d.state.ignition)
         for d in devices],
        dtype=np.int8,
    )  # fmt: skip
    index = np.where(np.isfinite(readings), np.arange(len(readings)), -1)
    if len(index):
        index = np.maximum.accumulate(index)
    own = index >= first_row[row_device]  # not a reading of the devices before it
    read = np.where(readings[np.maximum(index, 0)] != 0, 1, 0).astype(np.int8)
    ignition_at = np.where(own, read, before[row_device]).astype(np.int8)
    last: list[bool | None] = []
    sizes = [len(device.columns) for device in devices]
    for device, (start, size) in enumerate(zip(first_row.tolist(), sizes, strict=True)):
        value = int(ignition_at[start + size - 1]) if size else int(before[device])
        last.append(None if value < 0 else bool(value))
    return ignition_at, last


def _sensor_column(columns: Columns, sensor: SensorDefinition | None) -> FloatArray:
    """The sensor's value in each message (switches as 0/1), NaN where it has none: the
    sensors' own calculation, run once per distinct raw reading."""
    if sensor is None:
        return np.full(len(columns), np.nan)
    raw = columns.params.get(sensor.parameter, np.full(len(columns), np.nan))
    keys = np.stack([raw, columns.inputs.astype(np.float64), columns.outputs.astype(np.float64)])
    distinct, inverse = np.unique(keys, axis=1, return_inverse=True)
    values = np.empty(distinct.shape[1])
    for index in range(distinct.shape[1]):
        value, inputs, outputs = distinct[:, index]
        params = {} if np.isnan(value) else {sensor.parameter: float(value)}
        found = compute_value(
            sensor,
            params,
            None if inputs < 0 else int(inputs),
            None if outputs < 0 else int(outputs),
        )
        values[index] = float(found) if isinstance(found, bool | int | float) else np.nan
    column: FloatArray = values[inverse.reshape(-1)]
    return column


# --- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Runs:
    kind: npt.NDArray[np.int8]
    t0: IntArray
    t1: IntArray
    lat0: FloatArray
    lon0: FloatArray
    lat1: FloatArray
    lon1: FloatArray
    moving_mm: IntArray
    still_mm: IntArray
    max_speed: FloatArray
    p0: IntArray  # index of the first point among the points (-1: from the state)

    def __len__(self) -> int:
        return len(self.kind)

    def run(self, index: int, kind: int | None = None) -> Run:
        speed = float(self.max_speed[index])
        return Run(
            int(self.kind[index]) if kind is None else kind,
            int(self.t0[index]),
            int(self.t1[index]),
            float(self.lat0[index]),
            float(self.lon0[index]),
            float(self.lat1[index]),
            float(self.lon1[index]),
            int(self.moving_mm[index]),
            int(self.still_mm[index]),
            None if np.isnan(speed) else speed,
        )

    def summary(self, first: int, last: int, kind: int) -> Run:
        """Runs first..last (inclusive) as one."""
        speeds = self.max_speed[first : last + 1]
        speed = float(np.fmax.reduce(speeds)) if len(speeds) else float("nan")
        return Run(
            int(kind),
            int(self.t0[first]),
            int(self.t1[last]),
            float(self.lat0[first]),
            float(self.lon0[first]),
            float(self.lat1[last]),
            float(self.lon1[last]),
            int(self.moving_mm[first : last + 1].sum()),
            int(self.still_mm[first : last + 1].sum()),
            None if np.isnan(speed) else speed,
        )


def _runs(points: _Points, kind: npt.NDArray[np.int8], distance_mm: IntArray) -> _Runs:
    t = points.t
    count = len(kind)
    starts = np.concatenate(([0], np.flatnonzero(kind[1:] != kind[:-1]) + 1))
    ends = np.concatenate((starts[1:], [count]))  # exclusive; the run's last point is its end
    run_kind = kind[starts]
    total_mm = np.add.reduceat(distance_mm, starts)
    is_moving = run_kind == _Run.MOVING
    return _Runs(
        kind=run_kind,
        t0=t[starts],
        t1=t[ends],
        lat0=points.lat[starts],
        lon0=points.lon[starts],
        lat1=points.lat[ends],
        lon1=points.lon[ends],
        moving_mm=np.where(is_moving, total_mm, 0),
        still_mm=np.where(is_moving, 0, total_mm),
        max_speed=np.fmax.reduceat(points.speed[1:], starts),
        p0=starts.astype(np.int64),
    )


def _with_state(runs: _Runs, state: DetectorState) -> _Runs:
    """The state's summary runs, then the new ones; a new run that goes on from the state's
    last one (movement, or a pause) joins it."""
    prefix = [
        run
        for run in (
            state.parking,
            None if state.candidate is None else state.candidate.run,
            state.pause,
        )
        if run is not None
    ]
    if not prefix:
        return runs
    first = runs.run(0)
    if prefix[-1].kind == first.kind:
        prefix[-1] = _joined(prefix[-1], first)
        runs = _Runs(*(getattr(runs, name)[1:] for name in _RUN_FIELDS))
    head = _Runs(
        kind=np.array([r.kind for r in prefix], dtype=np.int8),
        t0=np.array([r.t0 for r in prefix], dtype=np.int64),
        t1=np.array([r.t1 for r in prefix], dtype=np.int64),
        lat0=np.array([r.lat0 for r in prefix]),
        lon0=np.array([r.lon0 for r in prefix]),
        lat1=np.array([r.lat1 for r in prefix]),
        lon1=np.array([r.lon1 for r in prefix]),
        moving_mm=np.array([r.moving_mm for r in prefix], dtype=np.int64),
        still_mm=np.array([r.still_mm for r in prefix], dtype=np.int64),
        max_speed=np.array([np.nan if r.max_speed is None else r.max_speed for r in prefix]),
        p0=np.full(len(prefix), -1, dtype=np.int64),
    )
    return _Runs(*(np.concatenate((getattr(head, n), getattr(runs, n))) for n in _RUN_FIELDS))


_RUN_FIELDS = (
    "kind", "t0", "t1", "lat0", "lon0", "lat1", "lon1", "moving_mm", "still_mm", "max_speed", "p0",
)  # fmt: skip


def _joined(before: Run, after: Run) -> Run:
    speeds = [s for s in (before.max_speed, after.max_speed) if s is not None]
    return Run(
        before.kind,
        before.t0,
        after.t1,
        before.lat0,
        before.lon0,
        after.lat1,
        after.lon1,
        before.moving_mm + after.moving_mm,
        before.still_mm + after.still_mm,
        max(speeds) if speeds else None,
    )


# --- intervals ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Groups:
    """Maximal sequences of runs, alternately in and out of a mask, with their totals."""

    inside: BoolArray
    first: IntArray
    last: IntArray
    moving_mm: IntArray
    still_mm: IntArray
    max_speed: FloatArray

    @classmethod
    def of(cls, mask: BoolArray, runs: "_Runs") -> "_Groups":
        first = np.concatenate(([0], np.flatnonzero(mask[1:] != mask[:-1]) + 1))
        last = np.concatenate((first[1:], [len(mask)])) - 1
        moving = np.concatenate(([0], np.cumsum(runs.moving_mm)))
        still = np.concatenate(([0], np.cumsum(runs.still_mm)))
        return cls(
            inside=mask[first],
            first=first,
            last=last,
            moving_mm=moving[last + 1] - moving[first],
            still_mm=still[last + 1] - still[first],
            max_speed=np.fmax.reduceat(runs.max_speed, first),
        )

    def where(self, selected: BoolArray) -> "_Groups":
        return _Groups(*(getattr(self, name)[selected] for name in _GROUP_FIELDS))

    def summary(self, index: int, runs: "_Runs", kind: int) -> Run:
        first, last = int(self.first[index]), int(self.last[index])
        speed = float(self.max_speed[index])
        return Run(
            int(kind),
            int(runs.t0[first]),
            int(runs.t1[last]),
            float(runs.lat0[first]),
            float(runs.lon0[first]),
            float(runs.lat1[last]),
            float(runs.lon1[last]),
            int(self.moving_mm[index]),
            int(self.still_mm[index]),
            None if np.isnan(speed) else speed,
        )


_GROUP_FIELDS = ("inside", "first", "last", "moving_mm", "still_mm", "max_speed")


def _intervals(
    runs: _Runs, points: _Points, state: DetectorState, settings: DetectorSettings
) -> Detection:
    count = len(runs)
    is_moving = runs.kind == _Run.MOVING
    after_moving = np.concatenate(([False], is_moving[:-1]))
    before_moving = np.concatenate((is_moving[1:], [False]))
    short_pause = (runs.kind == _Run.PAUSED) & (
        runs.t1 - runs.t0 < settings.min_parking_s * _MICROSECONDS
    )
    stop = short_pause & after_moving & before_moving
    # A short pause after movement at the very end: a stop or a parking, the next data says.
    pending = bool(short_pause[-1] and after_moving[-1])

    groups = _Groups.of(is_moving | stop, runs)
    candidates = groups.where(groups.inside)
    duration = runs.t1[candidates.last] - runs.t0[candidates.first]
    qualifies = (duration >= settings.min_trip_s * _MICROSECONDS) & (
        candidates.moving_mm >= round(settings.min_trip_m * _MM_PER_M)
    )
    open_candidate = -1
    if len(candidates.first) and candidates.last[-1] == count - 1 - int(pending):
        open_candidate = len(candidates.first) - 1
    open_trip = open_candidate >= 0 and bool(qualifies[open_candidate])

    trip_edges = np.zeros(count + 1, dtype=np.int64)
    np.add.at(trip_edges, candidates.first[qualifies], 1)
    np.add.at(trip_edges, candidates.last[qualifies] + 1, -1)
    in_trip = np.cumsum(trip_edges[:-1]) > 0
    if pending and open_trip:
        in_trip[-1] = True
    by_trip = _Groups.of(in_trip, runs)
    parkings = by_trip.where(~by_trip.inside)
    state_candidate = -1 if state.candidate is None else int(state.parking is not None)

    def checkpoint_at(first: int) -> DetectorState:
        """The state just after the point a candidate starts from, as detection from scratch
        over the messages up to it would leave it: the parking before it, open."""
        if first == state_candidate and state.candidate is not None:
            return state.candidate.checkpoint
        parking = None
        if first > 0:  # the runs before it are a parking's (a trip's end is not a start)
            group = int(np.searchsorted(parkings.first, first - 1, side="right")) - 1
            parking = runs.summary(int(parkings.first[group]), first - 1, _Run.BREAK)
        point = points.point(int(runs.p0[first]))
        return DetectorState(
            last=point,
            ignition=point.ignition,
            parking=parking,
            open=() if parking is None else ((Kind.PARKING.value, parking.t0),),
        )

    found: list[Interval] = []
    parking_open = parkings.last == count - 1
    found += _made(Kind.PARKING, runs, parkings, parking_open)
    trips = candidates.where(qualifies)
    trip_open = np.flatnonzero(qualifies) == open_candidate
    checkpoints = [checkpoint_at(int(first)) for first in trips.first]
    trip_intervals = _made(Kind.TRIP, runs, trips, trip_open, checkpoints, moving_only=True)
    found += trip_intervals
    if state_candidate >= 0 and state.candidate is not None and in_trip[state_candidate]:
        found += [_interval(Kind.STOP, run, False) for run in state.candidate.stops]
    stops = _Groups.of(stop & in_trip, runs)
    stops = stops.where(stops.inside)
    found += _made(Kind.STOP, runs, stops, np.zeros(len(stops.first), dtype=np.bool_))
    if pending and open_trip:
        found.append(_interval(Kind.STOP, runs.run(count - 1), True))

    # What is left open: the parking since the last trip, or the movement after it.
    base = DetectorState(last=points.point(len(points.t) - 1), ignition=points.ignition)
    if open_candidate < 0:
        open_parking = parkings.summary(len(parkings.first) - 1, runs, _Run.BREAK)
        new_state = replace(base, parking=open_parking)
    else:
        first = int(candidates.first[open_candidate])
        last = int(candidates.last[open_candidate])
        pending_stops: tuple[Run, ...] = ()
        parking = None
        if not open_trip:  # its stops wait until it is a trip; the parking goes on meanwhile
            if first == state_candidate and state.candidate is not None:
                pending_stops = state.candidate.stops
            inside = np.flatnonzero(stop[first : last + 1]) + first
            pending_stops += tuple(runs.run(int(index)) for index in inside)
            parking_start = int(parkings.first[-1])
            if parking_start < first:
                parking = runs.summary(parking_start, first - 1, _Run.BREAK)
        summary = candidates.summary(open_candidate, runs, _Run.MOVING)
        candidate = Candidate(summary, checkpoint_at(first), pending_stops)
        pause = runs.run(count - 1) if pending else None
        new_state = replace(base, parking=parking, candidate=candidate, pause=pause)
    new_state = replace(new_state, open=tuple(i.key for i in found if i.open))
    written = {interval.key for interval in found}
    gone = [key for key in state.open if key not in written]
    found.sort(key=lambda interval: (interval.start_us, interval.kind != Kind.PARKING))
    return Detection(found, gone, new_state)


def _made(
    kind: Kind,
    runs: _Runs,
    groups: _Groups,
    is_open: BoolArray,
    checkpoints: list[DetectorState] | None = None,
    *,
    moving_only: bool = False,
) -> list[Interval]:
    """An interval of each group, built from lists (no numpy scalar per field)."""
    first, last = groups.first, groups.last
    distance = groups.moving_mm if moving_only else groups.moving_mm + groups.still_mm
    speeds = [None if np.isnan(s) else s for s in groups.max_speed.tolist()]
    columns = (
        runs.t0[first].tolist(),
        runs.t1[last].tolist(),
        runs.lat0[first].tolist(),
        runs.lon0[first].tolist(),
        runs.lat1[last].tolist(),
        runs.lon1[last].tolist(),
        distance.tolist(),
        speeds,
        is_open.tolist(),
        checkpoints if checkpoints is not None else [None] * len(first),
    )
    return [Interval(kind, *values) for values in zip(*columns, strict=True)]


def _interval(kind: Kind, run: Run, is_open: bool) -> Interval:
    return Interval(
        kind,
        run.t0,
        run.t1,
        run.lat0,
        run.lon0,
        run.lat1,
        run.lon1,
        run.moving_mm + run.still_mm,
        run.max_speed,
        is_open,
    )


def resume_point(
    trips: Sequence[tuple[int, DetectorState | None]], late_us: int
) -> tuple[int | None, DetectorState | None]:
    """Where detection starts again when messages at or after `late_us` changed: the start of
    the latest trip (start µs, checkpoint) that began before them, with its checkpoint (the
    intervals that end at or after that start are then to be detected again, from the messages
    after it); (None, None) for from scratch."""
    earlier = [(start, checkpoint) for start, checkpoint in trips if start < late_us]
    if not earlier:
        return None, None
    start, checkpoint = max(earlier, key=lambda trip: trip[0])
    if checkpoint is None:
        return None, None
    return start, checkpoint
