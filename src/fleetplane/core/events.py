"""An in-process hub of live events (new positions, state changes) for streaming to clients.

Subscribers get a bounded queue: a client too slow to keep up loses the oldest events, never
the server's memory."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Event = dict[str, Any]


class Subscription:
    def __init__(self, hub: "EventHub", wanted: Callable[[Event], bool], size: int) -> None:
        self._hub = hub
        self._wanted = wanted
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if not self._wanted(event):
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None when `timeout` seconds pass without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._hub._subscriptions.discard(self)


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, wanted: Callable[[Event], bool], size: int = 1000) -> Subscription:
        subscription = Subscription(self, wanted, size)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


async def server_sent_events(
    subscription: Subscription,
    heartbeat_seconds: float = 15.0,
    shape: Callable[[Event], Awaitable[Event | None]] | None = None,
) -> AsyncIterator[bytes]:
    """`text/event-stream` lines for a subscription; a comment line keeps idle proxies open.
    `shape` turns a published event into what this client is sent (None: nothing)."""
    import orjson

    try:
        yield b": connected\n\n"
        while True:
            event = await subscription.next(heartbeat_seconds)
            if event is None:
                yield b": heartbeat\n\n"
                continue
            if shape is not None:
                event = await shape(event)
                if event is None:
                    continue
            data = orjson.dumps(event, option=orjson.OPT_UTC_Z)
            yield b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
    finally:
        subscription.close()
