"""Device inventory rules: unique ids per channel, assignment to customers, passwords hashed.

A device's history (messages, commands, files, chat) belongs to the customer it happened for:
a customer sees it from the moment the device was assigned to them (`history_window`), and a
device's former customer does not see the device at all."""

import hashlib
import hmac
import os
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select, true
from sqlalchemy import update as update_rows
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.channels import service as channels
from fleetplane.core.changes import Change, note
from fleetplane.core.db import count_under_lock, id_chunks, lock_writers, rows_changed
from fleetplane.core.errors import conflict, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.timeutil import as_utc, utcnow
from fleetplane.customers import service as customers
from fleetplane.devices.models import Device, DeviceAssignment, DeviceState
from fleetplane.devices.schemas import UNIQUE_ID_PATTERN, DeviceCreate, DeviceUpdate

# Device ids per `IN (...)` list.
DEVICES_PER_QUERY = 1000
# The kinds of change notice (core.changes) of this domain: a device itself (name, channel,
# customer, validity rules...), and a device's live state as the pipeline writes it.
DEVICE_CHANGE = "device"
DEVICE_STATE_CHANGE = "device_state"
# The counters in a device's live state (`devices.counters`): values carry them as written.
DEVICE_COUNTERS_CHANGE = "device_counters"
# A longer silence than this is not counted as engine time in full (trip rules use the same):
# the device counters and the reports on time between messages count up to it.
MAX_GAP_SECONDS = 3600.0


def note_changed(
    session: AsyncSession, provider_id: str, device_ids: Iterable[str], *customer_ids: str | None
) -> None:
    """Raises the notice of changed devices, naming the customers whose devices they are or
    were (none: devices of no customer)."""
    ids = tuple(device_ids)
    customers = tuple(dict.fromkeys(c for c in customer_ids if c is not None))
    note(session, Change(DEVICE_CHANGE, ids, provider_id, customers, device_ids=ids))


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**12, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**12, r=8, p=1)
    return hmac.compare_digest(candidate.hex(), digest)


def list_query(
    provider_id: str,
    *,
    customer_id: str | None = None,
    unassigned: bool = False,
    unique_id: str | None = None,
    channel_id: str | None = None,
) -> Select[Device]:
    statement = select(Device).where(Device.provider_id == provider_id)
    if channel_id is not None:
        statement = statement.where(Device.channel_id == channel_id)
    if customer_id is not None:
        statement = statement.where(Device.customer_id == customer_id)
    if unassigned:
        statement = statement.where(Device.customer_id.is_(None))
    if unique_id is not None:
        statement = statement.where(Device.unique_id == unique_id)
    return statement


def customer_list_query(provider_id: str, customer_id: str) -> Select[Device]:
    return select(Device).where(
        Device.provider_id == provider_id, Device.customer_id == customer_id
    )


async def customer_device_ids(
    session: AsyncSession, provider_id: str, customer_id: str
) -> frozenset[str]:
    statement = customer_list_query(provider_id, customer_id).with_only_columns(Device.id)
    return frozenset((await session.execute(statement)).scalars())


async def require_customer_devices(
    session: AsyncSession, provider_id: str, customer_id: str, device_ids: Iterable[str]
) -> None:
    """`not_found` unless every one of them is the customer's device (a list's filter)."""
    wanted = set(device_ids)
    if not wanted:
        return
    if not all(looks_like_id(device_id) for device_id in wanted):
        raise not_found("device")
    theirs = await customer_device_ids(session, provider_id, customer_id)
    if not wanted <= theirs:
        raise not_found("device")


async def get(session: AsyncSession, provider_id: str, device_id: str) -> Device:
    return await _one(session, select(Device).where(Device.provider_id == provider_id), device_id)


async def get_for_customer(
    session: AsyncSession, provider_id: str, customer_id: str, device_id: str
) -> Device:
    return await _one(session, customer_list_query(provider_id, customer_id), device_id)


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """The part of a device's history its customer may see: what happened from `since` on,
    the start of the customer's current assignment of the device; everything (`since` None)
    when that is the device's first assignment, as no other customer's history precedes it."""

    device: Device
    since: datetime | None

    def covers(self, time_column: Any) -> ColumnElement[bool]:
        """A condition on a history table's time column: the row is inside the window."""
        return true() if self.since is None else time_column >= self.since

    def clamp(self, start: datetime | None) -> datetime | None:
        """The start of a requested range, moved up to the window's start when earlier."""
        if self.since is None:
            return start
        return self.since if start is None else max(as_utc(start), self.since)


