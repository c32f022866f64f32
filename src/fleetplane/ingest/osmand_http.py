"""OsmAnd over HTTP: one request per position, answered once it is stored.

`200` when stored, `400` naming the bad field, `404` for an unknown device id. Served by its own
small HTTP server on the channel's port, bound by us first so a taken port is reported, not
fatal.

Anyone can reach the port, so what one sender may hold is bounded (#7): connections beyond the
channel's limits are closed as soon as they are accepted; a request's head has at most
`osmand_max_header` bytes and must arrive within the login timeout, as must its body; a body
over `osmand_max_body` bytes is answered `413` from its `Content-Length` before it is read, and
a chunked one as soon as it passes the limit (both close the connection)."""

import asyncio
import functools
import logging
import socket
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from fleetplane.core.db import system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.ingest.listener import ChannelListener
from fleetplane.ingest.protocols.osmand import OsmandError, parse_osmand_fields, parse_osmand_json

log = logging.getLogger("fleetplane.ingest.osmand")


class _BodyTooLarge(Exception):
    pass


class OsmandHttpListener(ChannelListener):
    def __init__(self, **given: Any) -> None:
        # Devices on this transport cannot take commands: `connected` is left unused.
        super().__init__(**given)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        app = Starlette(routes=[Route("/{path:path}", self._position, methods=["GET", "POST"])])
        # log_config=None: this server must leave the process's logging as it is. h11, as it
        # bounds a request's head (httptools does not).
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            # uvicorn types `http` as a protocol class, but only calls it (with keywords), so a
            # partial binding the listener does.
            http=functools.partial(_GuardedProtocol, listener=self),  # type: ignore[arg-type]
            h11_max_incomplete_event_size=self.limits.osmand_max_header,
        )
        config.load()
        server = uvicorn.Server(config)
        # Server.serve() would take over the process's signal handlers; this server is one
        # listener among many, so it is started and stopped step by step instead.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        self._task = asyncio.create_task(self._serve_until_stopped(server, sock))

    async def _serve_until_stopped(self, server: uvicorn.Server, sock: socket.socket) -> None:
        await server.main_loop()
        await server.shutdown(sockets=[sock])

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)

    async def _position(self, request: Request) -> PlainTextResponse:
        try:
            async with asyncio.timeout(self.limits.login_timeout):
                body = await self._body(request)
        except _BodyTooLarge:
            return self._refuse(413, "body too large", close=True)
        except TimeoutError:
            return self._refuse(408, "body not received in time", close=True)
        self.counters.bytes_received += len(body) + len(request.url.query)
        try:
            unique_id, message = self._parse(request, body)
        except OsmandError as error:
            return self._refuse(400, str(error))
        async with system_session(self.sessions) as session:
            found = await self.find_device(session, self.channel_id, unique_id)
        if found is None:
            return self._refuse(404, f"unknown device {unique_id!r}")
        try:
            await self.store.store(found[0], [message])
        except Exception as error:  # the app retries on anything but 200
            self.counters.last_error = f"storing messages failed: {error.__class__.__name__}"
            return PlainTextResponse("storage unavailable", status_code=503)
        self.counters.messages_accepted += 1
        return PlainTextResponse("OK")

    async def _body(self, request: Request) -> bytes:
        """The body, refused before it is read when its declared length is over the limit,
        and as soon as a chunked one passes it."""
        limit = self.limits.osmand_max_body
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _BodyTooLarge
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _BodyTooLarge
        return bytes(body)

    def _parse(self, request: Request, body: bytes) -> tuple[str, Any]:
        received_at = utcnow()
        if request.headers.get("content-type", "").startswith("application/json"):
            return parse_osmand_json(body, received_at)
        fields = dict(request.query_params)
        if body:
            fields.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return parse_osmand_fields(fields, received_at)

    def _refuse(self, status: int, reason: str, close: bool = False) -> PlainTextResponse:
        self.counters.messages_rejected += 1
        # close: the rest of the body is not read, so the connection cannot carry another request
        headers = {"connection": "close"} if close else None
        return PlainTextResponse(reason, status_code=status, headers=headers)


class _GuardedProtocol(H11Protocol):
    """uvicorn's h11 connection with the channel's connection limits, and a deadline (the
    login timeout) for each request head, from the connection's start or the last answer:
    uvicorn's own keep-alive timeout stops at the first byte, so a head sent a byte at a time
    would hold the connection for ever."""

    def __init__(self, *args: Any, listener: OsmandHttpListener, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener
        self._host: str | None = None
        self._admitted = False
        self._head_deadline: asyncio.TimerHandle | None = None

    # asyncio types the argument as any transport (uvicorn's H11Protocol declares the same
    # ignore); a stream server's is always a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._host = peer[0] if isinstance(peer, tuple) else None
        if not self._listener.admission.admit(self._host):
            transport.abort()  # at once: a refused connection must not hold a handle
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._cancel_head_deadline()
        self._listener.admission.release(self._host)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._answering():
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._answering():
            self._arm_head_deadline()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(
            self._listener.limits.login_timeout, self._head_too_late
        )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self._listener.counters.connections_timed_out += 1
            self.transport.abort()
