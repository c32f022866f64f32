"""Hand-built drives for the trip tests: a vehicle on a meridian reporting every few seconds,
its positions, speed, ignition and mileage all telling the same story, so that every detection
method finds the same movement in it."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from geographiclib.geodesic import Geodesic

from fleetplane.messages.columns import Columns
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.trips.detector import (
    Detection,
    DetectorSettings,
    DetectorState,
    Interval,
    Method,
    detect,
)

GEODESIC = Geodesic.WGS84
EPOCH = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
IGNITION = SensorDefinition("sen_ignition", "dev", "Ignition", SensorType.IGNITION, "ign")
MILEAGE = SensorDefinition("sen_mileage", "dev", "Mileage", SensorType.MILEAGE, "mileage", "m")
SENSORS = {Method.IGNITION: IGNITION, Method.MILEAGE: MILEAGE}
_COLUMN_FIELDS = (
    "time_us", "lat", "lon", "speed", "altitude", "course", "satellites", "hdop", "inputs",
    "outputs", "filtered",
)  # fmt: skip


@dataclass
class Drive:
    """Messages every `step` seconds; `leg` drives (or stands) at a speed for a while, moving
    max(speed before, speed now) * time along each segment (so the segment from rest into
    movement moves too, as every method sees it)."""

    step: int = 10
    lat: float = 56.9
    lon: float = 24.1
    seconds: list[int] = field(default_factory=lambda: [0])
    lats: list[float] = field(default_factory=list)
    speeds: list[float] = field(default_factory=lambda: [0.0])
    mileage_m: list[float] = field(default_factory=lambda: [0.0])
    satellites: list[float] = field(default_factory=lambda: [9.0])

    def __post_init__(self) -> None:
        self.lats = [self.lat]

    def leg(self, seconds: int, speed: float, *, step: int | None = None) -> "Drive":
        step = step or self.step
        for _ in range(seconds // step):
            self.report(step, speed)
        return self

    def report(self, after: int, speed: float, *, moved_m: float | None = None) -> "Drive":
        metres = max(self.speeds[-1], speed) / 3.6 * after if moved_m is None else moved_m
        self.lats.append(GEODESIC.Direct(self.lats[-1], self.lon, 0.0, metres)["lat2"])
        self.seconds.append(self.seconds[-1] + after)
        self.speeds.append(speed)
        self.mileage_m.append(self.mileage_m[-1] + metres)
        self.satellites.append(9.0)
        return self

    def silence(self, seconds: int, speed: float = 0.0) -> "Drive":
        """No message for `seconds`, then one (having moved as it would have)."""
        return self.report(seconds, speed)

    def columns(self) -> Columns:
        count = len(self.seconds)
        nothing = np.full(count, np.nan)
        speeds = np.array(self.speeds)
        return Columns(
            time_us=(np.array(self.seconds, dtype=np.int64) + int(EPOCH.timestamp())) * 10**6,
            lat=np.array(self.lats),
            lon=np.full(count, self.lon),
            speed=speeds,
            altitude=nothing,
            course=nothing,
            satellites=np.array(self.satellites),
            hdop=nothing,
            inputs=np.full(count, -1, dtype=np.int64),
            outputs=np.full(count, -1, dtype=np.int64),
            filtered=np.zeros(count, dtype=np.bool_),
            params={"ign": (speeds > 0).astype(np.float64), "mileage": np.array(self.mileage_m)},
        )

    def at(self, second: int) -> int:
        """The index of the message at `second`."""
        return self.seconds.index(second)


def part(columns: Columns, start: int, stop: int | None = None) -> Columns:
    return Columns(
        *(getattr(columns, name)[start:stop] for name in _COLUMN_FIELDS),
        params={name: values[start:stop] for name, values in columns.params.items()},
    )


class Store:
    """Intervals as the trip step keeps them: each written one replaces the one of the same
    kind and start; the open ones that are gone are deleted."""

    def __init__(self) -> None:
        self.intervals: dict[tuple[str, int], Interval] = {}
        self.state: DetectorState | None = None

    def take(self, detection: Detection) -> None:
        for interval in detection.intervals:
            self.intervals[interval.key] = interval
        for key in detection.gone:
            del self.intervals[key]
        self.state = detection.state

    def sorted(self) -> list[Interval]:
        return sorted(self.intervals.values(), key=lambda i: (i.start_us, i.kind != "parking"))


def detect_in_parts(
    columns: Columns, cuts: Sequence[int], method: Method, **settings: Any
) -> Store:
    store = Store()
    bounds = [0, *cuts, len(columns)]
    options = DetectorSettings(method=method, **settings)
    for start, stop in itertools.pairwise(bounds):
        store.take(detect(part(columns, start, stop), options, store.state, SENSORS.get(method)))
    return store


def seconds_since_start(at_us: int) -> float:
    return (at_us - int(EPOCH.timestamp()) * 10**6) / 10**6


def as_times(interval: Interval) -> tuple[str, float, float]:
    return (
        interval.kind.value,
        seconds_since_start(interval.start_us),
        seconds_since_start(interval.end_us),
    )


def stamp(second: int) -> datetime:
    return EPOCH + timedelta(seconds=second)
