"""The gateway: one listener per enabled channel, started, moved and stopped to match the
channels in the database, without a restart."""

import asyncio
import functools
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.channels import service as channels
from fleetplane.channels.schemas import ListenerState
from fleetplane.channels.service import ChannelPolicy
from fleetplane.core.db import system_session
from fleetplane.core.events import EventHub
from fleetplane.core.files import FileStore
from fleetplane.devices import service as devices
from fleetplane.devices.processor import DeviceRulesCache
from fleetplane.ingest.connected import ConnectedDevices
from fleetplane.ingest.limits import DeviceLimits, ProcessConnections, UnfinishedFiles
from fleetplane.ingest.osmand_http import OsmandHttpListener
from fleetplane.ingest.pipeline import MessageStore, StepNotifier
from fleetplane.ingest.wialon_tcp import WialonTcpListener
from fleetplane.ingest.wialon_udp import WialonUdpListener

log = logging.getLogger("fleetplane.gateway")

RELOAD_INTERVAL_SECONDS = 5.0


@dataclass(slots=True)
class ChannelCounters:
    connections: int = 0
    connections_refused: int = 0
    connections_timed_out: int = 0
    messages_accepted: int = 0
    messages_rejected: int = 0
    bytes_received: int = 0
    last_error: str | None = None
    listening: bool = False


class ChannelFields(Protocol):
    """What the gateway reads of a channel (a `Channel`, or a row of its columns)."""

    id: str
    protocol: str
    transport: str
    port: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """What a running listener was started with; a change means a restart."""

    channel_id: str
    protocol: str
    transport: str
    port: int

    @classmethod
    def of(cls, channel: ChannelFields) -> "ListenerConfig":
        return cls(channel.id, channel.protocol, channel.transport, channel.port)


@dataclass
class _Running:
    config: ListenerConfig
    listener: Any
    counters: ChannelCounters = field(default_factory=ChannelCounters)


