"""Automation rules: a customer's rules (what they watch must be the customer's: devices,
geofences, sensors), their webhook secret, and what the pipeline step and the connection
watch read and write of them (the enabled rules, each rule's state per device)."""

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.automations.models import Automation, AutomationDevice, AutomationState
from fleetplane.automations.rules import Rule, RuleState, windows_of
from fleetplane.automations.schemas import (
    DAYS,
    WAITING_TRIGGERS,
    AutomationCreate,
    AutomationUpdate,
)
from fleetplane.core.bulk import write_rows
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks
from fleetplane.core.errors import not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.customers import service as customers
from fleetplane.devices import service as devices
from fleetplane.geofences import service as geofences
from fleetplane.sensors import service as sensors
from fleetplane.steps.contract import StepDevice

# The kind of change notice (core.changes) raised when an automation changes.
AUTOMATION_CHANGE = "automation"
STEP_NAME = "automations"
_REQUIRED_FIELDS = ("name", "enabled", "trigger", "conditions", "actions")
_STATE = AutomationState.__table__
_STATE_KEY = ("automation_id", "device_id")
_DEVICE = AutomationDevice.__table__


# --------------------------------------------------------------------------------------------
# The API's rules
# --------------------------------------------------------------------------------------------


def list_query(
    provider_id: str, customer_id: str, *, enabled: bool | None = None, type_: str | None = None
) -> Select[Automation]:
    statement = select(Automation).where(
        Automation.provider_id == provider_id, Automation.customer_id == customer_id
    )
    if enabled is not None:
        statement = statement.where(Automation.enabled == enabled)
    if type_ is not None:
        statement = statement.where(Automation.trigger["type"].as_string() == type_)
    return statement


async def get(
    session: AsyncSession, provider_id: str, customer_id: str, automation_id: str
) -> Automation:
    automation = None
    if looks_like_id(automation_id):
        statement = list_query(provider_id, customer_id).where(Automation.id == automation_id)
        automation = (await session.execute(statement)).scalar_one_or_none()
    if automation is None:
        raise not_found("automation")
    return automation


def shape(automation: Automation) -> dict[str, Any]:
    """An automation as the API shows it (`AutomationOut`; never its secret)."""
    return {
        "id": automation.id,
        "name": automation.name,
        "enabled": automation.enabled,
        "trigger": automation.trigger,
        "conditions": automation.conditions,
        "actions": automation.actions,
        "created_at": automation.created_at,
        "updated_at": automation.updated_at,
    }


async def create(
    session: AsyncSession, actor: Actor, customer_id: str, data: AutomationCreate
) -> Automation:
    values = _stored(data)
    await _check(session, actor.provider_id, customer_id, values["trigger"], values["conditions"])
    now = utcnow()
    automation = Automation(
        id=new_id("aut"),
        provider_id=actor.provider_id,
        customer_id=customer_id,
        webhook_secret=secrets.token_hex(32),
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(automation)
    await session.flush()
    await audit.record(
        session, actor, "automation.create", "automation", automation.id, values, customer_id
    )
    _note(session, automation)
    return automation


async def update(
    session: AsyncSession,
    actor: Actor,
    customer_id: str,
    automation_id: str,
    data: AutomationUpdate,
) -> Automation:
    automation = await get(session, actor.provider_id, customer_id, automation_id)
    for name in _REQUIRED_FIELDS:
        if name in data.model_fields_set and getattr(data, name) is None:
            raise validation_error(["body", name], "may not be null")
    changes = {
        name: value for name, value in _stored(data).items() if name in data.model_fields_set
    }
    trigger = changes.get("trigger", automation.trigger)
    conditions = changes.get("conditions", automation.conditions)
    if "trigger" in changes or "conditions" in changes:
        await _check(session, actor.provider_id, customer_id, trigger, conditions)
    if "trigger" in changes and changes["trigger"] != automation.trigger:
        # Another trigger: what the states say of the old one means nothing to it.
        await session.execute(
            delete(AutomationState).where(
                AutomationState.customer_id == customer_id,
                AutomationState.automation_id == automation.id,
            )
        )
    for name, value in changes.items():
        setattr(automation, name, value)
    automation.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session, actor, "automation.update", "automation", automation.id, changes, customer_id
    )
    _note(session, automation)
    return automation


async def delete_automation(
    session: AsyncSession, actor: Actor, customer_id: str, automation_id: str
) -> None:
    automation = await get(session, actor.provider_id, customer_id, automation_id)
    await session.delete(automation)
    await session.flush()
    details = {"name": automation.name}
    await audit.record(
        session, actor, "automation.delete", "automation", automation.id, details, customer_id
    )
    _note(session, automation)


async def rotate_secret(
    session: AsyncSession, actor: Actor, customer_id: str, automation_id: str
) -> str:
    """A new webhook secret for the automation (the old one no longer signs)."""
    automation = await get(session, actor.provider_id, customer_id, automation_id)
    automation.webhook_secret = secrets.token_hex(32)
    await session.flush()
    await audit.record(
        session, actor, "automation.rotate_secret", "automation", automation.id, {}, customer_id
    )
    return automation.webhook_secret


