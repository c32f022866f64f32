"""The rules of automations, with no database: when a rule fires on a device's messages.

- **Spells.** A state trigger (speeding, a sensor in or out of range, a parameter's value,
  idling, dwelling in a geofence) holds from the message where its condition becomes true to
  the one where it becomes false: a spell. It fires once per spell, at the first message of
  the spell that is `min_duration_s` (device time) after its start (idling: `min_s`, dwelling:
  `min_inside_s`, the longer of the two), inside the schedule and out of the cool-down. A
  message that says nothing of the condition (no speed, no such parameter) changes nothing.
- **Events.** An event trigger (ignition on or off, an input change, a driver change, an alarm,
  a geofence entered or left) fires at the message where it happens, inside the schedule and
  out of the cool-down; `min_duration_s` does not apply. The level before the first message a
  rule sees on a device is unknown: it is no change.
- **Schedule.** Windows of week days and local times in the customer's time zone; a window
  whose end is before its start ends on the next day. The message's time decides.
- **Cool-down.** No firing within `cooldown_s` (device time) of the rule's previous firing on
  the device.
- **Late data.** A message at or before the device's `evaluated_until` for the rule is not
  evaluated: nothing about the past fires twice.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fleetplane.sensors.calculation import (
    SensorDefinition,
    as_number,
    compute_value,
    read_parameter,
)
from fleetplane.telemetry import Message

# The trips' default minimum moving speed: slower with the ignition on is idling.
MIN_MOVING_SPEED_KMH = 5.0
# Parameters an alarm (SOS) arrives in.
ALARM_PARAMETERS = ("SOS", "sos", "alarm")

LEVEL_TRIGGERS = frozenset({"speeding", "sensor_range", "parameter", "idling", "geofence_dwell"})
EVENT_TRIGGERS = frozenset(
    {"ignition_on", "ignition_off", "input_change", "alarm", "driver_changed"}
)
GEOFENCE_TRIGGERS = frozenset({"geofence_enter", "geofence_exit", "geofence_dwell"})
# Evaluated outside the message loop: by the connection watch and on a lost device's return.
CONNECTION_TRIGGERS = frozenset({"connection_lost", "connection_restored"})
IGNITION_TRIGGERS = frozenset({"ignition_on", "ignition_off", "idling"})


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start_s: int  # seconds after local midnight
    end_s: int  # exclusive; below start_s: on the next day


@dataclass(frozen=True, slots=True)
class Rule:
    """An enabled automation, as evaluation needs it."""

    id: str
    provider_id: str
    customer_id: str
    type: str
    trigger: Mapping[str, Any]
    device_ids: frozenset[str]  # empty: all the customer's devices
    schedule: tuple[Window, ...]
    timezone: ZoneInfo
    min_duration_s: int
    cooldown_s: int
    actions: tuple[Mapping[str, Any], ...]

    def watches(self, device_id: str) -> bool:
        return not self.device_ids or device_id in self.device_ids

    def in_schedule(self, at: datetime) -> bool:
        if not self.schedule:
            return True
        local = at.astimezone(self.timezone)
        day = local.weekday()
        second = local.hour * 3600 + local.minute * 60 + local.second
        for window in self.schedule:
            if window.start_s < window.end_s:
                if day in window.days and window.start_s <= second < window.end_s:
                    return True
            elif (day in window.days and second >= window.start_s) or (
                (day - 1) % 7 in window.days and second < window.end_s
            ):
                return True
        return False

    def required_s(self) -> float:
        """How long a spell must last before it fires."""
        own = {"idling": "min_s", "geofence_dwell": "min_inside_s"}.get(self.type)
        return float(max(self.min_duration_s, int(self.trigger[own]) if own else 0))


def windows_of(
    schedule: Iterable[Mapping[str, Any]], day_names: Sequence[str]
) -> tuple[Window, ...]:
    """The stored schedule (`days`, `from`, `to`) as windows."""

    def seconds(text: str) -> int:
        hours, minutes = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60

    return tuple(
        Window(
            frozenset(day_names.index(day) for day in window["days"]),
            seconds(window["from"]),
            seconds(window["to"]),
        )
        for window in schedule
    )


@dataclass(slots=True)
class RuleState:
    """A rule's state on a device (the `automation_states` row)."""

    active: bool = False
    since: datetime | None = None
    fired: bool = False
    last_fired_at: datetime | None = None
    evaluated_until: datetime | None = None
    memory: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "RuleState":
        return replace(self, memory=dict(self.memory))

    def may_fire(self, rule: Rule, at: datetime) -> bool:
        cooldown = timedelta(seconds=rule.cooldown_s)
        if self.last_fired_at is not None and at - self.last_fired_at < cooldown:
            return False
        return rule.in_schedule(at)


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule fired at a message."""

    rule: Rule
    message: Message
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What evaluation needs of a device beside its messages: its ignition sensor, its
    driver key sensor, the sensors rules name (by id), and the geofences each message is in
    (by message index, for rules with geofences)."""

    ignition: SensorDefinition | None = None
    driver_key: SensorDefinition | None = None
    sensors: Mapping[str, SensorDefinition] = field(default_factory=dict)
    # The customer's geofences each message is inside (None: a message without a position),
    # for rules with geofences; and the visits' enters and exits at each message (by index:
    # (kind, geofence id, geofence name)).
    inside: Sequence[frozenset[str] | None] | None = None
    visits: Mapping[int, Sequence[tuple[str, str, str]]] = field(default_factory=dict)
    # A message's driver key reading: (read at all, the key or None when the reader is empty).
    key_reading: Callable[[Message, SensorDefinition | None], tuple[bool, str | None]] | None = None


