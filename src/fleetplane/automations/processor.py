"""The automations step of the telemetry pipeline: each device's new messages go through the
enabled rules of its customer (`rules.evaluate`), from each rule's state on the device; what
fires is recorded as notifications with their deliveries (`notifications.service.record`),
and the states are written, in the round's transaction (a statement per table).

A round reads little: one query checks the customers' rules against the ones held in memory
(their number and newest change), the rules are read again only when that changed; the states
of the devices that follow on are the ones this step left in memory. The states of the
`connection_lost` rules are written by the connection watch in the server's process: the step
reads the active ones each round (of customers that have such rules), clears them when their
device speaks again and fires the `connection_restored` rules."""

from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.automations import service
from fleetplane.automations.rules import (
    IGNITION_TRIGGERS,
    DeviceFacts,
    Fired,
    Rule,
    RuleState,
    evaluate,
    position_of,
)
from fleetplane.automations.service import Fingerprint
from fleetplane.customers import service as customers
from fleetplane.drivers import service as drivers
from fleetplane.geofences import service as geofences
from fleetplane.notifications import service as notifications
from fleetplane.notifications.service import Firing
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition, SensorType
from fleetplane.steps.contract import DeviceMessages, StepDevice, in_slices
from fleetplane.telemetry import Message

_NO_RULES: Fingerprint = (0, None)


class AutomationsStep:
    name = service.STEP_NAME
    reads_filtered = False  # only the messages the device's validity filter kept

    def __init__(self) -> None:
        # Each customer's enabled rules, and the fingerprint they were read under.
        self._rules: dict[str, tuple[Fingerprint, list[Rule]]] = {}
        # Each device's rule states after its last round here (automation id -> state),
        # trusted for the devices that follow on while the rules stay the same.
        self._states: dict[str, dict[str, RuleState]] = {}

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
        work: list[tuple[DeviceMessages, list[Rule]]] = []
        for batch in batches:
            watching = [
                rule
                for rule in rules.get(batch.device.customer_id or "", ())
                if _watches(rule, batch.device.id, sensor_defs)
            ]
            if watching:
                work.append((batch, watching))
        if not work:
            return
        states = await self._states_of(session, work)
        facts = await _facts(session, work, sensor_defs, states)
        lost = await _lost_states(session, rules, customer_ids, [b.device.id for b, _ in work])
        fired: list[tuple[str, Fired]] = []
        written: list[tuple[Rule, str, RuleState]] = []
        async for part in in_slices(work):
            for batch, watching in part:
                device_id = batch.device.id
                device_states = states[device_id]
                for rule in watching:
                    state = device_states.setdefault(rule.id, RuleState())
                    before = state.evaluated_until
                    if rule.type == "connection_restored":
                        found = _restored(rule, state, batch.messages, lost.get(device_id, []))
                    else:
                        found = evaluate(rule, state, batch.messages, facts[device_id])
                    fired += [(device_id, f) for f in found]
                    if state.evaluated_until != before:
                        written.append((rule, device_id, state))
                for rule, state in lost.get(device_id, []):
                    state.active, state.since, state.fired = False, None, False
                    state.evaluated_until = batch.messages[-1].device_time
                    written.append((rule, device_id, state))
        firings = await _firings(session, fired)
        await notifications.record(session, firings)
        await service.write_states(session, written)
        for batch, _ in work:
            self._states[batch.device.id] = states[batch.device.id]

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Nothing to undo: what fired stays fired, and each state's `evaluated_until` keeps
        the late messages from being evaluated again."""
        self._states.pop(device.id, None)
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
                self._states.clear()  # states of changed rules: read again
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

    async def _states_of(
        self, session: AsyncSession, work: Sequence[tuple[DeviceMessages, list[Rule]]]
    ) -> dict[str, dict[str, RuleState]]:
        """Copies of the devices' states (those in memory for devices that follow on)."""
        states: dict[str, dict[str, RuleState]] = {}
        unknown = []
        for batch, _ in work:
            kept = self._states.get(batch.device.id)
            if batch.follows_on and kept is not None:
                states[batch.device.id] = {key: state.copy() for key, state in kept.items()}
            else:
                unknown.append(batch.device.id)
        if unknown:
            states.update(await service.states_of(session, unknown))
        return states