def _stored(data: AutomationCreate | AutomationUpdate) -> dict[str, Any]:
    """The body's fields as stored (JSON: the schedule's `from` by its name)."""
    return data.model_dump(mode="json", by_alias=True, exclude_none=False)


def _note(session: AsyncSession, automation: Automation) -> None:
    note(
        session,
        Change(
            AUTOMATION_CHANGE,
            (automation.id,),
            automation.provider_id,
            (automation.customer_id,),
        ),
    )


async def _check(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    trigger: Mapping[str, Any],
    conditions: Mapping[str, Any],
) -> None:
    """What the rule names is the customer's, and its trigger type is available (a 422 naming
    the field otherwise)."""
    kind = trigger["type"]
    if kind in WAITING_TRIGGERS:
        raise validation_error(
            ["body", "trigger", "type"],
            f"The trigger type {kind!r} is not available yet: it waits for the "
            f"{WAITING_TRIGGERS[kind]} module.",
        )
    device_ids = list(conditions.get("device_ids") or [])
    if device_ids:
        own = await devices.customer_device_ids(session, provider_id, customer_id)
        _require_each(device_ids, own, ["body", "conditions", "device_ids"], "device")
    geofence_ids = list(trigger.get("geofence_ids") or [])
    if geofence_ids:
        shown = geofences.list_query(provider_id, customer_id).subquery()
        statement = select(shown.c.id).where(
            shown.c.id.in_([g for g in geofence_ids if looks_like_id(g)])
        )
        known = set((await session.execute(statement)).scalars())
        _require_each(geofence_ids, known, ["body", "trigger", "geofence_ids"], "geofence")
    if kind == "sensor_range":
        await _check_sensor(session, provider_id, customer_id, trigger, device_ids)


async def _check_sensor(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    trigger: Mapping[str, Any],
    device_ids: Sequence[str],
) -> None:
    loc: list[str | int] = ["body", "trigger", "sensor_id"]
    sensor_id = str(trigger["sensor_id"])
    found = await sensors.definitions_by_id(session, [sensor_id])
    sensor = found.get(sensor_id)
    own = await devices.customer_device_ids(session, provider_id, customer_id)
    if sensor is None or sensor.device_id not in own:
        raise validation_error(loc, f"No such sensor {sensor_id!r} on the customer's devices.")
    if device_ids and sensor.device_id not in device_ids:
        raise validation_error(
            loc, "The sensor's device is not among conditions.device_ids: the rule would watch "
            "nothing.",
        )  # fmt: skip


def _require_each(
    ids: Sequence[str], known: Collection[str], loc: list[str | int], what: str
) -> None:
    for index, item in enumerate(ids):
        if item in ids[:index]:
            raise validation_error([*loc, index], f"repeats {what} {item!r}")
        if item not in known:
            raise validation_error([*loc, index], f"No such {what} {item!r} of the customer.")


# --------------------------------------------------------------------------------------------
# What the pipeline step and the connection watch read and write
# --------------------------------------------------------------------------------------------

# (number of rules, newest change): a customer's rules changed when it differs.
Fingerprint = tuple[int, datetime | None]


async def fingerprints(
    session: AsyncSession, customer_ids: Collection[str]
) -> dict[str, Fingerprint]:
    """Each customer's rules' fingerprint (customers without rules are left out): one query."""
    found: dict[str, Fingerprint] = {}
    for chunk in id_chunks(sorted(customer_ids)):
        statement = (
            select(Automation.customer_id, func.count(), func.max(Automation.updated_at))
            .where(Automation.customer_id.in_(chunk))
            .group_by(Automation.customer_id)
        )
        for customer_id, count, newest in await session.execute(statement):
            found[customer_id] = (count, newest)
    return found


async def enabled_rules(
    session: AsyncSession, customer_ids: Collection[str], trigger_type: str | None = None
) -> dict[str, list[Rule]]:
    """The customers' enabled rules (every customer a key; None: every customer's), oldest
    first, with the customers' time zones."""
    statement = select(Automation).where(Automation.enabled == true())
    if trigger_type is not None:
        statement = statement.where(Automation.trigger["type"].as_string() == trigger_type)
    rows: list[Automation] = []
    for chunk in id_chunks(sorted(customer_ids)):
        chunked = statement.where(Automation.customer_id.in_(chunk)).order_by(Automation.id)
        rows += (await session.execute(chunked)).scalars()
    zones = await customers.timezones(session, {row.customer_id for row in rows})
    found: dict[str, list[Rule]] = {customer_id: [] for customer_id in customer_ids}
    for row in rows:
        found.setdefault(row.customer_id, []).append(
            rule_of(row, ZoneInfo(zones.get(row.customer_id, "UTC")))
        )
    return found


async def rules_of_type(session: AsyncSession, trigger_type: str) -> list[Rule]:
    """Every customer's enabled rules of a trigger type (for the connection watch)."""
    statement = (
        select(Automation)
        .where(
            Automation.enabled == true(),
            Automation.trigger["type"].as_string() == trigger_type,
        )
        .order_by(Automation.id)
    )
    rows = list((await session.execute(statement)).scalars())
    zones = await customers.timezones(session, {row.customer_id for row in rows})
    return [rule_of(row, ZoneInfo(zones.get(row.customer_id, "UTC"))) for row in rows]


