"""Each customer's devices with their live state, kept in process memory for the module's two
hot reads (`GET /module/devices` and `GET /module/devices/{id}`), each device also kept as its
ready JSON text.

How it stays correct (docs/decisions.md, "Device reads are served from memory"):

- Every change committed in this process reaches it as a change notice (`core.changes`, raised
  by the domain services, delivered after the commit): new live states written by the
  telemetry pipeline are applied in place (a state only moves forward), and a change of a
  device, sensor, channel or customer drops the devices of the customers it names, read again
  at their next call.
- Writes by other processes to the same database show once a customer's devices are older than
  `ttl_seconds`: they are read again then, so no read is staler than that.
- A read from the database that overlaps a change: live states committed meanwhile are applied
  to it when it completes; after any other change of its customer it is not kept.
- Memory is bounded: at most `max_devices` devices over all customers (the customers read least
  recently go first); a customer with more than `max_devices_per_customer` devices is not kept
  at all, and its reads go to the database.
"""

import asyncio
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.channels.service import CHANNEL_CHANGE
from fleetplane.core.changes import Change, ChangeHub
from fleetplane.core.db import set_tenant_scope
from fleetplane.core.ids import looks_like_id
from fleetplane.core.pagination import encode_cursor
from fleetplane.core.timeutil import as_utc, utcnow
from fleetplane.customers.service import CUSTOMER_CHANGE
from fleetplane.devices import live
from fleetplane.devices.models import Device
from fleetplane.devices.service import DEVICE_CHANGE, DEVICE_COUNTERS_CHANGE, DEVICE_STATE_CHANGE
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorDefinition

CustomerKey = tuple[str, str]  # (provider id, customer id)

# The change notices that may change what a customer's device reads answer: each drops the
# devices of the customers it names. Live states are applied in place instead.
READ_CHANGES = (DEVICE_CHANGE, sensors.SENSOR_CHANGE, CHANNEL_CHANGE, CUSTOMER_CHANGE)
DEVICE_ID_PREFIX = "dev_"
# List answers held per customer (one per page and page size asked for).
MAX_PAGES_HELD = 64


_Ready = tuple[bytes, datetime | None]  # a JSON text and until when it holds (None: no end)


def _holds(ready: _Ready, now: datetime) -> bool:
    return ready[1] is None or now <= ready[1]


def _ends(items: list[_Ready]) -> Iterator[datetime]:
    return (end for _, end in items if end is not None)


