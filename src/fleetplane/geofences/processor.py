"""The visits step of the telemetry pipeline: each device's new valid fixes are tested against
its customer's geofences (one vectorised test per customer and slice of the round, over all
their devices' fixes), the visits followed on from where the previous round left the device
(`visits.follow`), and the round's visits written together (a statement per table), with the
step's progress marks. Enters and exits that count are announced (`VISIT_CHANGE`).

The step runs in a process of its own, which the server's change notices do not reach: it
keeps each customer's geofences in memory and checks them every round with one query over the
round's customers (`service.fences_stamps`), building again those whose stamp moved."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks
from fleetplane.core.timeutil import EARLIEST
from fleetplane.geofences import service
from fleetplane.geofences.geometry import GeofenceIndex
from fleetplane.geofences.models import GeofenceVisit
from fleetplane.geofences.service import CustomerFences, FencesStamp
from fleetplane.geofences.visits import (
    DeviceVisits,
    Followed,
    OpenVisit,
    follow,
    inside_changes,
    visit_id,
)
from fleetplane.messages.columns import time_of, time_us
from fleetplane.steps.contract import ANNOUNCE_WITHIN, DeviceMessages, StepDevice, in_slices

Customer = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Known:
    """A customer's geofences as the step holds them."""

    stamp: FencesStamp
    fences: CustomerFences
    dwell_us: dict[str, int]

    @classmethod
    def of(cls, stamp: FencesStamp, fences: CustomerFences) -> "_Known":
        dwell = {g: s * 1_000_000 for g, s in zip(fences.ids, fences.dwell_s, strict=True)}
        return cls(stamp, fences, dwell)


_NOBODY: Customer = ("", "")
_NO_FENCES = _Known.of((0, None), CustomerFences(GeofenceIndex([], []), (), ()))


