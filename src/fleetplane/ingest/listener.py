"""What every channel listener is given by the gateway, whatever its protocol and transport."""

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.ingest.connected import ConnectedDevices
from fleetplane.ingest.limits import (
    ChannelConnections,
    DeviceLimits,
    ProcessConnections,
    UnfinishedFiles,
)
from fleetplane.ingest.pipeline import MessageStore

# (device id, password hash or None) of a device on a channel, or None when unknown.
DeviceFinder = Callable[[AsyncSession, str, str], Awaitable[tuple[str, str | None] | None]]


class ChannelListener:
    """A channel's listener: where it listens, the channel's live counters, and the parts of
    the platform it hands devices and their messages to; and what a sender may hold on it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        channel_id: str,
        counters: Any,
        sessions: async_sessionmaker[AsyncSession],
        store: MessageStore,
        find_device: DeviceFinder,
        connected: ConnectedDevices,
        limits: DeviceLimits,
        process_connections: ProcessConnections,
        unfinished_files: UnfinishedFiles,
    ) -> None:
        self.host = host
        self.port = port
        self.channel_id = channel_id
        self.counters = counters
        self.sessions = sessions
        self.store = store
        self.find_device = find_device
        self.connected = connected
        self.limits = limits
        self.admission = ChannelConnections(limits, process_connections, counters)
        self.unfinished_files = unfinished_files