def rule_of(row: Automation, timezone: ZoneInfo) -> Rule:
    conditions = row.conditions
    return Rule(
        id=row.id,
        provider_id=row.provider_id,
        customer_id=row.customer_id,
        type=row.trigger["type"],
        trigger=row.trigger,
        device_ids=frozenset(conditions.get("device_ids") or ()),
        schedule=windows_of(conditions.get("schedule") or (), DAYS),
        timezone=timezone,
        min_duration_s=int(conditions.get("min_duration_s") or 0),
        cooldown_s=int(conditions.get("cooldown_s") or 0),
        actions=tuple(row.actions),
    )


async def states_of(
    session: AsyncSession,
    device_ids: Collection[str],
    *,
    automation_ids: Iterable[str] = (),
    active_only: bool = False,
) -> dict[str, dict[str, RuleState]]:
    """device id -> automation id -> state, for the devices (every device a key), of the
    automations named (none named: all)."""
    found: dict[str, dict[str, RuleState]] = {device_id: {} for device_id in device_ids}
    rules = sorted(set(automation_ids))
    for chunk in id_chunks(sorted(device_ids)):
        statement = select(AutomationState).where(AutomationState.device_id.in_(chunk))
        if rules:
            statement = statement.where(AutomationState.automation_id.in_(rules))
        if active_only:
            statement = statement.where(AutomationState.active == true())
        for row in (await session.execute(statement)).scalars():
            found[row.device_id][row.automation_id] = RuleState(
                active=row.active,
                since=row.since,
                fired=row.fired,
                last_fired_at=row.last_fired_at,
                memory=dict(row.memory or {}),
            )
    return found


@dataclass(slots=True)
class DeviceMark:
    """How far a device's rules evaluated its messages, and the last speed they told (the
    `automation_devices` row)."""

    evaluated_until: datetime | None = None
    speed: float | None = None


async def device_marks(session: AsyncSession, device_ids: Collection[str]) -> dict[str, DeviceMark]:
    """The devices' marks (every device a key; a device never evaluated: an empty mark)."""
    found = {device_id: DeviceMark() for device_id in device_ids}
    for chunk in id_chunks(sorted(device_ids)):
        statement = select(
            AutomationDevice.device_id, AutomationDevice.evaluated_until, AutomationDevice.speed
        ).where(AutomationDevice.device_id.in_(chunk))
        for device_id, until, speed in await session.execute(statement):
            found[device_id] = DeviceMark(until, speed)
    return found


async def write_marks(
    session: AsyncSession, marks: Iterable[tuple[StepDevice, DeviceMark]]
) -> None:
    """Writes the devices' marks: one statement."""
    rows = [
        {
            "device_id": device.id,
            "provider_id": device.provider_id,
            "customer_id": device.customer_id,
            "evaluated_until": mark.evaluated_until,
            "speed": mark.speed,
        }
        for device, mark in marks
    ]
    connection = await session.connection()
    await write_rows(connection, _DEVICE, rows, update_on=("device_id",))


async def write_states(
    session: AsyncSession, states: Iterable[tuple[Rule, str, RuleState]]
) -> None:
    """Writes (rule, device id, state) rows: one statement."""
    rows = [
        {
            "automation_id": rule.id,
            "device_id": device_id,
            "provider_id": rule.provider_id,
            "customer_id": rule.customer_id,
            "active": state.active,
            "since": state.since,
            "fired": state.fired,
            "last_fired_at": state.last_fired_at,
            "memory": state.memory or None,
        }
        for rule, device_id, state in states
    ]
    connection = await session.connection()
    await write_rows(connection, _STATE, rows, update_on=_STATE_KEY)


async def lost_devices(
    session: AsyncSession, rules: Sequence[Rule], now: datetime
) -> list[tuple[Rule, Any, RuleState]]:
    """(rule, the device's live state, the rule's state on it) of the devices a
    `connection_lost` rule watches that sent nothing for its `after_s` and are not lost for it
    yet."""
    if not rules:
        return []
    by_customer: dict[str, list[Rule]] = {}
    for rule in rules:
        by_customer.setdefault(rule.customer_id, []).append(rule)
    longest_ago = now.timestamp() - min(int(rule.trigger["after_s"]) for rule in rules)
    contacts = await devices.last_contacts(
        session, list(by_customer), datetime.fromtimestamp(longest_ago, now.tzinfo)
    )
    if not contacts:
        return []
    states = await states_of(
        session, [contact.device_id for contact in contacts],
        automation_ids=[rule.id for rule in rules],
    )  # fmt: skip
    found = []
    for contact in contacts:
        for rule in by_customer.get(contact.customer_id or "", ()):
            if not rule.watches(contact.device_id):
                continue
            silent_s = (now - contact.last_received_at).total_seconds()
            state = states[contact.device_id].get(rule.id, RuleState())
            if silent_s >= int(rule.trigger["after_s"]) and not state.active:
                found.append((rule, contact, state))
    return found