def _watches(rule: Rule, device_id: str, sensor_defs: dict[str, SensorDefinition]) -> bool:
    if rule.type == "connection_lost" or not rule.watches(device_id):
        return False
    if rule.type == "sensor_range":
        sensor = sensor_defs.get(str(rule.trigger["sensor_id"]))
        return sensor is not None and sensor.device_id == device_id
    return True


async def _facts(
    session: AsyncSession,
    work: Sequence[tuple[DeviceMessages, list[Rule]]],
    sensor_defs: dict[str, SensorDefinition],
    states: dict[str, dict[str, RuleState]],
) -> dict[str, DeviceFacts]:
    """What the devices' rules need besides the messages: one query per kind needed."""
    needing_ignition = [
        b.device.id for b, rs in work if any(r.type in IGNITION_TRIGGERS for r in rs)
    ]
    needing_key = [b.device.id for b, rs in work if any(r.type == "driver_changed" for r in rs)]
    ignitions = (
        await sensors.ignition_sensors(session, needing_ignition) if needing_ignition else {}
    )
    keys = (
        await sensors.first_sensors_of_type(session, needing_key, SensorType.DRIVER_KEY)
        if needing_key
        else {}
    )
    inside = await _inside(session, [(b, rs) for b, rs in work if any(_in_fences(r) for r in rs)])
    visits = await _visits(session, work, states)
    facts = {}
    for batch, _ in work:
        device_id = batch.device.id
        own = {key: sensor for key, sensor in sensor_defs.items() if sensor.device_id == device_id}
        facts[device_id] = DeviceFacts(
            ignition=ignitions.get(device_id),
            driver_key=keys.get(device_id),
            sensors=own,
            inside=inside.get(device_id),
            visits=visits.get(device_id, {}),
            key_reading=drivers.reader_key,
        )
    return facts


def _in_fences(rule: Rule) -> bool:
    """The rule asks which geofences each message is inside."""
    return rule.type == "geofence_dwell" or (
        rule.type == "speeding" and bool(rule.trigger.get("geofence_ids"))
    )


async def _inside(
    session: AsyncSession, work: Sequence[tuple[DeviceMessages, list[Rule]]]
) -> dict[str, list[frozenset[str] | None]]:
    """The geofences of its customer each message of the devices is inside (None: no
    position): one test per customer."""
    by_customer: dict[tuple[str, str], list[DeviceMessages]] = {}
    for batch, _ in work:
        owner = (batch.device.provider_id, batch.device.customer_id or "")
        by_customer.setdefault(owner, []).append(batch)
    found: dict[str, list[frozenset[str] | None]] = {}
    for (provider_id, customer_id), batches in by_customer.items():
        points = [
            (m.lat, m.lon)
            for b in batches
            for m in b.messages
            if m.lat is not None and m.lon is not None
        ]
        holding = iter(await geofences.geofences_at(session, provider_id, customer_id, points))
        for batch in batches:
            found[batch.device.id] = [
                frozenset(next(holding)) if m.has_position else None for m in batch.messages
            ]
    return found


async def _visits(
    session: AsyncSession,
    work: Sequence[tuple[DeviceMessages, list[Rule]]],
    states: dict[str, dict[str, RuleState]],
) -> dict[str, dict[int, list[tuple[str, str, str]]]]:
    """The visits' enters and exits at the devices' messages (device id -> message index ->
    (kind, geofence id, name)), after what the devices' enter and exit rules evaluated: one
    query per provider. Each is at the first message at or after the time it became known
    (an enter of a geofence with a dwell delay: once the delay has passed)."""
    ranges: dict[str, dict[str, tuple[datetime | None, datetime]]] = {}
    for batch, rules in work:
        watching = [r for r in rules if r.type in ("geofence_enter", "geofence_exit")]
        if not watching:
            continue
        evaluated = [
            states[batch.device.id].get(r.id, RuleState()).evaluated_until for r in watching
        ]
        after = None if None in evaluated else min(t for t in evaluated if t is not None)
        until = batch.messages[-1].device_time
        ranges.setdefault(batch.device.provider_id, {})[batch.device.id] = (after, until)
    found: dict[str, dict[int, list[tuple[str, str, str]]]] = {}
    times = {batch.device.id: [m.device_time for m in batch.messages] for batch, _ in work}
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
    message = messages[-1]
    at = message.device_time
    if not lost or (state.evaluated_until is not None and at <= state.evaluated_until):
        return []
    state.evaluated_until = at
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