def _history_windows_query(provider_id: str, customer_id: str) -> Select[Device, datetime | None]:
    return (
        select(Device, DeviceAssignment.history_from)
        .join(DeviceAssignment, DeviceAssignment.device_id == Device.id)
        .where(
            Device.provider_id == provider_id,
            Device.customer_id == customer_id,
            DeviceAssignment.customer_id == customer_id,
            DeviceAssignment.ended_at.is_(None),
        )
    )


async def history_window(
    session: AsyncSession, provider_id: str, customer_id: str, device_id: str
) -> HistoryWindow:
    """The customer's device and the window of its history they may see: every read of a
    device's history for a customer goes through here. `not_found` when the device is not
    the customer's (now)."""
    statement = _history_windows_query(provider_id, customer_id)
    row = None
    if looks_like_id(device_id):
        row = (await session.execute(statement.where(Device.id == device_id))).one_or_none()
    if row is None:
        raise not_found("device")
    return HistoryWindow(row[0], None if row[1] is None else as_utc(row[1]))


def history_windows_query(provider_id: str, customer_id: str) -> Select[str, datetime | None]:
    """(device_id, since) of each of the customer's devices: where the window of its history
    the customer may see starts (`history_window`; null: all of it), for reads of history
    across devices (join it on the device and keep the rows with a time from `since` on)."""
    return (
        select(Device.id.label("device_id"), DeviceAssignment.history_from.label("since"))
        .join(DeviceAssignment, DeviceAssignment.device_id == Device.id)
        .where(
            Device.provider_id == provider_id,
            Device.customer_id == customer_id,
            DeviceAssignment.customer_id == customer_id,
            DeviceAssignment.ended_at.is_(None),
        )
    )


async def history_windows(
    session: AsyncSession, provider_id: str, customer_id: str, device_ids: Iterable[str] | None
) -> list[HistoryWindow]:
    """`history_window` of several of the customer's devices (all of them when `device_ids`
    is None), by name; `not_found` when one named is not the customer's."""
    statement = _history_windows_query(provider_id, customer_id).order_by(Device.name, Device.id)
    if device_ids is None:
        rows = (await session.execute(statement)).all()
    else:
        wanted = list(dict.fromkeys(device_ids))
        if not all(looks_like_id(device_id) for device_id in wanted):
            raise not_found("device")
        rows = []
        for start in range(0, len(wanted), DEVICES_PER_QUERY):
            chunk = wanted[start : start + DEVICES_PER_QUERY]
            rows += (await session.execute(statement.where(Device.id.in_(chunk)))).all()
        if len(rows) != len(wanted):
            raise not_found("device")
        rows.sort(key=lambda row: (row[0].name, row[0].id))
    return [HistoryWindow(row[0], None if row[1] is None else as_utc(row[1])) for row in rows]


async def _one(session: AsyncSession, statement: Select[Device], device_id: str) -> Device:
    device = None
    if looks_like_id(device_id):
        device = (
            await session.execute(statement.where(Device.id == device_id))
        ).scalar_one_or_none()
    if device is None:
        raise not_found("device")
    return device


async def create(
    session: AsyncSession, actor: Actor, data: DeviceCreate, *, auto_registered: bool = False
) -> Device:
    values = data.model_dump(exclude={"password"})
    if data.customer_id is not None:
        await _require_customer(session, actor.provider_id, data.customer_id)
    await _require_channel(session, actor.provider_id, data.channel_id)
    await _require_free_unique_id(session, data.channel_id, data.unique_id)
    device = Device(
        id=new_id("dev"), provider_id=actor.provider_id, auto_registered=auto_registered, **values
    )
    if data.password:
        device.password_hash = hash_password(data.password)
    session.add(device)
    changes = {**values, **({"password": True} if data.password else {})}
    await audit.record(session, actor, "device.create", "device", device.id, changes)
    await _flush_unique(session, data.unique_id)
    if data.customer_id is not None:
        _open_assignment(session, device, data.customer_id, first=True)
        await session.flush()
    note_changed(session, device.provider_id, [device.id], device.customer_id)
    return device


