"""A Wialon IPS listener for the simulator tests, built on the platform's own framer/session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleetplane.ingest.protocols.wialon_ips import (
    LoginResult,
    TextFrame,
    WialonFramer,
    WialonSession,
    encode_driver_message,
)
from fleetplane.telemetry import Message


@dataclass
class ReceivedPacket:
    imei: str
    kind: str  # "D" or "B"
    messages: list[Message]


@dataclass
class WialonTestServer:
    """Accepts (or refuses) every login and keeps what each data packet decoded to.

    `command_before_answers` is written before every data answer, as a server pushing a
    command to the device at the wrong moment would.
    """

    verdict: LoginResult = LoginResult.ACCEPTED
    command_before_answers: bytes | None = None
    packets: list[ReceivedPacket] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing the sockets ends the handlers; cancelling them would trip a Python 3.11 bug
        # (the stream protocol asks a cancelled handler task for its exception).
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    def messages_of(self, imei: str) -> list[Message]:
        return [m for packet in self.packets if packet.imei == imei for m in packet.messages]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._converse(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer, session = WialonFramer(), WialonSession()
        while data := await reader.read(65536):
            for frame in framer.feed(data):
                outcome = session.handle(frame, received_at=datetime.now(UTC))
                if outcome.login is not None:
                    self.logins.append(outcome.login.imei)
                    outcome = session.complete_login(self.verdict)
                if outcome.messages:
                    assert isinstance(frame, TextFrame) and session.imei is not None
                    kind = frame.line[1:].split(b"#", 1)[0].decode()
                    self.packets.append(ReceivedPacket(session.imei, kind, list(outcome.messages)))
                    if self.command_before_answers is not None:
                        writer.write(self.command_before_answers)
                writer.write(outcome.answer)
                if outcome.close:
                    return
            await writer.drain()


DRIVER_MESSAGE = encode_driver_message("Call the office")
