"""Wialon IPS over UDP: each datagram carries its IMEI and gets no answer.

UDP carries no password, so a device that has one set is only served over TCP. Datagrams are
stored in the order they are handled; when too many are still waiting for the database, new
ones are dropped and counted (UDP has no way to tell the device to wait)."""

import asyncio
import logging
from typing import Any

from fleetplane.core.db import system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.ingest.listener import ChannelListener
from fleetplane.ingest.protocols.wialon_ips import DatagramError, decode_datagram

log = logging.getLogger("fleetplane.ingest.wialon")

MAX_DATAGRAMS_IN_FLIGHT = 1000


class WialonUdpListener(ChannelListener, asyncio.DatagramProtocol):
    def __init__(self, **given: Any) -> None:
        # Devices on this transport cannot take commands: `connected` is left unused.
        super().__init__(**given)
        self._transport: asyncio.DatagramTransport | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.counters.bytes_received += len(data)
        if len(self._in_flight) >= MAX_DATAGRAMS_IN_FLIGHT:
            self.counters.messages_rejected += 1
            return
        task = asyncio.create_task(self._handle(data))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _handle(self, data: bytes) -> None:
        decoded = decode_datagram(data, utcnow())
        if isinstance(decoded, DatagramError):
            self.counters.messages_rejected += 1
            return
        if not decoded.messages:
            return  # a ping
        async with system_session(self.sessions) as session:
            found = await self.find_device(session, self.channel_id, decoded.imei)
        if found is None or found[1] is not None:  # unknown, or protected by a password
            self.counters.messages_rejected += len(decoded.messages)
            return
        try:
            await self.store.store(found[0], decoded.messages)
        except Exception as error:  # the database failed; UDP cannot ask for a resend
            self.counters.last_error = f"storing messages failed: {error.__class__.__name__}"
            self.counters.messages_rejected += len(decoded.messages)
            return
        self.counters.messages_accepted += len(decoded.messages)
