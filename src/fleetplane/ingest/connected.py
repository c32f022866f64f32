"""Devices connected to this process right now, and delivering their commands."""

import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.commands import service as commands
from fleetplane.core.db import system_session

log = logging.getLogger("fleetplane.ingest")


class CommandSink(Protocol):
    """A device connection that can take commands."""

    def encode(self, command_type: str, text: str | None) -> bytes: ...

    def send(self, data: bytes) -> None: ...


class ConnectedDevices:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._sinks: dict[str, CommandSink] = {}

    def add(self, device_id: str, sink: CommandSink) -> None:
        self._sinks[device_id] = sink  # a newer connection of the device replaces an older

    def remove(self, device_id: str, sink: CommandSink) -> None:
        if self._sinks.get(device_id) is sink:
            del self._sinks[device_id]

    def is_connected(self, device_id: str) -> bool:
        return device_id in self._sinks

    def send_now(self, command: commands.Command) -> None:
        """Writes the command to its device's connection if there is one, and marks it."""
        sink = self._sinks.get(command.device_id)
        if sink is None:
            return
        try:
            sink.send(sink.encode(command.type, command.text))
        except (ValueError, OSError) as error:
            commands.mark_failed(command, str(error))
            return
        commands.mark_sent(command)

    async def deliver_queued(self, device_id: str) -> None:
        """Sends what waited for the device (at its login, or when another process queued it)."""
        async with system_session(self._sessions) as session:
            for command in await commands.take_deliverable(session, device_id):
                self.send_now(command)

    async def deliver_all_queued(self) -> None:
        async with system_session(self._sessions) as session:
            waiting = await commands.devices_with_queued_commands(session, list(self._sinks))
        for device_id in waiting:
            await self.deliver_queued(device_id)
