"""Wialon IPS over TCP: one connection per device, each packet answered after it is stored.

A connection beyond the channel's limits is closed as soon as it is accepted; one that has not
logged in within the login timeout, or has sent nothing for the idle timeout, is closed too
(checked by one sweep per listener, so reading costs nothing extra). Before its login a
connection holds only a login's worth of bytes (`LOGIN_LIMITS`). Image and tachograph
blocks wait on disk until their file is complete (see `limits.UnfinishedFiles`)."""

import asyncio
import logging
from typing import Any

from fleetplane.core.db import system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.devices.service import password_matches
from fleetplane.ingest.limits import DeviceSpool
from fleetplane.ingest.listener import ChannelListener
from fleetplane.ingest.protocols.wialon_ips import (
    DEFAULT_LIMITS,
    LOGIN_LIMITS,
    LoginRequest,
    LoginResult,
    Outcome,
    WialonFramer,
    WialonSession,
    encode_driver_message,
    encode_raw_command,
    encode_snapshot_request,
    encode_tachograph_request,
)

log = logging.getLogger("fleetplane.ingest.wialon")

READ_SIZE = 65536


class WialonTcpListener(ChannelListener):
    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self._sweeper = asyncio.create_task(self._close_stale_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else None
        if not self.admission.admit(host):
            writer.transport.abort()  # at once: a refused connection must not hold a handle
            return
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(self, reader, writer)
        self._connections[task] = connection
        try:
            await connection.serve()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the device went away; nothing unacknowledged was promised
        finally:
            connection.session.close()  # its unfinished files cannot be resumed elsewhere
            if connection.device_id is not None:
                self.connected.remove(connection.device_id, connection)
            self.admission.release(host)
            del self._connections[task]
            writer.close()

    async def _close_stale_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            now = loop.time()
            for connection in list(self._connections.values()):
                if connection.is_stale(now):
                    self.counters.connections_timed_out += 1
                    # abort, not close: a peer that reads nothing would keep close() waiting
                    connection.writer.transport.abort()

    async def authenticate(self, login: LoginRequest) -> tuple[LoginResult, str | None]:
        async with system_session(self.sessions) as session:
            found = await self.find_device(session, self.channel_id, login.imei)
        if found is None:
            self.counters.messages_rejected += 1
            return LoginResult.REFUSED, None
        device_id, password_hash = found
        if password_hash is not None:
            matches = login.password is not None and await asyncio.to_thread(
                password_matches, login.password, password_hash
            )
            if not matches:
                return LoginResult.WRONG_PASSWORD, None
        return LoginResult.ACCEPTED, device_id


class _Connection:
    def __init__(
        self,
        listener: WialonTcpListener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        self.framer = WialonFramer(LOGIN_LIMITS)
        self.session = WialonSession(spools=self._new_spool)
        self.device_id: str | None = None
        self._clock = asyncio.get_running_loop().time
        self.connected_at = self.last_received = self._clock()

    def is_stale(self, now: float) -> bool:
        """Not logged in within the login timeout, or silent for the idle timeout."""
        limits = self.listener.limits
        if self.device_id is None and now - self.connected_at > limits.login_timeout:
            return True
        return now - self.last_received > limits.idle_timeout

    def _new_spool(self) -> DeviceSpool:
        # The session takes file blocks only after a login, which sets the device.
        assert self.device_id is not None
        return self.listener.unfinished_files.open(self.device_id)

    async def serve(self) -> None:
        counters = self.listener.counters
        while data := await self.reader.read(READ_SIZE):
            self.last_received = self._clock()
            counters.bytes_received += len(data)
            received_at = utcnow()
            self.framer.limits = DEFAULT_LIMITS if self.session.logged_in else LOGIN_LIMITS
            for frame in self.framer.feed(data):
                outcome = self.session.handle(frame, received_at)
                if outcome.login is not None:
                    outcome = await self._login(outcome.login)
                if not await self._store(outcome):
                    return
                self.writer.write(outcome.answer)
                if outcome.answer == b"#AL#1\r\n" and self.device_id is not None:
                    await self.writer.drain()
                    await self.listener.connected.deliver_queued(self.device_id)
                if outcome.close:
                    await self.writer.drain()
                    return
            await self.writer.drain()

    async def _login(self, login: LoginRequest) -> Outcome:
        result, device_id = await self.listener.authenticate(login)
        if result is LoginResult.ACCEPTED and device_id is not None:
            self.device_id = device_id
            self.listener.connected.add(device_id, self)
        return self.session.complete_login(result)

    def encode(self, command_type: str, text: str | None) -> bytes:
        if command_type == "driver_message":
            return encode_driver_message(text or "", self.session.version)
        if command_type == "snapshot_request":
            return encode_snapshot_request()
        if command_type == "tachograph_request":
            return encode_tachograph_request(text or "")
        return encode_raw_command(text or "")

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the device's connection is closing")
        self.writer.write(data)

    async def _store(self, outcome: Outcome) -> bool:
        """Stores what the outcome's answer acknowledges; False: close without answering."""
        counters = self.listener.counters
        extra = outcome.driver_message is not None or outcome.file is not None
        if extra and self.device_id is not None:
            try:
                await self.listener.store.store_extra(
                    self.device_id, outcome.driver_message, outcome.file
                )
            except Exception as error:  # not stored: no answer, the device sends it again
                counters.last_error = f"storing a file failed: {error.__class__.__name__}"
                return False
        if not outcome.messages or self.device_id is None:
            return True
        try:
            await self.listener.store.store(self.device_id, list(outcome.messages))
        except Exception as error:  # the database failed: answer nothing, the device retries
            counters.last_error = f"storing messages failed: {error.__class__.__name__}"
            return False
        counters.messages_accepted += len(outcome.messages)
        return True
