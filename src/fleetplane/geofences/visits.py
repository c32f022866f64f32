"""Visits as pure functions: from a device's valid fixes, oldest first, and the geofences each
is inside, the visits that open, close and go on, from where the previous messages left the
device (`DeviceVisits`). The same function serves the live path and a re-computation after
late data (the step gives it the messages again from a state where the device is outside).

The rules (docs/decisions.md, "Geofence visits"): a device is inside or outside a geofence by
its last valid fix. A visit enters at the first message inside and exits at the first message
outside; its distance is the sum of the geodesic segments between consecutive messages inside.
With a dwell delay, the visit counts only once it has lasted that long (its duration: from the
enter to the exit, or to the newest message inside while it is open); a shorter one is dropped
when the device leaves, as if it never happened. The enter time stays the first message's."""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from fleetplane.core.geo import path_distances_m
from fleetplane.core.ids import id_at

ID_PREFIX = "gvs"
EventKind = Literal["enter", "exit"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(slots=True)
class OpenVisit:
    """A visit still going (or waiting for its dwell delay: not `counted`)."""

    geofence_id: str
    provider_id: str  # the geofence's
    customer_id: str
    enter_us: int
    enter_lat: float
    enter_lon: float
    distance_m: float  # up to the device's last fix
    counted: bool


@dataclass(slots=True)
class DeviceVisits:
    """Where the previous messages left a device: its open visits by geofence, and its last
    valid fix (time in epoch microseconds, lat, lon), which they go on from."""

    open: dict[str, OpenVisit] = field(default_factory=dict)
    last: tuple[int, float, float] | None = None


@dataclass(frozen=True, slots=True)
class VisitOutput:
    """A visit as written: closed (`exit_us`), or open as of `last`."""

    visit: OpenVisit
    exit_us: int | None
    exit_lat: float | None
    exit_lon: float | None
    last: tuple[int, float, float]


@dataclass(frozen=True, slots=True)
class VisitEventOut:
    kind: EventKind
    visit: OpenVisit
    time_us: int
    lat: float
    lon: float


@dataclass(slots=True)
class Followed:
    """What a device's messages did: visits to write, pending visits to delete (left before
    their dwell delay), the enters and exits that now count, and the new state."""

    written: list[VisitOutput] = field(default_factory=list)
    dropped: list[OpenVisit] = field(default_factory=list)
    events: list[VisitEventOut] = field(default_factory=list)
    state: DeviceVisits = field(default_factory=DeviceVisits)


def follow(
    state: DeviceVisits,
    time_us: IntArray,
    lat: FloatArray,
    lon: FloatArray,
    changes: Sequence[tuple[int, frozenset[str]]],
    customer: tuple[str, str],
    dwell_us: Mapping[str, int],
) -> Followed:
    """The device's visits after its valid fixes (`time_us`, `lat`, `lon`, oldest first).
    `changes`: (index, the geofences that fix is inside) at least wherever the set differs from
    the fix before (the first fix always), of the geofences of `customer` (provider id,
    customer id); `dwell_us`: their dwell delays by id."""
    out = Followed()
    count = len(time_us)
    if not count:
        out.state = state
        return out
    # Points: the last fix before (while inside something), then these; the distance along
    # them, so that a run of fixes inside is a difference of two entries.
    offset = 1 if state.open and state.last is not None else 0
    if offset and state.last is not None:
        lat = np.concatenate([[state.last[1]], lat])
        lon = np.concatenate([[state.last[2]], lon])
    travelled = np.concatenate([[0.0], np.cumsum(path_distances_m(lat, lon))]).tolist()
    times, lats, lons = time_us.tolist(), lat[offset:].tolist(), lon[offset:].tolist()
    going = dict(state.open)
    since = dict.fromkeys(going, 0)  # each open visit's first point in `travelled`
    inside = frozenset(going)
    for index, now_inside in changes:
        if now_inside == inside:
            continue
        point = index + offset
        for geofence_id in sorted(inside - now_inside):
            visit = going.pop(geofence_id)
            visit.distance_m += travelled[point - 1] - travelled[since.pop(geofence_id)]
            duration = times[index] - visit.enter_us
            if visit.counted or duration >= dwell_us.get(geofence_id, 0):
                if not visit.counted:
                    visit.counted = True
                    out.events.append(_enter(visit))
                exit_at = (times[index], lats[index], lons[index])
                last = _fix(times, lats, lons, index - 1) if index else _last(state)
                out.written.append(VisitOutput(visit, *exit_at, last))
                out.events.append(VisitEventOut("exit", visit, *exit_at))
            else:
                out.dropped.append(visit)
        for geofence_id in sorted(now_inside - inside):
            dwell = dwell_us.get(geofence_id, 0)
            visit = OpenVisit(
                geofence_id, *customer, times[index], lats[index], lons[index], 0.0, dwell <= 0
            )
            going[geofence_id], since[geofence_id] = visit, point
            if visit.counted:
                out.events.append(_enter(visit))
        inside = now_inside
    last = _fix(times, lats, lons, count - 1)
    end = count - 1 + offset
    for geofence_id, visit in going.items():
        visit.distance_m += travelled[end] - travelled[since[geofence_id]]
        if not visit.counted and last[0] - visit.enter_us >= dwell_us.get(geofence_id, 0):
            visit.counted = True
            out.events.append(_enter(visit))
        out.written.append(VisitOutput(visit, None, None, None, last))
    out.state = DeviceVisits(going, last if going else None)
    return out


def _enter(visit: OpenVisit) -> VisitEventOut:
    return VisitEventOut("enter", visit, visit.enter_us, visit.enter_lat, visit.enter_lon)


def _fix(
    times: list[int], lats: list[float], lons: list[float], index: int
) -> tuple[int, float, float]:
    return times[index], lats[index], lons[index]


def _last(state: DeviceVisits) -> tuple[int, float, float]:
    assert state.last is not None  # a visit open before these fixes has its last fix
    return state.last


def visit_id(device_seq: int, geofence_id: str, enter_us: int) -> str:
    """The id of a device's visit of a geofence entered at a time: ids sort by enter time."""
    millis, micros = divmod(enter_us, 1000)
    fence = int.from_bytes(hashlib.blake2b(geofence_id.encode(), digest_size=8).digest())
    # 32 bits of the device, 38 of the geofence, 10 of the microseconds: 80 bits.
    tail = ((device_seq & 0xFFFF_FFFF) << 48) | ((fence & ((1 << 38) - 1)) << 10) | micros
    return id_at(ID_PREFIX, millis, tail)


def inside_changes(
    positions: npt.NDArray[np.intp],
    fences: npt.NDArray[np.intp],
    firsts: Sequence[int],
    count: int,
    ids: Sequence[str],
) -> list[tuple[int, frozenset[str]]]:
    """From an index's (position, geofence index) pairs over `count` positions (ordered by
    position; the positions of several devices one after the other, each device's from its
    index in `firsts`), the positions where the set of geofences differs from the position
    before, and each device's first: each with that set of ids."""
    # A fingerprint of each position's set: a sum of random 64-bit weights, one per geofence
    # (wrapping); two different sets are told apart but with odds of 2**-64.
    weights = _RANDOM.integers(0, 2**63, size=max(len(ids), 1), dtype=np.int64).astype(np.uint64)
    prints = np.zeros(count, dtype=np.uint64)
    np.add.at(prints, positions, weights[fences])
    changed = np.ones(count, dtype=np.bool_)
    changed[1:] = prints[1:] != prints[:-1]
    changed[np.asarray(firsts, dtype=np.intp)] = True
    bounds = np.searchsorted(positions, np.arange(count + 1)).tolist()
    found = []
    for index in np.flatnonzero(changed).tolist():
        chosen = fences[bounds[index] : bounds[index + 1]].tolist()
        found.append((index, frozenset(ids[f] for f in chosen) if chosen else _NOWHERE))
    return found


_RANDOM = np.random.default_rng(20_220)
_NOWHERE: frozenset[str] = frozenset()