def evaluate(
    rule: Rule, state: RuleState, messages: Sequence[Message], facts: DeviceFacts
) -> list[Fired]:
    """Runs a device's messages (oldest first) through a rule from `state`, which it updates;
    what fired."""
    fired: list[Fired] = []
    evaluated = state.evaluated_until
    for index, message in enumerate(messages):
        at = message.device_time
        if evaluated is not None and at <= evaluated:
            continue
        if rule.type in EVENT_TRIGGERS or rule.type in ("geofence_enter", "geofence_exit"):
            for data in _events(rule, state, message, index, facts):
                if state.may_fire(rule, at):
                    state.last_fired_at = at
                    fired.append(Fired(rule, message, data))
        else:
            found = _level(rule, state, message, index, facts)
            if found is not None:
                holds, data = found
                if holds and not state.active:
                    state.active, state.since, state.fired = True, at, False
                elif not holds and state.active:
                    state.active, state.since, state.fired = False, None, False
                if state.active and not state.fired and state.since is not None:
                    held_s = (at - state.since).total_seconds()
                    if held_s >= rule.required_s() and state.may_fire(rule, at):
                        state.fired, state.last_fired_at = True, at
                        data = data | {"since": state.since.isoformat(), "held_s": held_s}
                        fired.append(Fired(rule, message, data))
        state.evaluated_until = at
    return fired


def _level(
    rule: Rule, state: RuleState, message: Message, index: int, facts: DeviceFacts
) -> tuple[bool, dict[str, Any]] | None:
    """Whether the rule's condition holds at the message, and what it saw; None when the
    message does not tell."""
    trigger = rule.trigger
    if rule.type == "speeding":
        if message.speed is None:
            return None
        limit = float(trigger["speed"])
        data: dict[str, Any] = {"speed": message.speed, "limit": limit}
        holds = message.speed > limit
        if trigger.get("geofence_ids"):
            inside = _inside_of(rule, index, facts)
            if inside is None:
                return None
            holds = holds and bool(inside)
            data["geofence_ids"] = sorted(inside)
        return holds, data
    if rule.type == "sensor_range":
        sensor = facts.sensors.get(str(trigger["sensor_id"]))
        if sensor is None:
            return None
        value = compute_value(sensor, message.params, message.inputs, message.outputs)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        low, high = trigger.get("min"), trigger.get("max")
        within = (low is None or value >= low) and (high is None or value <= high)
        holds = within if trigger.get("inside", True) else not within
        return holds, {"sensor_id": sensor.id, "sensor": sensor.name, "value": value,
                       "min": low, "max": high, "inside": within}  # fmt: skip
    if rule.type == "parameter":
        value = message.params.get(str(trigger["name"]))
        if value is None:
            return None
        compared = _compare(value, str(trigger["op"]), trigger["value"])
        if compared is None:
            return None
        return compared, {"parameter": trigger["name"], "value": value, "op": trigger["op"],
                          "threshold": trigger["value"]}  # fmt: skip
    if rule.type == "idling":
        ignition = _ignition(state, message, facts)
        if message.speed is not None:
            state.memory["speed"] = message.speed
        speed = state.memory.get("speed")
        if ignition is None or speed is None:
            return None
        return bool(ignition) and speed < MIN_MOVING_SPEED_KMH, {"speed": speed}
    if rule.type == "geofence_dwell":
        inside = _inside_of(rule, index, facts)
        if inside is None:
            return None
        # A spell: inside the watched geofences without a break (from one into another too).
        return bool(inside), {"geofence_ids": sorted(inside)}
    return None


