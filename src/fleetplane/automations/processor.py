"""The automations step of the telemetry pipeline: each device's new messages (those after
its mark: how far its rules evaluated its messages) go through the enabled rules of its
customer (`rules.evaluate`, each condition over all the messages at once), from each rule's
state on the device; what fires is recorded as notifications with their deliveries
(`notifications.service.record`), and the states that changed and the devices' marks are
written, in the round's transaction (a statement per table).

A round reads little: one query checks the customers' rules against the ones held in memory
(their number and newest change), the rules are read again only when that changed; the states
and marks of the devices that follow on are the ones this step left in memory, and so are the
geofences of the customers whose rules test positions (checked by their stamp). The states of the
`connection_lost` rules are written by the connection watch in the server's process: the step
reads the active ones each round (of customers that have such rules), clears them when their
device speaks again and fires the `connection_restored` rules."""

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.automations import service
from fleetplane.automations.rules import (
    IGNITION_TRIGGERS,
    DeviceFacts,
    DeviceRound,
    Fired,
    Inside,
    Rule,
    RuleState,
    evaluate,
    position_of,
)
from fleetplane.automations.service import DeviceMark, Fingerprint
from fleetplane.customers import service as customers
from fleetplane.drivers import service as drivers
from fleetplane.geofences import service as geofences
from fleetplane.geofences.service import FencesStamp
from fleetplane.messages.columns import Columns, from_messages
from fleetplane.notifications import service as notifications
from fleetplane.notifications.service import Firing
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.steps.contract import DeviceMessages, StepDevice, in_slices
from fleetplane.telemetry import Message

_NO_RULES: Fingerprint = (0, None)
# The message fields no rule looks at (left out of the columns).
_UNREAD = ("altitude", "course", "hdop", "outputs")
Customer = tuple[str, str]


@dataclass(slots=True)
class _Device:
    """A device as the step holds it: its rules' states (automation id -> state) and its
    mark (how far they evaluated its messages, the last speed told)."""

    states: dict[str, RuleState]
    mark: DeviceMark


@dataclass(frozen=True, slots=True)
class _Work:
    """A device of the round, the rules watching it and its messages they evaluate (those
    after its mark; none when all are late)."""

    batch: DeviceMessages
    rules: list[Rule]
    new: Sequence[Message]


@dataclass(frozen=True, slots=True)
class _Fences:
    """A customer's geofences as the step tests positions against them."""

    stamp: FencesStamp
    index: geofences.Index
    numbers: dict[str, int]  # geofence id -> its index in the index's ids


