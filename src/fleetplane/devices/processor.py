"""The devices step of the telemetry pipeline: advance each device's live state.

Only messages newer than the state move it (late black-box data is stored, but the live state
already knows later news). The counters in the state (odometer, engine hours, ignition) are not
the intake's: the device counters step (`devices.counters`) sums them up after the commit,
late data included, and the intake's writes leave them as they are.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core import bulk
from fleetplane.core.changes import Change, ChangeHub, note
from fleetplane.devices.models import Device, DeviceState
from fleetplane.devices.service import DEVICE_CHANGE, DEVICE_STATE_CHANGE
from fleetplane.devices.validity import ValidityRules, mark_filtered
from fleetplane.messages.service import add_stored_params
from fleetplane.telemetry import Message

STATE_COLUMNS = [column.name for column in DeviceState.__table__.columns]
# The state's columns the counters step writes; the intake's states leave them as stored.
COUNTER_COLUMNS = ("odometer_m", "engine_seconds", "ignition", "counted_at")
# Devices send a few parameters per message; the state keeps the last value of each, bounded.
MAX_STATE_PARAMS = 500
# How long a process trusts the validity rules it read for a device, when another process
# changed them (its own changes it forgets at once).
RULES_TTL_SECONDS = 10.0
# The change notices (core.changes) that may change a device's rules: the device's own.
RULES_CHANGES = (DEVICE_CHANGE,)
DEVICES_PER_QUERY = 1000


@dataclass(frozen=True, slots=True)
class DeviceRules:
    """What the pipeline applies to a device's messages and changes only through the API."""

    validity: ValidityRules = field(default_factory=ValidityRules)


