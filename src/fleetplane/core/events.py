"""An in-process hub of live events (new positions, state changes) for streaming to clients.

Each event is published with its audience: the provider and customer owning what it is about
when it happened. Subscribers get a bounded queue: a client too slow to keep up loses the
oldest events, never the server's memory. A stream whose access may have changed is held (it
sends nothing) until its guard checks the access again, and closes with a final `closed`
event when the access is gone."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

Event = dict[str, Any]
Audience = tuple[str, str | None]  # (provider id, customer id or None for no customer)

# Put in a queue to wake its reader (see `Subscription.hold`); never sent.
_WAKE: Event = {"type": "wake"}


class Subscription:
    def __init__(
        self, hub: "EventHub", wanted: Callable[[Event, Audience], bool], size: int
    ) -> None:
        self._hub = hub
        self._wanted = wanted
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0
        self._holds = 0
        self._released = 0

    def offer(self, event: Event, audience: Audience) -> None:
        if self._wanted(event, audience):
            self._put(event)

    def _put(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def next(self, timeout: float) -> Event | None:
        """The next event; None when `timeout` seconds pass without one, or when the
        subscription is held meanwhile."""
        if self._queue.empty():
            try:
                event = await asyncio.wait_for(self._queue.get(), max(timeout, 0.001))
            except TimeoutError:
                return None
        else:
            event = self._queue.get_nowait()
        return None if event is _WAKE else event

    def hold(self) -> None:
        """Something the stream's access depends on changed: send nothing more until the
        access is checked again (`held` stays true until then)."""
        self._holds += 1
        self._put(_WAKE)

    @property
    def held(self) -> bool:
        return self._holds != self._released

    @property
    def holds(self) -> int:
        return self._holds

    def release(self, holds: int) -> None:
        """The access was checked and stands, as of when `holds` holds had been asked; one
        asked during the check keeps the subscription held."""
        self._released = holds

    def close(self) -> None:
        self._hub._subscriptions.discard(self)


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(
        self, wanted: Callable[[Event, Audience], bool], size: int = 1000
    ) -> Subscription:
        subscription = Subscription(self, wanted, size)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event, audience: Audience) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event, audience)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


def publish_each(events: EventHub, values: Iterable[Mapping[str, Any]], prefix: str) -> None:
    """Publishes each of a change notice's values (`kind`, `provider_id`, `customer_id` and
    the event's fields: what a pipeline step announces) as an event of type `<prefix>_<kind>`
    with the fields, for the customer's audience."""
    if not events.subscribers:
        return
    for value in values:
        event = {key: item for key, item in value.items() if key not in _ADDRESSING}
        event["type"] = f"{prefix}_{value['kind']}"
        events.publish(event, (value["provider_id"], value["customer_id"]))


_ADDRESSING = ("kind", "provider_id", "customer_id")


class StreamGuard(Protocol):
    """Checks an open stream's access again, as a new call would be checked."""

    def seconds_to_next_check(self) -> float:
        """When the access must be checked again even if nothing announced a change."""
        ...

    async def closing(self) -> Event | None:
        """None while the access stands; otherwise the final event's data, with its `reason`."""
        ...

    def stop(self) -> None:
        """The stream ended: stop watching for changes."""
        ...


async def server_sent_events(
    subscription: Subscription,
    guard: StreamGuard,
    heartbeat_seconds: float = 15.0,
    shape: Callable[[Event], Awaitable[Event | None]] | None = None,
) -> AsyncIterator[bytes]:
    """`text/event-stream` lines for a subscription; a comment line keeps idle proxies open.
    The access is checked again whenever the subscription is held and at the times the guard
    asks; when it is gone, a `closed` event says why and the stream ends. `shape` turns a
    published event into what this client is sent (None: nothing)."""
    try:
        yield b": connected\n\n"
        last_sent = time.monotonic()
        next_check = last_sent + guard.seconds_to_next_check()
        pending: Event | None = None
        while True:
            if subscription.held or time.monotonic() >= next_check:
                holds = subscription.holds
                closing = await guard.closing()
                if closing is not None:
                    yield _frame({"type": "closed", **closing})
                    return
                subscription.release(holds)
                next_check = time.monotonic() + guard.seconds_to_next_check()
                continue
            if pending is None:
                now = time.monotonic()
                wait = min(last_sent + heartbeat_seconds, next_check) - now
                pending = await subscription.next(wait)
                if pending is None:
                    if time.monotonic() - last_sent >= heartbeat_seconds:
                        yield b": heartbeat\n\n"
                        last_sent = time.monotonic()
                    continue
                if subscription.held:
                    continue  # sent only once the access is checked again
            event = pending if shape is None else await shape(pending)
            pending = None
            if event is None:
                continue
            yield _frame(event)
            last_sent = time.monotonic()
    finally:
        subscription.close()
        guard.stop()


def _frame(event: Event) -> bytes:
    data = orjson.dumps(event, option=orjson.OPT_UTC_Z)
    return b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