class AutomationsStep:
    name = service.STEP_NAME
    reads_filtered = False  # only the messages the device's validity filter kept

    def __init__(self) -> None:
        # Each customer's enabled rules, and the fingerprint they were read under.
        self._rules: dict[str, tuple[Fingerprint, list[Rule]]] = {}
        # Each device's states and mark after its last round here, trusted for the devices
        # that follow on while the rules stay the same (a failed round is not followed on:
        # what it changed here is read again).
        self._devices: dict[str, _Device] = {}
        # The geofences of the customers with rules that test positions.
        self._fences: dict[Customer, _Fences] = {}

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        customer_ids = {b.device.customer_id for b in batches if b.device.customer_id}
        if not customer_ids:
            return
        rules = await self._current_rules(session, customer_ids)
        sensor_ids = [
            str(rule.trigger["sensor_id"])
            for customer_id in customer_ids
            for rule in rules[customer_id]
            if rule.type == "sensor_range"
        ]
        sensor_defs = await sensors.definitions_by_id(session, sensor_ids) if sensor_ids else {}
        watched: list[tuple[DeviceMessages, list[Rule]]] = []
        for batch in batches:
            watching = [
                rule
                for rule in rules.get(batch.device.customer_id or "", ())
                if _watches(rule, batch.device.id, sensor_defs)
            ]
            if watching:
                watched.append((batch, watching))
        if not watched:
            return
        devices = await self._devices_of(session, [batch for batch, _ in watched])
        work = [
            _Work(batch, watching, _after(batch.messages, devices[batch.device.id].mark))
            for batch, watching in watched
        ]
        facts = await _facts(session, work, sensor_defs, devices)
        fences = await self._customer_fences(session, work)
        lost = await _lost_states(session, rules, customer_ids, [w.batch.device.id for w in work])
        fired: list[tuple[str, Fired]] = []
        written: list[tuple[Rule, str, RuleState]] = []
        marks: list[tuple[StepDevice, DeviceMark]] = []
        async for part in in_slices(work):
            evaluated = [w for w in part if w.new]
            # The slice's messages as columns in one go, each device's a view of them.
            together = from_messages([m for w in evaluated for m in w.new], unread=_UNREAD)
            rows, first = [], 0
            for w in evaluated:
                rows.append(together.rows(first, first + len(w.new)))
                first += len(w.new)
            inside = _inside(evaluated, rows, fences)
            for w, columns in zip(evaluated, rows, strict=True):
                device_id = w.batch.device.id
                device = devices[device_id]
                own = replace(facts[device_id], inside=inside.get(device_id))
                round_ = DeviceRound(w.new, columns, own, device.mark.speed)
                states = device.states
                for rule in w.rules:
                    state = states.get(rule.id)
                    if state is None:
                        state = states[rule.id] = RuleState()
                    if rule.type == "connection_restored":
                        found = _restored(rule, state, w.new, lost.get(device_id, []))
                        changed = bool(found)
                    else:
                        found, changed = evaluate(rule, state, round_)
                    if found:
                        fired += [(device_id, f) for f in found]
                    if changed:
                        written.append((rule, device_id, state))
                device.mark.evaluated_until = w.new[-1].device_time
                device.mark.speed = round_.last_speed()
                marks.append((w.batch.device, device.mark))
            for w in part:
                for rule, state in lost.get(w.batch.device.id, []):
                    state.active, state.since, state.fired = False, None, False
                    written.append((rule, w.batch.device.id, state))
        firings = await _firings(session, fired)
        await notifications.record(session, firings)
        await service.write_states(session, written)
        await service.write_marks(session, marks)
        for w in work:
            self._devices[w.batch.device.id] = devices[w.batch.device.id]

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Nothing to undo: what fired stays fired, and the device's `evaluated_until` keeps
        the late messages from being evaluated again."""
        self._devices.pop(device.id, None)
        return from_time

    async def _current_rules(
        self, session: AsyncSession, customer_ids: Collection[str]
    ) -> dict[str, list[Rule]]:
        prints = await service.fingerprints(session, customer_ids)
        stale = [
            customer_id
            for customer_id in customer_ids
            if self._rules.get(customer_id, (None,))[0] != prints.get(customer_id, _NO_RULES)
        ]
        if stale:
            if any(customer_id in self._rules for customer_id in stale):
                self._devices.clear()  # states of changed rules: read again
            fresh = await service.enabled_rules(session, stale)
            for customer_id in stale:
                print_ = prints.get(customer_id, _NO_RULES)
                self._rules[customer_id] = (print_, fresh[customer_id])
        rules = {customer_id: self._rules[customer_id][1] for customer_id in customer_ids}
        # Schedules follow the customers' time zones, which may change without the rules.
        scheduled = {c for c, listed in rules.items() if any(rule.schedule for rule in listed)}
        if scheduled:
            zones = await customers.timezones(session, scheduled)
            for customer_id in scheduled:
                zone = ZoneInfo(zones.get(customer_id, "UTC"))
                if any(rule.timezone != zone for rule in rules[customer_id]):
                    moved = [replace(rule, timezone=zone) for rule in rules[customer_id]]
                    self._rules[customer_id] = (self._rules[customer_id][0], moved)
                    rules[customer_id] = moved
        return rules

    async def _devices_of(
        self, session: AsyncSession, batches: Sequence[DeviceMessages]
    ) -> dict[str, _Device]:
        """The devices' states and marks (those in memory for devices that follow on)."""
        found: dict[str, _Device] = {}
        unknown = []
        for batch in batches:
            kept = self._devices.get(batch.device.id)
            if batch.follows_on and kept is not None:
                found[batch.device.id] = kept
            else:
                unknown.append(batch.device.id)
        if unknown:
            states = await service.states_of(session, unknown)
            marks = await service.device_marks(session, unknown)
            for device_id in unknown:
                found[device_id] = _Device(states[device_id], marks[device_id])
        return found

    async def _customer_fences(
        self, session: AsyncSession, work: Sequence[_Work]
    ) -> dict[Customer, _Fences]:
        """The geofences of the customers whose devices have rules that test positions, read
        again only when their stamp moved: one query, and one per customer whose moved."""
        wanted = {
            (w.batch.device.provider_id, w.batch.device.customer_id or "")
            for w in work
            if w.new and any(_in_fences(rule) for rule in w.rules)
        }
        if not wanted:
            return {}
        stamps = await geofences.fences_stamps(session, wanted)
        for customer, stamp in stamps.items():
            known = self._fences.get(customer)
            if known is None or known.stamp != stamp:
                index = await geofences.customer_index(session, *customer)
                numbers = {g: number for number, g in enumerate(index.ids)}
                self._fences[customer] = _Fences(stamp, index, numbers)
        return {customer: self._fences[customer] for customer in wanted}