@dataclass(slots=True)
class _Round:
    """What a round found, written at its end."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)


class VisitsStep:
    name = service.STEP_NAME
    reads_filtered = False  # only the messages the device's validity filter kept

    def __init__(self) -> None:
        # Each device's open visits after its last round here, trusted for those that follow on.
        self._kept: dict[str, DeviceVisits] = {}
        # Each customer's geofences and the stamp they were read at.
        self._fences: dict[Customer, _Known] = {}

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        states: dict[str, DeviceVisits] = {}
        unknown = []
        for batch in batches:
            kept = self._kept.get(batch.device.id)
            if batch.follows_on and kept is not None:
                states[batch.device.id] = kept
            else:
                unknown.append(batch.device)
        states.update(await _stored_states(session, unknown))
        # The customers whose geofences matter: each device's, and those of its open visits
        # (a device moved to another customer leaves its former customer's geofences).
        customers = {_customer_of(b.device) for b in batches if b.device.customer_id}
        for state in states.values():
            customers.update((v.provider_id, v.customer_id) for v in state.open.values())
        fences = await self._customer_fences(session, customers)
        names = {
            g: name for known in fences.values()
            for g, name in zip(known.fences.ids, known.fences.names, strict=True)
        }  # fmt: skip
        found = _Round()
        async for part in in_slices(batches):
            by_customer: dict[Customer | None, list[DeviceMessages]] = {}
            for batch in part:
                key = _customer_of(batch.device) if batch.device.customer_id else None
                by_customer.setdefault(key, []).append(batch)
            for key, devices in by_customer.items():
                known = _NO_FENCES if key is None else fences[key]
                self._follow_devices(known, key or _NOBODY, devices, states, names, found)
        await _write(session, found, names.keys())

    def _follow_devices(
        self,
        known: _Known,
        customer: Customer,
        batches: list[DeviceMessages],
        states: dict[str, DeviceVisits],
        names: dict[str, str],
        found: _Round,
    ) -> None:
        """The devices of one customer: their fixes tested in one go, then each followed."""
        fixes = [
            [m for m in batch.messages if m.lat is not None and m.lon is not None]
            for batch in batches
        ]
        firsts = np.cumsum([0] + [len(f) for f in fixes])
        count = int(firsts[-1])
        lat = np.fromiter((m.lat for f in fixes for m in f), np.float64, count)
        lon = np.fromiter((m.lon for f in fixes for m in f), np.float64, count)
        times = np.fromiter((time_us(m.device_time) for f in fixes for m in f), np.int64, count)
        positions, indexes = known.fences.index.pairs(lat, lon)
        with_fixes = firsts[:-1][np.diff(firsts) > 0].tolist()
        changes = inside_changes(positions, indexes, with_fixes, count, known.fences.ids)
        at = 0
        for batch, first, last in zip(batches, firsts[:-1].tolist(), firsts[1:].tolist(),
                                      strict=True):  # fmt: skip
            device = batch.device
            start = at
            while at < len(changes) and changes[at][0] < last:
                at += 1
            mine = [(index - first, inside) for index, inside in changes[start:at]]
            state = states.get(device.id, DeviceVisits())
            followed = follow(
                state, times[first:last], lat[first:last], lon[first:last], mine, customer,
                known.dwell_us,
            )  # fmt: skip
            self._kept[device.id] = followed.state
            newest = batch.messages[-1].device_time
            _collect(device, followed, names, newest - ANNOUNCE_WITHIN, found)

    async def _customer_fences(
        self, session: AsyncSession, customers: set[Customer]
    ) -> dict[Customer, _Known]:
        """Each customer's geofences, from memory while its stamp stands."""
        stamps = await service.fences_stamps(session, customers)
        found = {}
        for customer, stamp in stamps.items():
            held = self._fences.get(customer)
            if held is None or held.stamp != stamp:
                fences = await service.customer_fences(session, *customer)
                held = self._fences[customer] = _Known.of(stamp, fences)
            found[customer] = held
        return found

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Deletes the visits still open at `from_time` or after (exited then or later, open,
        pending), and those overlapping them, back to the earliest enter among them: from
        there the device is outside every geofence, as the kept visits left it."""
        self._kept.pop(device.id, None)
        resume = from_time
        while True:
            overlapping = or_(GeofenceVisit.exit_time >= resume, GeofenceVisit.exit_time.is_(None))
            earliest = (
                await session.execute(
                    select(GeofenceVisit.enter_time)
                    .where(GeofenceVisit.device_id == device.id, overlapping)
                    .order_by(GeofenceVisit.enter_time)
                    .limit(1)
                )
            ).scalar_one_or_none()
            if earliest is None or earliest >= resume:
                break
            resume = earliest
        await session.execute(
            delete(GeofenceVisit).where(
                GeofenceVisit.device_id == device.id,
                or_(GeofenceVisit.exit_time >= resume, GeofenceVisit.exit_time.is_(None)),
            )
        )
        return max(resume, EARLIEST)


def _customer_of(device: StepDevice) -> Customer:
    assert device.customer_id is not None
    return device.provider_id, device.customer_id


def _collect(
    device: StepDevice,
    followed: Followed,
    names: dict[str, str],
    announce_from: datetime,
    found: _Round,
) -> None:
    for output in followed.written:
        visit, last = output.visit, output.last
        enter = time_of(visit.enter_us)
        end = output.exit_us if output.exit_us is not None else last[0]
        found.rows.append(
            {
                "id": visit_id(device.seq, visit.geofence_id, visit.enter_us),
                "provider_id": device.provider_id,
                "customer_id": visit.customer_id,
                "device_id": device.id,
                "geofence_id": visit.geofence_id,
                "enter_time": enter,
                "exit_time": None if output.exit_us is None else time_of(output.exit_us),
                "duration_s": (end - visit.enter_us) / 1e6,
                "distance_m": visit.distance_m,
                "enter_lat": visit.enter_lat,
                "enter_lon": visit.enter_lon,
                "exit_lat": output.exit_lat,
                "exit_lon": output.exit_lon,
                "last_time": time_of(last[0]),
                "last_lat": last[1],
                "last_lon": last[2],
                "counted": visit.counted,
            }
        )
    found.dropped += [
        visit_id(device.seq, visit.geofence_id, visit.enter_us) for visit in followed.dropped
    ]
    for event in followed.events:
        at = time_of(event.time_us)
        if at < announce_from:
            continue
        visit = event.visit
        found.notices.append(
            {
                "kind": event.kind,
                "device_id": device.id,
                "provider_id": device.provider_id,
                "customer_id": visit.customer_id,
                "visit_id": visit_id(device.seq, visit.geofence_id, visit.enter_us),
                "geofence_id": visit.geofence_id,
                "geofence_name": names.get(visit.geofence_id),
                "time": at,
                "lat": event.lat,
                "lon": event.lon,
            }
        )


async def _write(session: AsyncSession, found: _Round, existing: Collection[str]) -> None:
    """The round's visits (of geofences that still exist: a deleted one took its visits with
    it), the pending ones left too early deleted, and the notice of enters and exits."""
    rows = [row for row in found.rows if row["geofence_id"] in existing]
    if found.dropped:
        await session.execute(delete(GeofenceVisit).where(GeofenceVisit.id.in_(found.dropped)))
    if rows:
        table = GeofenceVisit.__table__
        await bulk.write_rows(await session.connection(), table, rows, update_on=("id",))
    notices = [n for n in found.notices if n["geofence_id"] in existing]
    if notices:
        ids = tuple(n["visit_id"] for n in notices)
        devices = tuple(dict.fromkeys(n["device_id"] for n in notices))
        note(
            session,
            Change(service.VISIT_CHANGE, ids, None, None, devices, tuple(notices)),
        )


async def _stored_states(
    session: AsyncSession, devices: Sequence[StepDevice]
) -> dict[str, DeviceVisits]:
    """The open and pending visits of devices the step does not hold: one query per thousand."""
    found = {device.id: DeviceVisits() for device in devices}
    for chunk in id_chunks(list(found), service.DEVICES_PER_QUERY):
        statement = select(GeofenceVisit).where(
            GeofenceVisit.device_id.in_(chunk), GeofenceVisit.exit_time.is_(None)
        )
        for row in (await session.execute(statement)).scalars():
            state = found[row.device_id]
            state.open[row.geofence_id] = OpenVisit(
                row.geofence_id, row.provider_id, row.customer_id, time_us(row.enter_time),
                row.enter_lat, row.enter_lon, row.distance_m, row.counted,
            )  # fmt: skip
            state.last = (time_us(row.last_time), row.last_lat, row.last_lon)
    return found