async def update(session: AsyncSession, actor: Actor, device_id: str, data: DeviceUpdate) -> Device:
    if "customer_id" in data.model_fields_set:
        # Concurrent moves of one device go one after the other, each ending the assignment
        # period the one before it opened; read the device only under that lock.
        device_row = select(Device.id).where(
            Device.provider_id == actor.provider_id, Device.id == device_id
        )
        await lock_writers(session, device_row)
    device = await get(session, actor.provider_id, device_id)
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    if data.validity is not None:  # stored whole, so it reads back with its defaults
        changes["validity"] = data.validity.model_dump()
    for field in ("name", "unique_id", "channel_id"):
        if field in changes and changes[field] is None:
            raise validation_error(["body", field], "may not be null")
    if "channel_id" in changes:
        await _require_channel(session, actor.provider_id, changes["channel_id"])
    channel_id = changes.get("channel_id", device.channel_id)
    unique_id = changes.get("unique_id", device.unique_id)
    if (channel_id, unique_id) != (device.channel_id, device.unique_id):
        await _require_free_unique_id(session, channel_id, unique_id)
    if "password" in changes:
        password = changes.pop("password")
        device.password_hash = hash_password(password) if password else None
        changes["password"] = bool(password)
    action = "device.update"
    previous_customer = device.customer_id
    if "customer_id" in changes:
        action = await _assignment_action(session, actor, device, changes["customer_id"])
        if changes["customer_id"] != device.customer_id:
            await _reassign(session, device, changes["customer_id"])
    for field, value in changes.items():
        if field != "password":
            setattr(device, field, value)
    await audit.record(session, actor, action, "device", device.id, changes)
    await _flush_unique(session, device.unique_id)
    note_changed(session, device.provider_id, [device.id], previous_customer, device.customer_id)
    return device


async def _assignment_action(
    session: AsyncSession, actor: Actor, device: Device, customer_id: str | None
) -> str:
    if customer_id is None:
        return "device.unassign" if device.customer_id else "device.update"
    await _require_customer(session, actor.provider_id, customer_id)
    if device.customer_id is None:
        return "device.assign"
    return "device.move" if device.customer_id != customer_id else "device.update"


def _open_assignment(
    session: AsyncSession, device: Device, customer_id: str, *, first: bool
) -> None:
    now = utcnow()
    session.add(
        DeviceAssignment(
            id=new_id("das"),
            device_id=device.id,
            customer_id=customer_id,
            provider_id=device.provider_id,
            started_at=now,
            history_from=None if first else now,
        )
    )


async def _reassign(session: AsyncSession, device: Device, customer_id: str | None) -> None:
    """Ends the device's current assignment period and, for a customer, starts a new one."""
    await _end_assignments(session, device.provider_id, DeviceAssignment.device_id == device.id)
    if customer_id is not None:
        had_one = select(DeviceAssignment.id).where(
            DeviceAssignment.provider_id == device.provider_id,
            DeviceAssignment.device_id == device.id,
        )
        first = (await session.execute(had_one.limit(1))).first() is None
        _open_assignment(session, device, customer_id, first=first)


async def _end_assignments(
    session: AsyncSession, provider_id: str, which: ColumnElement[bool]
) -> None:
    await session.execute(
        update_rows(DeviceAssignment)
        .where(
            DeviceAssignment.provider_id == provider_id,
            DeviceAssignment.ended_at.is_(None),
            which,
        )
        .values(ended_at=utcnow())
    )


async def delete(session: AsyncSession, actor: Actor, device_id: str) -> None:
    device = await get(session, actor.provider_id, device_id)
    await session.delete(device)
    note_changed(session, device.provider_id, [device.id], device.customer_id)
    await audit.record(
        session, actor, "device.delete", "device", device.id, {"unique_id": device.unique_id}
    )
    await session.flush()


async def release_all(session: AsyncSession, actor: Actor, customer_id: str) -> int:
    """Returns every device of a customer to the unassigned inventory; how many there were."""
    await _end_assignments(session, actor.provider_id, DeviceAssignment.customer_id == customer_id)
    released = await rows_changed(
        session,
        update_rows(Device)
        .where(Device.provider_id == actor.provider_id, Device.customer_id == customer_id)
        .values(customer_id=None),
    )
    # Which devices is not read: the customer's devices, all of them, are no longer its.
    note(session, Change(DEVICE_CHANGE, (), actor.provider_id, (customer_id,)))
    return released


async def _require_customer(session: AsyncSession, provider_id: str, customer_id: str) -> None:
    if await customers.find(session, provider_id, customer_id) is None:
        raise validation_error(["body", "customer_id"], f"No such customer {customer_id!r}.")