def _after(messages: Sequence[Message], mark: DeviceMark) -> Sequence[Message]:
    """The messages after the mark (oldest first): late data is not evaluated again."""
    if mark.evaluated_until is None:
        return messages
    first = bisect_right(messages, mark.evaluated_until, key=lambda m: m.device_time)
    return messages[first:]


def _watches(rule: Rule, device_id: str, sensor_defs: dict[str, SensorDefinition]) -> bool:
    if rule.type == "connection_lost" or not rule.watches(device_id):
        return False
    if rule.type == "sensor_range":
        sensor = sensor_defs.get(str(rule.trigger["sensor_id"]))
        return sensor is not None and sensor.device_id == device_id
    return True


async def _facts(
    session: AsyncSession,
    work: Sequence[_Work],
    sensor_defs: dict[str, SensorDefinition],
    devices: dict[str, _Device],
) -> dict[str, DeviceFacts]:
    """What the devices' rules need besides the messages (but the geofences they are in):
    one query per kind needed."""
    needing_ignition = [
        w.batch.device.id for w in work if any(r.type in IGNITION_TRIGGERS for r in w.rules)
    ]
    needing_key = [
        w.batch.device.id for w in work if any(r.type == "driver_changed" for r in w.rules)
    ]
    ignitions = (
        await sensors.ignition_sensors(session, needing_ignition) if needing_ignition else {}
    )
    keys = (
        await sensors.first_sensors_of_type(session, needing_key, SensorType.DRIVER_KEY)
        if needing_key
        else {}
    )
    visits = await _visits(session, work, devices)
    by_device: dict[str, dict[str, SensorDefinition]] = {}
    for key, sensor in sensor_defs.items():
        by_device.setdefault(sensor.device_id, {})[key] = sensor
    facts = {}
    for w in work:
        device_id = w.batch.device.id
        facts[device_id] = DeviceFacts(
            ignition=ignitions.get(device_id),
            driver_key=keys.get(device_id),
            sensors=by_device.get(device_id, {}),
            visits=visits.get(device_id, {}),
            key_reading=drivers.reader_key,
        )
    return facts


def _in_fences(rule: Rule) -> bool:
    """The rule asks which geofences each message is inside."""
    return rule.type == "geofence_dwell" or (
        rule.type == "speeding" and bool(rule.trigger.get("geofence_ids"))
    )


def _inside(
    work: Sequence[_Work], rows: Sequence[Columns], fences: dict[Customer, _Fences]
) -> dict[str, Inside]:
    """The geofences of its customer each message of the devices (of a slice) with rules that
    test positions is inside: one test per customer."""
    by_customer: dict[Customer, list[tuple[str, Columns]]] = {}
    for w, columns in zip(work, rows, strict=True):
        if any(_in_fences(rule) for rule in w.rules):
            owner = (w.batch.device.provider_id, w.batch.device.customer_id or "")
            by_customer.setdefault(owner, []).append((w.batch.device.id, columns))
    found: dict[str, Inside] = {}
    for customer, devices in by_customer.items():
        known = fences[customer]
        lat = np.concatenate([columns.lat for _, columns in devices])
        lon = np.concatenate([columns.lon for _, columns in devices])
        positions, indexes = known.index.pairs(lat, lon)
        firsts = np.cumsum([0] + [len(columns) for _, columns in devices]).tolist()
        bounds = np.searchsorted(positions, firsts).tolist()
        for number, (device_id, columns) in enumerate(devices):
            low, high = bounds[number], bounds[number + 1]
            found[device_id] = Inside(
                positioned=~np.isnan(columns.lat) & ~np.isnan(columns.lon),
                messages=positions[low:high] - firsts[number],
                fences=indexes[low:high],
                ids=known.index.ids,
                numbers=known.numbers,
            )
    return found