class DeviceRulesCache:
    """Each device's rules, read from the database and kept for a while, so a batch costs no
    query for them. A change committed in this process (by any session of `changes`' hub: a
    request, a job, the command line run beside the server) forgets them at once; other
    processes notice within the time to live."""

    def __init__(
        self,
        ttl_seconds: float = RULES_TTL_SECONDS,
        max_devices: int = 100_000,
        *,
        changes: ChangeHub | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_devices = max_devices
        self._entries: dict[str, tuple[DeviceRules, float]] = {}
        # Counts forgets: rules read while one happened may be older than it, so are not kept.
        self._forgets = 0
        if changes is not None:
            changes.subscribe(RULES_CHANGES, self._on_change)

    async def rules_of(
        self, session: AsyncSession, device_ids: list[str]
    ) -> dict[str, DeviceRules]:
        now = time.monotonic()
        found: dict[str, DeviceRules] = {}
        missing = []
        for device_id in device_ids:
            entry = self._entries.get(device_id)
            if entry is None or now - entry[1] > self.ttl:
                missing.append(device_id)
            else:
                found[device_id] = entry[0]
        if missing:
            forgets = self._forgets
            loaded = await _load_rules(session, missing)
            found.update(loaded)
            if forgets == self._forgets:
                self._keep(loaded, now)
        return found

    def forget(self, device_id: str) -> None:
        self._forgets += 1
        self._entries.pop(device_id, None)

    def _on_change(self, change: Change) -> None:
        for device_id in change.device_ids:
            self.forget(device_id)

    def _keep(self, loaded: dict[str, DeviceRules], now: float) -> None:
        if len(self._entries) + len(loaded) > self.max_devices:
            self._entries.clear()
        for device_id, rules in loaded.items():
            self._entries[device_id] = (rules, now)


async def _load_rules(session: AsyncSession, device_ids: list[str]) -> dict[str, DeviceRules]:
    validity: dict[str, ValidityRules] = {}
    for start in range(0, len(device_ids), DEVICES_PER_QUERY):
        chunk = device_ids[start : start + DEVICES_PER_QUERY]
        rows = await session.execute(select(Device.id, Device.validity).where(Device.id.in_(chunk)))
        validity.update((row[0], ValidityRules.from_settings(row[1])) for row in rows)
    return {
        device_id: DeviceRules(validity.get(device_id, ValidityRules())) for device_id in device_ids
    }


async def current_states(session: AsyncSession, device_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored states of these devices (one query per thousand devices), on the Core
    connection: rows as dicts, no ORM."""
    connection = await session.connection()
    states: dict[str, dict[str, Any]] = {}
    for start in range(0, len(device_ids), DEVICES_PER_QUERY):
        chunk = device_ids[start : start + DEVICES_PER_QUERY]
        result = await connection.execute(_STATES_SELECT.where(_STATE_DEVICE.in_(chunk)))
        states.update((row["device_id"], dict(row)) for row in result.mappings())
    return states


def apply_validity(
    by_device: dict[str, list[Message]],
    states: dict[str, dict[str, Any]],
    rules: dict[str, DeviceRules],
    now: datetime,
) -> None:
    """Flags the messages each device's validity filter rejects; the jump filter starts from
    the position of the stored state."""
    for device_id, messages in by_device.items():
        state = states.get(device_id)
        previous = None
        if state is not None and state["position_at"] is not None:
            previous = (state["position_at"], state["lat"], state["lon"])
        device_rules = rules.get(device_id)
        validity = device_rules.validity if device_rules else ValidityRules()
        mark_filtered(validity, messages, previous, now)


async def advance_states(
    session: AsyncSession,
    by_device: dict[str, list[Message]],
    states: dict[str, dict[str, Any]],
    rules: dict[str, DeviceRules],
) -> list[dict[str, Any]]:
    """Advances and stores the states; returns the ones that changed."""
    changed = []
    for device_id, messages in by_device.items():
        current = states.get(device_id)
        state = advance(current, device_id, messages)
        if state is not None and state is not current:
            changed.append(state)
    if changed:
        await write_states(session, changed)
    return changed


async def write_states(session: AsyncSession, states: list[dict[str, Any]]) -> None:
    """Stores live states (one upsert; the counters of a stored state are left as they are),
    and raises their notice: the states as written, which the device reads apply in place once
    committed."""
    connection = await session.connection()
    await bulk.write_rows(
        connection,
        DeviceState.__table__,
        states,
        update_on=("device_id",),
        keep=COUNTER_COLUMNS,
    )
    ids = tuple(state["device_id"] for state in states)
    values = tuple(written(state) for state in states)
    note(session, Change(DEVICE_STATE_CHANGE, ids, device_ids=ids, values=values))


def written(state: dict[str, Any]) -> dict[str, Any]:
    """The part of a state the intake writes: without the counters once the counters step
    has counted (the intake only carries their values along), with their starting values
    until then (a new device's, which its first write stores)."""
    if state["counted_at"] is None:
        return state
    return {name: value for name, value in state.items() if name not in COUNTER_COLUMNS}


def advance(
    state: dict[str, Any] | None,
    device_id: str,
    messages: list[Message],
) -> dict[str, Any] | None:
    """The state after `messages` (in any order); the same object when nothing is newer."""
    newest = None if state is None else state["last_message_at"]
    newer = sorted(
        (m for m in messages if not m.filtered and (newest is None or m.device_time > newest)),
        key=_device_time,
    )
    if not newer:
        return state
    # One copy per device, not per message; the stored state is left as it was.
    result = dict(state) if state else _empty(device_id)
    result["params"] = dict(result["params"] or {})
    for message in newer:
        if newest is not None and message.device_time <= newest:
            continue  # a second message of the same time: the first one counts
        _apply(result, message)
        newest = message.device_time
    return result


def _device_time(message: Message) -> datetime:
    return message.device_time


def state_changed(state: dict[str, Any]) -> dict[str, Any]:
    """The live event hub's news of a changed state. It carries the state as written: each
    event stream shapes it for its customer with `live.state_event`, the same shaping as the
    device reads, so the stream and the reads never disagree."""
    return {"type": "state", "device_id": state["device_id"], "state": written(state)}


def _empty(device_id: str) -> dict[str, Any]:
    state = dict.fromkeys(STATE_COLUMNS)
    state.update(device_id=device_id, odometer_m=0.0, engine_seconds=0.0, params={})
    return state


def _apply(state: dict[str, Any], message: Message) -> None:
    state["last_message_at"] = message.device_time
    state["last_received_at"] = message.received_at
    if message.inputs is not None:
        state["inputs"] = message.inputs
    if message.outputs is not None:
        state["outputs"] = message.outputs
    params = state["params"]
    add_stored_params(params, message)
    if len(params) > MAX_STATE_PARAMS:  # the newest parameters are kept
        state["params"] = dict(list(params.items())[-MAX_STATE_PARAMS:])
    if message.has_position:
        state.update(
            position_at=message.device_time,
            lat=message.lat,
            lon=message.lon,
            altitude=message.altitude,
            speed=message.speed,
            course=message.course,
            satellites=None if message.satellites is None else int(message.satellites),
            hdop=message.hdop,
        )


_STATES_SELECT = select(*(DeviceState.__table__.c[name] for name in STATE_COLUMNS))
_STATE_DEVICE = DeviceState.__table__.c.device_id