async def _require_channel(session: AsyncSession, provider_id: str, channel_id: str) -> None:
    if await channels.find(session, provider_id, channel_id) is None:
        raise validation_error(["body", "channel_id"], f"No such channel {channel_id!r}.")


async def _require_free_unique_id(
    session: AsyncSession, channel_id: str | None, unique_id: str
) -> None:
    # Channels are platform-wide listeners, so the check spans providers; it says only "taken".
    statement = select(func.count()).where(
        Device.channel_id == channel_id, Device.unique_id == unique_id
    )
    if (await session.execute(statement)).scalar_one():
        raise conflict(f"A device with unique_id {unique_id!r} is already on this channel.")


async def find_on_channel(
    session: AsyncSession, channel_id: str, unique_id: str
) -> tuple[str, str | None] | None:
    """(device id, password hash) of the device a tracker logs in as, or None."""
    statement = select(Device.id, Device.password_hash).where(
        Device.channel_id == channel_id, Device.unique_id == unique_id
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1])


class RegistrationLimit:
    """How many unknown devices a channel may add by itself: so many a minute, so many in
    all. Anyone can reach a channel, so without it every made-up identifier became a device."""

    WINDOW_SECONDS = 60.0

    def __init__(self, per_minute: int, max_devices: int) -> None:
        self.per_minute = per_minute
        self.max_devices = max_devices
        self._recent: dict[str, deque[float]] = {}  # channel id -> times of its registrations

    def take_turn(self, channel_id: str) -> bool:
        """True (and counted) when the channel may register one more device this minute."""
        now = time.monotonic()
        recent = self._recent.setdefault(channel_id, deque())
        while recent and now - recent[0] >= self.WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self.per_minute:
            return False
        recent.append(now)
        return True


async def find_or_register_on_channel(
    session: AsyncSession,
    channel_id: str,
    unique_id: str,
    registrations: RegistrationLimit | None = None,
) -> tuple[str, str | None] | None:
    """Like `find_on_channel`, but a channel that auto-registers adds an unknown device to its
    provider's unassigned inventory, named after its identifier, within `registrations`'
    limits (beyond them the device is unknown, as on a channel that does not register)."""
    found = await find_on_channel(session, channel_id, unique_id)
    if found is not None:
        return found
    channel = await channels.by_id(session, channel_id)
    if channel is None or not channel.auto_register or not _registrable(unique_id):
        return None
    if registrations is not None:
        # Counted under the channel's lock, so logins racing in cannot pass the total together.
        registered = await count_under_lock(
            session, channels.lock_row(channel_id), _auto_registered_count(channel_id)
        )
        if registered >= registrations.max_devices or not registrations.take_turn(channel_id):
            return None
    actor = Actor(provider_id=channel.provider_id, system="gateway")
    data = DeviceCreate(channel_id=channel_id, unique_id=unique_id, name=unique_id)
    device = await create(session, actor, data, auto_registered=True)
    return device.id, None


def _auto_registered_count(channel_id: str) -> Select[int]:
    return select(func.count()).where(
        Device.channel_id == channel_id, Device.auto_registered.is_(True)
    )


def _registrable(unique_id: str) -> bool:
    return bool(re.fullmatch(UNIQUE_ID_PATTERN, unique_id)) and len(unique_id) <= 64


async def ids_of_customer(session: AsyncSession, customer_id: str) -> list[str]:
    statement = select(Device.id).where(Device.customer_id == customer_id)
    return list((await session.execute(statement)).scalars())


async def unassigned_ids(session: AsyncSession) -> list[str]:
    statement = select(Device.id).where(Device.customer_id.is_(None))
    return list((await session.execute(statement)).scalars())


@dataclass(frozen=True, slots=True)
class LastContact:
    """When a device was last heard from (server time), and where it was then."""

    device_id: str
    provider_id: str
    customer_id: str | None
    last_received_at: datetime
    lat: float | None
    lon: float | None
    speed: float | None
    course: float | None