async def _visits(
    session: AsyncSession, work: Sequence[_Work], devices: dict[str, _Device]
) -> dict[str, dict[int, list[tuple[str, str, str]]]]:
    """The visits' enters and exits at the devices' messages to evaluate (device id ->
    message index -> (kind, geofence id, name)), after the device's mark: one query per
    provider. Each is at the first message at or after the time it became known (an enter of
    a geofence with a dwell delay: once the delay has passed)."""
    ranges: dict[str, dict[str, tuple[datetime | None, datetime]]] = {}
    for w in work:
        if w.new and any(r.type in ("geofence_enter", "geofence_exit") for r in w.rules):
            device = w.batch.device
            after = devices[device.id].mark.evaluated_until
            ranges.setdefault(device.provider_id, {})[device.id] = (after, w.new[-1].device_time)
    found: dict[str, dict[int, list[tuple[str, str, str]]]] = {}
    times = {w.batch.device.id: [m.device_time for m in w.new] for w in work}
    for provider_id, wanted in ranges.items():
        for event in await geofences.visit_events(session, provider_id, wanted):
            device_times = times[event.device_id]
            index = bisect_left(device_times, event.known_at)
            if index < len(device_times):
                at_message = found.setdefault(event.device_id, {}).setdefault(index, [])
                at_message.append((event.kind, event.geofence_id, event.geofence_name))
    return found


async def _lost_states(
    session: AsyncSession,
    rules: dict[str, list[Rule]],
    customer_ids: Collection[str],
    device_ids: Sequence[str],
) -> dict[str, list[tuple[Rule, RuleState]]]:
    """The devices' active `connection_lost` states (device id -> (rule, state))."""
    lost_rules = {
        rule.id: rule
        for customer_id in customer_ids
        for rule in rules[customer_id]
        if rule.type == "connection_lost"
    }
    if not lost_rules:
        return {}
    states = await service.states_of(
        session, device_ids, automation_ids=list(lost_rules), active_only=True
    )
    return {
        device_id: [(lost_rules[rule_id], state) for rule_id, state in by_rule.items()]
        for device_id, by_rule in states.items()
        if by_rule
    }


def _restored(
    rule: Rule,
    state: RuleState,
    messages: Sequence[Message],
    lost: Sequence[tuple[Rule, RuleState]],
) -> list[Fired]:
    """A device a `connection_lost` rule found lost speaks again: the newest message of the
    round fires the rule (inside its schedule, out of its cool-down)."""
    if not lost:
        return []
    message = messages[-1]
    at = message.device_time
    if not state.may_fire(rule, at):
        return []
    state.last_fired_at = at
    lost_since = min((s.since for _, s in lost if s.since is not None), default=None)
    data: dict[str, Any] = {
        "lost_since": lost_since.isoformat() if lost_since else None,
        "connection_lost_ids": sorted(lost_rule.id for lost_rule, _ in lost),
    }
    return [Fired(rule, message, data)]


async def _firings(session: AsyncSession, fired: Sequence[tuple[str, Fired]]) -> list[Firing]:
    """The notifications of what fired, in time order; driver keys named by their drivers."""
    wanted = {
        (f.rule.customer_id, key)
        for _, f in fired
        if f.rule.type == "driver_changed"
        for key in (f.data.get("driver_key"), f.data.get("previous_driver_key"))
        if key is not None
    }
    known = await drivers.drivers_by_code(session, wanted) if wanted else {}
    firings = []
    for device_id, f in sorted(fired, key=lambda pair: pair[1].message.device_time):
        data = dict(f.data)
        if f.rule.type == "driver_changed":
            for field in ("driver_key", "previous_driver_key"):
                found = known.get((f.rule.customer_id, data[field] or ""))
                data[field.replace("_key", "_id")] = found[0] if found else None
        firings.append(
            Firing(
                automation_id=f.rule.id,
                provider_id=f.rule.provider_id,
                customer_id=f.rule.customer_id,
                device_id=device_id,
                type=f.rule.type,
                time=f.message.device_time,
                position=position_of(f.message),
                data=data,
                actions=f.rule.actions,
            )
        )
    return firings
