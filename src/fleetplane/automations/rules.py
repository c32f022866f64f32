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

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from fleetplane.messages.columns import BoolArray, Columns, FloatArray, IntArray, time_us
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
    memory: dict[str, Any] = field(default_factory=dict)

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
class Inside:
    """Which of its customer's geofences each of a device's messages is inside: the (message
    index, geofence index) pairs of `GeofenceIndex.pairs`, the geofences by their index in
    `ids` (id order)."""

    positioned: BoolArray  # the message has a position
    messages: IntArray
    fences: IntArray
    ids: Sequence[str]
    numbers: Mapping[str, int]  # geofence id -> its index in `ids`

    def within(self, watched: Sequence[str]) -> BoolArray:
        """Whether each message is inside one of the watched geofences (any, when none)."""
        mask = np.zeros(len(self.positioned), dtype=np.bool_)
        if not self.messages.size:
            return mask
        if not watched:
            mask[self.messages] = True
        elif numbers := [self.numbers[g] for g in watched if g in self.numbers]:
            chosen = np.zeros(len(self.ids), dtype=np.bool_)
            chosen[numbers] = True
            mask[self.messages[chosen[self.fences]]] = True
        return mask

    def ids_at(self, index: int, watched: Sequence[str]) -> list[str]:
        """The watched geofences (any, when none) the message at `index` is inside, sorted."""
        first, last = np.searchsorted(self.messages, [index, index + 1]).tolist()
        found = {self.ids[f] for f in self.fences[first:last].tolist()}
        return sorted(found & set(watched) if watched else found)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What evaluation needs of a device beside its messages: its ignition sensor, its
    driver key sensor, the sensors rules name (by id), the geofences its messages are in
    (for rules with geofences) and the visits' enters and exits at its messages (by message
    index: (kind, geofence id, geofence name))."""

    ignition: SensorDefinition | None = None
    driver_key: SensorDefinition | None = None
    sensors: Mapping[str, SensorDefinition] = field(default_factory=dict)
    inside: Inside | None = None
    visits: Mapping[int, Sequence[tuple[str, str, str]]] = field(default_factory=dict)
    # A message's driver key reading: (read at all, the key or None when the reader is empty).
    key_reading: Callable[[Message, SensorDefinition | None], tuple[bool, str | None]] | None = None


@dataclass(frozen=True, slots=True)
class Level:
    """A state trigger's condition over a device's messages: the messages that tell (their
    indexes, in order) and whether it holds at each; whether it holds at any and at all of
    them, for the rules it leaves as they are."""

    told: IntArray
    holds: BoolArray
    any: bool
    all: bool

    @classmethod
    def of(cls, told: IntArray, holds: BoolArray) -> "Level":
        count = int(np.count_nonzero(holds))
        return cls(told, holds, count > 0, count == len(holds))


# A level's or an event's readings at a device's messages: (message index, value), in order.
Readings = list[tuple[int, Any]]
_UNKNOWN = object()
_NOTHING: tuple[list[Fired], bool] = ([], False)


class DeviceRound:
    """A device's messages that its rules evaluate in a round (those after the device time up
    to which they evaluated its messages, oldest first), as the messages and as columns, and
    what evaluation needs besides. Each condition and reading is worked out once, over all
    the messages at once, for every rule that asks."""

    __slots__ = ("_cache", "columns", "facts", "messages", "speed_before")

    def __init__(
        self,
        messages: Sequence[Message],
        columns: Columns,
        facts: DeviceFacts,
        speed_before: float | None,
    ) -> None:
        self.messages = messages
        self.columns = columns
        self.facts = facts
        # The last speed the device's messages told before these (idling keeps it).
        self.speed_before = speed_before
        self._cache: dict[Hashable, Any] = {}

    def last_speed(self) -> float | None:
        """The last speed told, these messages included."""
        told = np.flatnonzero(~np.isnan(self.columns.speed))
        return self.speed_before if not told.size else self.messages[int(told[-1])].speed

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        found = self._cache.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._cache[key] = make()
        return found


def evaluate(rule: Rule, state: RuleState, round_: DeviceRound) -> tuple[list[Fired], bool]:
    """Runs a device's messages of a round through a rule from `state`, which it updates: what
    fired, and whether the state changed."""
    kind = rule.type
    if kind in LEVEL_TRIGGERS:
        return _spells(rule, state, round_)
    if kind in ("geofence_enter", "geofence_exit"):
        wanted_kind = "enter" if kind == "geofence_enter" else "exit"
        watched = frozenset(rule.trigger.get("geofence_ids") or ())
        visits = round_.facts.visits
        events = [
            (index, {"geofence_id": geofence_id, "geofence_name": name})
            for index in sorted(visits)
            for event_kind, geofence_id, name in visits[index]
            if event_kind == wanted_kind and (not watched or geofence_id in watched)
        ]
        fired = _fire(rule, state, round_, events)
        return fired, bool(fired)
    if kind in EVENT_TRIGGERS:
        return _changes(rule, state, round_)
    return _NOTHING


def _fire(
    rule: Rule, state: RuleState, round_: DeviceRound, events: Iterable[tuple[int, dict[str, Any]]]
) -> list[Fired]:
    """The events (message index, data), in order, that fire: inside the schedule, out of the
    cool-down."""
    fired = []
    for index, data in events:
        message = round_.messages[index]
        if state.may_fire(rule, message.device_time):
            state.last_fired_at = message.device_time
            fired.append(Fired(rule, message, data))
    return fired


# --------------------------------------------------------------------------------------------
# State triggers: spells
# --------------------------------------------------------------------------------------------


def _spells(rule: Rule, state: RuleState, round_: DeviceRound) -> tuple[list[Fired], bool]:
    """A state trigger over the round: the spells its condition makes from the state's (the
    condition at every message at once), then only their starts and the moments one may fire
    looked at one by one."""
    memory_changed = False
    if rule.type == "idling":
        level, data_at, memory_changed = _idling(state, round_)
    else:
        level, data_at = _level(rule, round_)
    told = level.told
    count = len(told)
    if (
        not count
        or (not state.active and not level.any)
        or (state.active and level.all and (state.fired or state.since is None))
    ):
        return [], memory_changed  # no spell begins, ends or fires
    before = (state.active, state.since, state.fired, state.last_fired_at)
    holds = level.holds
    previous = np.empty(count, dtype=np.bool_)
    previous[0] = state.active
    previous[1:] = holds[:-1]
    ends = iter(np.flatnonzero(~holds & previous).tolist())
    told_list = told.tolist()
    times = round_.columns.time_us[told].tolist()
    messages = round_.messages
    # [first, end (exclusive), since, fired] of each spell, by position among the told.
    spells: list[list[Any]] = []
    if state.active:
        spells.append([0, next(ends, count), state.since, state.fired])
    for first in np.flatnonzero(holds & ~previous).tolist():
        spells.append([first, next(ends, count), messages[told_list[first]].device_time, False])
    fired = []
    required_us = int(rule.required_s() * 1_000_000)
    for spell in spells:
        first, end, since, done = spell
        if done or since is None:
            continue
        # The first message held long enough, out of the cool-down, inside the schedule.
        earliest = time_us(since) + required_us
        if state.last_fired_at is not None:
            earliest = max(earliest, time_us(state.last_fired_at) + rule.cooldown_s * 1_000_000)
        position = bisect_left(times, earliest, first, end)
        while position < end and not rule.in_schedule(messages[told_list[position]].device_time):
            position += 1
        if position < end:
            message = messages[told_list[position]]
            at = message.device_time
            state.last_fired_at, spell[3] = at, True
            held_s = (at - since).total_seconds()
            data = data_at(told_list[position]) | {"since": since.isoformat(), "held_s": held_s}
            fired.append(Fired(rule, message, data))
    if holds[-1]:
        state.active, (_, _, state.since, state.fired) = True, spells[-1]
    else:
        state.active, state.since, state.fired = False, None, False
    after = (state.active, state.since, state.fired, state.last_fired_at)
    return fired, memory_changed or after != before


DataAt = Callable[[int], dict[str, Any]]


def _level(rule: Rule, round_: DeviceRound) -> tuple[Level, DataAt]:
    """Where the rule's condition holds among the messages that tell, and what it saw at a
    message."""
    trigger = rule.trigger
    messages = round_.messages
    watched = tuple(trigger.get("geofence_ids") or ())
    inside = round_.facts.inside
    if rule.type == "speeding":
        limit = float(trigger["speed"])

        def speeding_at(index: int) -> dict[str, Any]:
            data: dict[str, Any] = {"speed": messages[index].speed, "limit": limit}
            if watched and inside is not None:
                data["geofence_ids"] = inside.ids_at(index, watched)
            return data

        level = round_.cached(
            ("speeding", limit, watched), lambda: _speeding(round_, limit, watched)
        )
        return level, speeding_at
    if rule.type == "geofence_dwell":

        def dwell_at(index: int) -> dict[str, Any]:
            return {"geofence_ids": inside.ids_at(index, watched) if inside else []}

        return round_.cached(("dwell", watched), lambda: _dwell(round_, watched)), dwell_at
    if rule.type == "sensor_range":
        return _sensor_range(rule, round_)
    if rule.type == "parameter":
        name, op, threshold = str(trigger["name"]), str(trigger["op"]), trigger["value"]

        def parameter_at(index: int) -> dict[str, Any]:
            return {"parameter": trigger["name"], "value": messages[index].params.get(name),
                    "op": trigger["op"], "threshold": trigger["value"]}  # fmt: skip

        key = ("parameter", name, op, type(threshold).__name__, threshold)
        return round_.cached(key, lambda: _parameter(round_, name, op, threshold)), parameter_at
    return _NO_LEVEL, _no_data


_NO_LEVEL = Level.of(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.bool_))


def _no_data(index: int) -> dict[str, Any]:
    return {}


def _speeding(round_: DeviceRound, limit: float, watched: tuple[str, ...]) -> Level:
    speed = round_.columns.speed
    told = ~np.isnan(speed)
    with np.errstate(invalid="ignore"):
        holds = speed > limit
    if watched:
        inside = round_.facts.inside
        if inside is None:
            return _NO_LEVEL
        told &= inside.positioned
        holds &= inside.within(watched)
    index = np.flatnonzero(told)
    return Level.of(index, holds[index])


def _dwell(round_: DeviceRound, watched: tuple[str, ...]) -> Level:
    """A spell: inside the watched geofences without a break (from one into another too)."""
    inside = round_.facts.inside
    if inside is None:
        return _NO_LEVEL
    index = np.flatnonzero(inside.positioned)
    return Level.of(index, inside.within(watched)[index])


def _parameter(round_: DeviceRound, name: str, op: str, threshold: Any) -> Level:
    told, holds = [], []
    for index, message in enumerate(round_.messages):
        value = message.params.get(name)
        if value is not None and (compared := _compare(value, op, threshold)) is not None:
            told.append(index)
            holds.append(compared)
    return Level.of(np.array(told, dtype=np.int64), np.array(holds, dtype=np.bool_))


def _sensor_range(rule: Rule, round_: DeviceRound) -> tuple[Level, DataAt]:
    trigger = rule.trigger
    sensor = round_.facts.sensors.get(str(trigger["sensor_id"]))
    if sensor is None:
        return _NO_LEVEL, _no_data
    low, high = trigger.get("min"), trigger.get("max")
    keep_inside = trigger.get("inside", True)

    def values() -> tuple[IntArray, FloatArray]:
        told, found = [], []
        for index, m in enumerate(round_.messages):
            value = compute_value(sensor, m.params, m.inputs, m.outputs)
            if isinstance(value, int | float) and not isinstance(value, bool):
                told.append(index)
                found.append(value)
        return np.array(told, dtype=np.int64), np.array(found, dtype=np.float64)

    def value_at(index: int) -> Any:
        m = round_.messages[index]
        return compute_value(sensor, m.params, m.inputs, m.outputs)

    def within(value: Any) -> Any:
        return (low is None or value >= low) & (high is None or value <= high)

    def sensor_at(index: int) -> dict[str, Any]:
        value = value_at(index)
        return {"sensor_id": sensor.id, "sensor": sensor.name, "value": value,
                "min": low, "max": high, "inside": within(value)}  # fmt: skip

    told, found = round_.cached(("sensor", sensor.id), values)
    inside = np.asarray(within(found), dtype=np.bool_) & np.ones(len(found), dtype=np.bool_)
    return Level.of(told, inside if keep_inside else ~inside), sensor_at


def _idling(state: RuleState, round_: DeviceRound) -> tuple[Level, DataAt, bool]:
    """Idling: the ignition on (as the device's ignition sensor reads it; a message without a
    value keeps the one before, which the state remembers) and the speed (the device's last
    told) below the minimum moving speed."""
    readings = round_.cached("ignition", lambda: _ignition_readings(round_))
    start = state.memory.get("ignition")
    level, last_told = round_.cached(("idling", start), lambda: _idling_level(round_, start))
    changed = bool(readings) and (
        "ignition" not in state.memory or state.memory["ignition"] != readings[-1][1]
    )
    if readings:
        state.memory["ignition"] = readings[-1][1]
    speed_before = round_.speed_before
    messages = round_.messages

    def idling_at(index: int) -> dict[str, Any]:
        source = int(last_told[index])
        return {"speed": messages[source].speed if source >= 0 else speed_before}

    return level, idling_at, changed


def _idling_level(round_: DeviceRound, start: bool | None) -> tuple[Level, IntArray]:
    readings = round_.cached("ignition", lambda: _ignition_readings(round_))
    count = len(round_.messages)
    positions = np.arange(count)
    # The ignition at each message: -1 unknown, 0 off, 1 on.
    known = np.full(count, -1, dtype=np.int64)
    for index, value in readings:
        known[index] = int(value)
    source = np.maximum.accumulate(np.where(known >= 0, positions, -1))
    ignition = np.where(
        source >= 0, known[np.maximum(source, 0)], -1 if start is None else int(start)
    )
    speed = round_.columns.speed
    last_told = np.maximum.accumulate(np.where(np.isnan(speed), -1, positions))
    before = np.nan if round_.speed_before is None else round_.speed_before
    speeds = np.where(last_told >= 0, speed[np.maximum(last_told, 0)], before)
    index = np.flatnonzero((ignition >= 0) & ~np.isnan(speeds))
    holds = (ignition[index] == 1) & (speeds[index] < MIN_MOVING_SPEED_KMH)
    return Level.of(index, holds), last_told


# --------------------------------------------------------------------------------------------
# Event triggers: changes of a level
# --------------------------------------------------------------------------------------------


def _changes(rule: Rule, state: RuleState, round_: DeviceRound) -> tuple[list[Fired], bool]:
    """An event trigger over the round: the level it follows read at every message once, its
    changes found, from the level the state remembers (unknown: the first is no change)."""
    kind, memory, trigger = rule.type, state.memory, rule.trigger
    which: Hashable
    read: Callable[[DeviceRound], Readings]
    if kind in ("ignition_on", "ignition_off"):
        key, which, read = "ignition", "ignition", _ignition_readings
    elif kind == "input_change":
        number = int(trigger["input"])
        key, which, read = "input", ("input", number), lambda r: _input(r, number)
    elif kind == "alarm":
        key, which, read = "alarm", "alarm", _alarm
    elif kind == "driver_changed":
        if round_.facts.key_reading is None:
            return _NOTHING
        key, which, read = "driver_key", "driver_key", _driver_keys
    else:
        return _NOTHING
    readings: Readings = round_.cached(which, lambda: read(round_))
    if not readings:
        return _NOTHING
    if kind == "alarm":
        start: Any = memory.get(key, False)
    elif kind == "driver_changed":
        start = memory.get(key, _UNKNOWN)
    else:
        start = memory.get(key)
        start = _UNKNOWN if start is None else start
    inner = round_.cached(("changes", which), lambda: _inner_changes(readings))
    first_index, first_value = readings[0]
    changes = inner
    if start is not _UNKNOWN and start != first_value:
        changes = [(first_index, start, first_value), *inner]
    changed = key not in memory or memory[key] != readings[-1][1]
    memory[key] = readings[-1][1]
    events = []
    messages = round_.messages
    for index, before, now in changes:
        if kind in ("ignition_on", "ignition_off"):
            if now == (kind == "ignition_on"):
                events.append((index, {"ignition": now}))
        elif kind == "input_change":
            wanted = trigger.get("to", "any")
            if wanted == "any" or now == (wanted == "on"):
                events.append((index, {"input": number, "from": "on" if before else "off",
                                       "to": "on" if now else "off"}))  # fmt: skip
        elif kind == "alarm":
            if now:
                raised = next(n for n in ALARM_PARAMETERS if n in messages[index].params)
                events.append((index, {"alarm": raised}))
        else:
            events.append((index, {"previous_driver_key": before, "driver_key": now}))
    fired = _fire(rule, state, round_, events)
    return fired, changed or bool(fired)


def _inner_changes(readings: Readings) -> list[tuple[int, Any, Any]]:
    """(message index, level before, level now) where a reading differs from the one before."""
    return [
        (index, readings[number - 1][1], value)
        for number, (index, value) in enumerate(readings)
        if number and value != readings[number - 1][1]
    ]


def _ignition_readings(round_: DeviceRound) -> Readings:
    """The ignition as the device counters read it (the device's ignition sensor), at the
    messages with a value."""
    sensor = round_.facts.ignition
    if sensor is None:
        return []
    found = []
    for index, m in enumerate(round_.messages):
        value = compute_value(sensor, m.params, m.inputs, m.outputs)
        if value is not None:
            found.append((index, bool(value)))
    return found


def _input(round_: DeviceRound, number: int) -> Readings:
    found = []
    for index, m in enumerate(round_.messages):
        raw = read_parameter(f"in{number}", m.params, m.inputs, m.outputs)
        level = as_number(raw) if raw is not None else None
        if level is not None:
            found.append((index, level != 0))
    return found


def _alarm(round_: DeviceRound) -> Readings:
    return [
        (index, any(
            (value := m.params.get(name)) is not None and as_number(value) not in (None, 0)
            for name in ALARM_PARAMETERS
        ))
        for index, m in enumerate(round_.messages)
    ]  # fmt: skip


def _driver_keys(round_: DeviceRound) -> Readings:
    reading = round_.facts.key_reading
    assert reading is not None
    found = []
    for index, m in enumerate(round_.messages):
        read, key = reading(m, round_.facts.driver_key)
        if read:
            found.append((index, key))
    return found


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