async def last_contacts(
    session: AsyncSession, customer_ids: Iterable[str], received_before: datetime
) -> list[LastContact]:
    """The customers' devices whose newest message was received before a time (devices that
    never sent one are left out), for work across providers (the connection watch)."""
    found: list[LastContact] = []
    wanted = sorted(set(customer_ids))
    for start in range(0, len(wanted), DEVICES_PER_QUERY):
        statement = (
            select(
                Device.id, Device.provider_id, Device.customer_id, DeviceState.last_received_at,
                DeviceState.lat, DeviceState.lon, DeviceState.speed, DeviceState.course,
            )
            .join(DeviceState, DeviceState.device_id == Device.id)
            .where(
                Device.customer_id.in_(wanted[start : start + DEVICES_PER_QUERY]),
                DeviceState.last_received_at < received_before,
            )
            .order_by(Device.id)
        )  # fmt: skip
        found += [LastContact(*row) for row in await session.execute(statement)]
    return found


async def owners_of(
    session: AsyncSession, device_ids: list[str]
) -> dict[str, tuple[str, str | None]]:
    """(provider id, customer id or None) of each device found: who may see its live events."""
    owners: dict[str, tuple[str, str | None]] = {}
    for start in range(0, len(device_ids), DEVICES_PER_QUERY):
        chunk = device_ids[start : start + DEVICES_PER_QUERY]
        statement = select(Device.id, Device.provider_id, Device.customer_id).where(
            Device.id.in_(chunk)
        )
        owners.update((row[0], (row[1], row[2])) for row in await session.execute(statement))
    return owners


async def names_of(session: AsyncSession, device_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(name, unique id) of each device found, whoever's it is (a webhook's `device`)."""
    found: dict[str, tuple[str, str]] = {}
    for chunk in id_chunks(list(device_ids)):
        statement = select(Device.id, Device.name, Device.unique_id).where(Device.id.in_(chunk))
        found.update(
            (row.id, (row.name, row.unique_id)) for row in await session.execute(statement)
        )
    return found


async def first_of_customer(
    session: AsyncSession, provider_id: str, customer_id: str
) -> Device | None:
    """The customer's oldest device, if any (a sample for a test of an automation)."""
    statement = customer_list_query(provider_id, customer_id).order_by(Device.id).limit(1)
    return (await session.execute(statement)).scalar_one_or_none()


async def provider_of(session: AsyncSession, device_id: str) -> str:
    statement = select(Device.provider_id).where(Device.id == device_id)
    return (await session.execute(statement)).scalar_one()


# device id -> seq. Both are assigned once and never reused, so an entry never goes stale:
# a deleted device's messages fail its foreign key as they did when the key was the id.
_seqs: dict[str, int] = {}
_MAX_CACHED_SEQS = 200_000


async def seqs_of(session: AsyncSession, device_ids: Iterable[str]) -> dict[str, int]:
    """The `seq` (messages key) of each device found; one query for the ones not cached."""
    wanted = set(device_ids)
    seqs = {device_id: _seqs[device_id] for device_id in wanted & _seqs.keys()}
    missing = wanted - seqs.keys()
    if missing:
        statement = select(Device.id, Device.seq).where(Device.id.in_(missing))
        found = {device_id: seq for device_id, seq in await session.execute(statement)}
        if len(_seqs) + len(found) > _MAX_CACHED_SEQS:
            _seqs.clear()
        _seqs.update(found)
        seqs |= found
    return seqs


async def _flush_unique(session: AsyncSession, unique_id: str) -> None:
    """Flushes; a concurrent twin that slipped past the check still gets a clean 409."""
    try:
        await session.flush()
    except IntegrityError as error:
        raise conflict(
            f"A device with unique_id {unique_id!r} is already on this channel."
        ) from error


def newest_message_query() -> Select[str, datetime]:
    """Each device's newest message time that its live state took in: how far the pipeline
    steps can go (a message stored later with an earlier time is late data)."""
    return select(DeviceState.device_id, DeviceState.last_message_at)


async def for_pipeline_steps(
    session: AsyncSession, device_ids: Iterable[str]
) -> list[Row[str, int, str, str | None, datetime]]:
    """(id, seq, provider_id, customer_id, newest message time) of these devices, for the
    ones that have messages."""
    statement = select(
        Device.id, Device.seq, Device.provider_id, Device.customer_id, DeviceState.last_message_at
    ).join(DeviceState, DeviceState.device_id == Device.id)
    found: list[Row[str, int, str, str | None, datetime]] = []
    unique_ids = list(dict.fromkeys(device_ids))
    for start in range(0, len(unique_ids), DEVICES_PER_QUERY):
        chunk = unique_ids[start : start + DEVICES_PER_QUERY]
        ids = statement.where(Device.id.in_(bindparam("ids", expanding=True)))
        found += (await session.execute(ids, {"ids": chunk})).all()
    return found