@dataclass(slots=True)
class CustomerDevices:
    """One customer's devices as read at `loaded_at`, kept up to date with live states."""

    generation: int
    loaded_at: float  # time.monotonic()
    ids: list[str]  # in id order, the order of every list
    rows: dict[str, dict[str, Any]]  # id -> the row of live.customer_devices_query
    sensors: dict[str, list[SensorDefinition]]
    # id -> the device's JSON text and until when it holds (None: until its state changes)
    encoded: dict[str, _Ready] = field(default_factory=dict)
    # (after, limit) -> a list answer, held the same way; all go when any state changes
    pages: dict[tuple[str | None, int], _Ready] = field(default_factory=dict)

    def page(self, after: str | None, limit: int) -> bytes:
        """The list answer: up to `limit` devices after the id `after`, and the next cursor."""
        now = utcnow()
        ready = self.pages.get((after, limit))
        if ready is not None and _holds(ready, now):
            return ready[0]
        start = 0 if after is None else bisect_right(self.ids, after)
        ids = self.ids[start : start + limit + 1]
        next_cursor = None
        if len(ids) > limit:
            ids = ids[:limit]
            next_cursor = encode_cursor(ids[-1])
        items = [self._json(device_id, now) for device_id in ids]
        body = b'{"items":[%b],"next_cursor":%b}' % (
            b",".join(text for text, _ in items),
            orjson.dumps(next_cursor),
        )
        if len(self.pages) >= MAX_PAGES_HELD:
            self.pages.clear()
        self.pages[(after, limit)] = (body, min(_ends(items), default=None))
        return body

    def one(self, device_id: str) -> bytes | None:
        """The answer for one device, or None when the customer has no such device."""
        if device_id not in self.rows:
            return None
        return self._json(device_id, utcnow())[0]

    def apply_state(self, state: Mapping[str, Any]) -> None:
        """A new live state (or new counters) of one of the devices; an older one than held
        is ignored."""
        row = self.rows.get(state["device_id"])
        if row is None or not _newer(state, row):
            return
        row.update(live.state_values(state))  # only for held devices: the pipeline writes more
        self.encoded.pop(row["id"], None)
        self.pages.clear()

    def state_event(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """The event stream's `state` event of a state the pipeline wrote for one of the
        devices, shaped as its read is; None when it is not one of these devices."""
        row = self.rows.get(state["device_id"])
        if row is None:
            return None
        return live.state_event(live.with_state(row, state), self.sensors.get(row["id"], []))

    def reuse_encoded(self, previous: "CustomerDevices") -> None:
        """Takes over the JSON texts of an earlier read for the devices that did not change."""
        for device_id, ready in previous.encoded.items():
            row = self.rows.get(device_id)
            if row == previous.rows.get(device_id) and self.sensors.get(
                device_id
            ) == previous.sensors.get(device_id):
                self.encoded[device_id] = ready

    def _json(self, device_id: str, now: datetime) -> _Ready:
        """The device's JSON text, shaped again only when its state changed or the moment it
        goes offline has passed: the answer is the same as shaping it on every call."""
        ready = self.encoded.get(device_id)
        if ready is not None and _holds(ready, now):
            return ready
        row = self.rows[device_id]
        item = live.shape_device(row, self.sensors.get(device_id, []))
        text = orjson.dumps(item, option=orjson.OPT_UTC_Z)
        # Online turns into offline by time alone; offline changes only with a new state.
        ready = self.encoded[device_id] = (
            text,
            live.online_until(row) if item["online"] else None,
        )
        return ready


@dataclass(slots=True)
class _TooMany:
    """A customer with more devices than are kept: read from the database for a while."""

    generation: int
    loaded_at: float


@dataclass(slots=True)
class _Load:
    generation: int
    # States and counters meanwhile, by device and what they order by (`_order`).
    missed: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    task: "asyncio.Task[CustomerDevices | None] | None" = None
    stale: bool = False  # the customer's devices changed meanwhile: answer, do not keep


class LiveDeviceCache:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ttl_seconds: float,
        *,
        max_devices: int = 50_000,
        max_devices_per_customer: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self.ttl = ttl_seconds
        self.max_devices = max_devices
        self.max_devices_per_customer = min(max_devices_per_customer, max_devices)
        self._generation = 0
        self._entries: OrderedDict[CustomerKey, CustomerDevices | _TooMany] = OrderedDict()
        self._customer_of: dict[str, CustomerKey] = {}  # device id -> its customer's entry
        self._kept_devices = 0
        self._loads: dict[CustomerKey, _Load] = {}

    def follow(self, changes: ChangeHub) -> Callable[[], None]:
        """Keeps to every change committed through `changes`' sessions from now on."""
        return changes.subscribe(
            (*READ_CHANGES, DEVICE_STATE_CHANGE, DEVICE_COUNTERS_CHANGE), self.apply
        )

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def fresh(self, provider_id: str, customer_id: str) -> CustomerDevices | None:
        """The customer's devices when held and fresh enough; None when they must be read."""
        key = (provider_id, customer_id)
        entry = self._entries.get(key)
        if not isinstance(entry, CustomerDevices) or not self._is_fresh(entry):
            return None
        self._entries.move_to_end(key)
        return entry

    async def customer_devices(self, provider_id: str, customer_id: str) -> CustomerDevices | None:
        """The customer's devices, read from the database when not held or too old; None when
        the customer has too many to keep (or keeping is off): read them from the database."""
        if not self.enabled:
            return None
        key = (provider_id, customer_id)
        entry = self._entries.get(key)
        if entry is not None and self._is_fresh(entry):
            self._entries.move_to_end(key)
            return entry if isinstance(entry, CustomerDevices) else None
        load = self._start_load(key)
        assert load.task is not None
        # Shielded: a caller that goes away does not cancel the others' read.
        return await asyncio.shield(load.task)

    def _start_load(self, key: CustomerKey) -> _Load:
        """The read of the customer's devices under way, or a new one. A read that began
        before the last change may not answer a call made after it: then a new one starts."""
        load = self._loads.get(key)
        if load is None or load.stale or load.generation != self._generation:
            load = _Load(self._generation)
            load.task = asyncio.create_task(self._load(key, load))
            self._loads[key] = load
        return load

    def apply(self, change: Change) -> None:
        """Takes in a committed change: live states and counters are applied in place; any
        other change
        drops the devices of the customers it names (of the provider, when it names none in
        particular; of everyone, when not even a provider)."""
        if change.kind in (DEVICE_STATE_CHANGE, DEVICE_COUNTERS_CHANGE):
            for state in change.values:
                self._apply_state(state)
        elif change.provider_id is None:
            self._forget_everything()
        elif change.customer_ids is None:
            self._forget_where(lambda key: key[0] == change.provider_id)
        elif change.customer_ids:
            keys = {(change.provider_id, customer_id) for customer_id in change.customer_ids}
            self._forget_where(keys.__contains__)

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        device_id = state["device_id"]
        slot = (device_id, _order(state))
        for load in self._loads.values():
            seen = load.missed.get(slot)
            if seen is None or _newer(state, seen):
                load.missed[slot] = state
        key = self._customer_of.get(device_id)
        entry = None if key is None else self._entries.get(key)
        if isinstance(entry, CustomerDevices):
            entry.apply_state(state)

    def _forget_everything(self) -> None:
        self._generation += 1
        self._entries = OrderedDict()
        self._customer_of = {}
        self._kept_devices = 0

    def _forget_where(self, affected: Callable[[CustomerKey], bool]) -> None:
        for key in [key for key in self._entries if affected(key)]:
            self._drop(key)
        for key, load in self._loads.items():
            if affected(key):
                load.stale = True

    def _is_fresh(self, entry: CustomerDevices | _TooMany) -> bool:
        return (
            entry.generation == self._generation and time.monotonic() - entry.loaded_at <= self.ttl
        )

    async def _load(self, key: CustomerKey, load: _Load) -> CustomerDevices | None:
        try:
            loaded_at = time.monotonic()
            devices = await self._read(key, load.generation, loaded_at)
            if devices is not None:
                for state in load.missed.values():
                    devices.apply_state(state)
                previous = self._entries.get(key)
                if isinstance(previous, CustomerDevices):
                    devices.reuse_encoded(previous)
            if load.generation == self._generation and not load.stale:
                self._keep(key, devices or _TooMany(load.generation, loaded_at))
            return devices
        finally:
            if self._loads.get(key) is load:
                del self._loads[key]

    async def _read(
        self, key: CustomerKey, generation: int, loaded_at: float
    ) -> CustomerDevices | None:
        provider_id, customer_id = key
        async with self._sessions() as session:
            await set_tenant_scope(session, provider_id=provider_id, customer_id=customer_id)
            count = await session.execute(
                select(func.count()).where(
                    Device.provider_id == provider_id, Device.customer_id == customer_id
                )
            )
            if count.scalar_one() > self.max_devices_per_customer:
                return None
            statement = live.customer_devices_query(provider_id, customer_id).order_by(Device.id)
            rows = {row.id: dict(row._mapping) for row in await session.execute(statement)}
            definitions = await sensors.values_for_devices(session, provider_id, list(rows))
        return CustomerDevices(generation, loaded_at, list(rows), rows, definitions)

    def _keep(self, key: CustomerKey, entry: CustomerDevices | _TooMany) -> None:
        self._drop(key)
        size = len(entry.ids) if isinstance(entry, CustomerDevices) else 0
        while self._entries and self._kept_devices + size > self.max_devices:
            self._drop(next(iter(self._entries)))  # the least recently read customer
        self._entries[key] = entry
        if isinstance(entry, CustomerDevices):
            self._kept_devices += size
            self._customer_of.update(dict.fromkeys(entry.ids, key))

    def _drop(self, key: CustomerKey) -> None:
        entry = self._entries.pop(key, None)
        if isinstance(entry, CustomerDevices):
            self._kept_devices -= len(entry.ids)
            for device_id in entry.ids:
                if self._customer_of.get(device_id) == key:
                    del self._customer_of[device_id]


def cursor_fits(after: str | None) -> bool:
    """Whether a cursor compares the same in memory as in the database: a device id (ids of
    one kind sort the same under every collation); any other cursor is read from the database."""
    return after is None or (after.startswith(DEVICE_ID_PREFIX) and looks_like_id(after))


def _order(state: Mapping[str, Any]) -> str:
    """What a state orders by: the intake's by its newest message, the counters by the newest
    message they counted (they come after the intake's, each in its own order)."""
    return "last_message_at" if "last_message_at" in state else "counted_at"


def _newer(state: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    order = _order(state)
    held = than[order]
    return held is None or as_utc(state[order]) > as_utc(held)