def _inside_of(rule: Rule, index: int, facts: DeviceFacts) -> frozenset[str] | None:
    """The watched geofences the message is inside (any when the rule names none)."""
    if facts.inside is None or (inside := facts.inside[index]) is None:
        return None
    watched = rule.trigger.get("geofence_ids") or ()
    return inside & frozenset(watched) if watched else inside


def _events(
    rule: Rule, state: RuleState, message: Message, index: int, facts: DeviceFacts
) -> list[dict[str, Any]]:
    """The rule's events at the message (and the level it remembers updated)."""
    memory = state.memory
    kind = rule.type
    if kind in ("ignition_on", "ignition_off"):
        before = memory.get("ignition")
        now = _ignition(state, message, facts)
        if before is None or now is None or now == before:
            return []
        return [{"ignition": now}] if now == (kind == "ignition_on") else []
    if kind == "input_change":
        number = int(rule.trigger["input"])
        raw = read_parameter(f"in{number}", message.params, message.inputs, message.outputs)
        level = as_number(raw) if raw is not None else None
        if level is None:
            return []
        on = level != 0
        before = memory.get("input")
        memory["input"] = on
        wanted = rule.trigger.get("to", "any")
        if before is None or before == on or (wanted != "any" and on != (wanted == "on")):
            return []
        return [{"input": number, "from": "on" if before else "off", "to": "on" if on else "off"}]
    if kind == "alarm":
        raised = any(
            (value := message.params.get(name)) is not None and as_number(value) not in (None, 0)
            for name in ALARM_PARAMETERS
        )
        before = memory.get("alarm", False)
        memory["alarm"] = raised
        if not raised or before:
            return []
        return [{"alarm": next(n for n in ALARM_PARAMETERS if n in message.params)}]
    if kind == "driver_changed":
        if facts.key_reading is None:
            return []
        read, key = facts.key_reading(message, facts.driver_key)
        if not read:
            return []
        known = "driver_key" in memory
        before = memory.get("driver_key")
        memory["driver_key"] = key
        if not known or before == key:
            return []
        return [{"previous_driver_key": before, "driver_key": key}]
    if kind in ("geofence_enter", "geofence_exit"):
        wanted_kind = "enter" if kind == "geofence_enter" else "exit"
        watched = frozenset(rule.trigger.get("geofence_ids") or ())
        return [
            {"geofence_id": geofence_id, "geofence_name": name}
            for event_kind, geofence_id, name in facts.visits.get(index, ())
            if event_kind == wanted_kind and (not watched or geofence_id in watched)
        ]
    return []


def _ignition(state: RuleState, message: Message, facts: DeviceFacts) -> bool | None:
    """The ignition at the message as the device counters read it (the device's ignition
    sensor; a message without a value keeps the one before), remembered in the state."""
    if facts.ignition is not None:
        value = compute_value(facts.ignition, message.params, message.inputs, message.outputs)
        if value is not None:
            state.memory["ignition"] = bool(value)
    known = state.memory.get("ignition")
    return None if known is None else bool(known)


def _compare(value: Any, op: str, threshold: Any) -> bool | None:
    number, wanted = as_number(value), threshold
    if isinstance(wanted, int | float) and not isinstance(wanted, bool):
        if number is None:
            return None if op in ("gt", "lt") else op == "ne"
        return {
            "eq": number == wanted,
            "ne": number != wanted,
            "gt": number > wanted,
            "lt": number < wanted,
        }[op]
    if op in ("gt", "lt"):
        return None
    return (str(value) == str(wanted)) == (op == "eq")


def position_of(message: Message) -> dict[str, Any]:
    return {
        "lat": message.lat,
        "lon": message.lon,
        "speed": message.speed,
        "course": message.course,
        "time": message.device_time.isoformat(),
    }