class Gateway:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        events: EventHub,
        files: FileStore,
        policy: ChannelPolicy,
        host: str = "0.0.0.0",
        rules: DeviceRulesCache | None = None,
        *,
        limits: DeviceLimits,
        step_runner: StepNotifier | None = None,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._host = host
        self._started = False
        self._limits = limits
        self._process_connections = ProcessConnections(limits.connections_total)
        self._unfinished_files = UnfinishedFiles(files, limits.unfinished_file_bytes)
        registrations = devices.RegistrationLimit(
            limits.auto_register_per_minute, limits.auto_register_max_devices
        )
        self._find_device = functools.partial(
            devices.find_or_register_on_channel, registrations=registrations
        )
        self._running: dict[str, _Running] = {}
        # Enabled channels whose listener could not start: what it was asked, and why not.
        self._failed: dict[str, tuple[ListenerConfig, str]] = {}
        self._stopped_counters: dict[str, ChannelCounters] = {}
        self._lock = asyncio.Lock()
        self._reloader: asyncio.Task[None] | None = None
        self.store = MessageStore(sessions, events, files, rules=rules, step_runner=step_runner)
        self.connected = ConnectedDevices(sessions)

    async def start(self) -> None:
        self._started = True
        self._unfinished_files.clear()
        self.store.start()
        await self.reload()
        self._reloader = asyncio.create_task(self._reload_forever(), name="gateway-reload")

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            await asyncio.gather(self._reloader, return_exceptions=True)
        async with self._lock:
            for channel_id in list(self._running):
                await self._stop_listener(channel_id)
        await self.store.stop()

    def counters(self, channel_id: str) -> dict[str, Any] | None:
        running = self._running.get(channel_id)
        counters = running.counters if running else self._stopped_counters.get(channel_id)
        return asdict(counters) if counters else None

    def listener_state(self, channel: ChannelFields) -> dict[str, Any] | None:
        """`{"state", "reason"}` of the channel's listener in this process, as the channel now
        is (a change just saved is applied right after it is committed); None when this
        process runs no listeners."""
        if not self._started:
            return None
        if not channel.enabled:
            return {"state": ListenerState.STOPPED, "reason": "the channel is disabled"}
        config = ListenerConfig.of(channel)
        running = self._running.get(channel.id)
        if running is not None and running.config == config:
            return {"state": ListenerState.LISTENING, "reason": None}
        failed = self._failed.get(channel.id)
        if failed is not None and failed[0] == config:
            return {"state": ListenerState.FAILED, "reason": failed[1]}
        return {"state": ListenerState.STARTING, "reason": None}

    async def reload(self) -> None:
        """Makes the listeners match the enabled channels in the database."""
        async with self._lock:
            async with system_session(self._sessions) as session:
                wanted = {
                    channel.id: ListenerConfig.of(channel)
                    for channel in await channels.all_channels(session)
                    if channel.enabled
                }
            for channel_id, running in list(self._running.items()):
                if wanted.get(channel_id) != running.config:
                    await self._stop_listener(channel_id)
            for channel_id in [c for c in self._failed if c not in wanted]:
                del self._failed[channel_id]
            for channel_id, config in wanted.items():
                if channel_id not in self._running:
                    await self._start_listener(config)

    async def _reload_forever(self) -> None:
        # Picks up channels changed by another process (or a failed bind that may now work).
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_SECONDS)
            try:
                await self.reload()
                await self.connected.deliver_all_queued()
            except Exception:  # keep serving the listeners we have
                log.exception("reloading channels failed")

    async def _start_listener(self, config: ListenerConfig) -> None:
        """Starts the channel's listener; a port it cannot have is reported on the channel
        and in the log, never raised: one provider's channel must not stop the platform."""
        counters = self._stopped_counters.pop(config.channel_id, None) or ChannelCounters()
        reason = self._policy.why_not(config.port)
        if reason is None:
            try:
                listener = self._make_listener(config, counters)
                await listener.start()
            except OSError as error:
                reason = f"cannot listen on port {config.port}: {why_unbound(error)}"
            except LookupError as error:
                reason = str(error)
            except Exception as error:  # whatever it is, the other channels and the API go on
                log.exception("channel %s: its listener did not start", config.channel_id)
                reason = f"cannot listen on port {config.port}: {error}"
        if reason is not None:
            self._report_failure(config, reason)
            counters.last_error = reason
            counters.listening = False
            self._stopped_counters[config.channel_id] = counters
            return
        self._failed.pop(config.channel_id, None)
        counters.listening = True
        self._running[config.channel_id] = _Running(config, listener, counters)
        log.info(
            "channel %s: %s listening on port %d", config.channel_id, config.protocol, config.port
        )

    def _report_failure(self, config: ListenerConfig, reason: str) -> None:
        # Loud once (the listener is tried again every few seconds), with what to do about it.
        if self._failed.get(config.channel_id) != (config, reason):
            move = json.dumps({"port": "<a free port>"})
            log.error(
                "channel %s (%s on port %d) is not listening: %s. Its devices cannot connect "
                "until the port is free, or the channel moves: PATCH /api/channels/%s %s "
                "(ports channels may use: FLEETPLANE_DEVICE_PORTS, now %s).",
                config.channel_id,
                config.protocol,
                config.port,
                reason,
                config.channel_id,
                move,
                self._policy.described,
            )
        self._failed[config.channel_id] = (config, reason)

    async def _stop_listener(self, channel_id: str) -> None:
        running = self._running.pop(channel_id)
        await running.listener.stop()
        running.counters.listening = False
        running.counters.connections = 0
        self._stopped_counters[channel_id] = running.counters

    def _make_listener(self, config: ListenerConfig, counters: ChannelCounters) -> Any:
        kinds = LISTENERS.get((config.protocol, config.transport))
        if kinds is None:
            raise LookupError(f"no {config.protocol} listener for {config.transport}")
        listeners = [
            kind(
                host=self._host,
                port=config.port,
                channel_id=config.channel_id,
                counters=counters,
                sessions=self._sessions,
                store=self.store,
                find_device=self._find_device,
                connected=self.connected,
                limits=self._limits,
                process_connections=self._process_connections,
                unfinished_files=self._unfinished_files,
            )
            for kind in kinds
        ]
        return listeners[0] if len(listeners) == 1 else _Together(listeners)


class _Together:
    """Several listeners of one channel (TCP and UDP on one port) started and stopped as one."""

    def __init__(self, listeners: list[Any]) -> None:
        self.listeners = listeners

    async def start(self) -> None:
        started = []
        try:
            for listener in self.listeners:
                await listener.start()
                started.append(listener)
        except Exception:
            for listener in started:
                await listener.stop()
            raise

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()


LISTENERS: dict[tuple[str, str], tuple[type, ...]] = {
    ("wialon_ips", "tcp"): (WialonTcpListener,),
    ("wialon_ips", "udp"): (WialonUdpListener,),
    ("wialon_ips", "tcp_udp"): (WialonTcpListener, WialonUdpListener),
    ("osmand", "http"): (OsmandHttpListener,),
}


def cannot_bind(host: str, port: int, transport: str) -> str | None:
    """Why a listener of `transport` could not bind `port` on this machine now (checked by
    binding it, as the listener would), or None when it could."""
    kinds = {"tcp": [socket.SOCK_STREAM], "http": [socket.SOCK_STREAM], "udp": [socket.SOCK_DGRAM]}
    kinds["tcp_udp"] = kinds["tcp"] + kinds["udp"]
    family = address_family(host)
    for kind in kinds[transport]:
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as asyncio's servers do
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                return why_unbound(error)
    return None


def address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def why_unbound(error: OSError) -> str:
    """Why a socket could not be bound, in the system's words ("Address already in use"), not
    asyncio's longer wrapping of them."""
    return os.strerror(error.errno) if error.errno else str(error)
