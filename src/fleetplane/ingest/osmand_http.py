"""OsmAnd over HTTP: one request per position, answered once it is stored.

`200` when stored, `400` naming the bad field, `404` for an unknown device id. Served by its own
small HTTP server on the channel's port, bound by us first so a taken port is reported, not
fatal."""

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from fleetplane.core.db import system_session
from fleetplane.core.timeutil import utcnow
from fleetplane.ingest.listener import ChannelListener
from fleetplane.ingest.protocols.osmand import OsmandError, parse_osmand_fields, parse_osmand_json

log = logging.getLogger("fleetplane.ingest.osmand")

MAX_BODY_BYTES = 64 * 1024


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
        # log_config=None: this server must leave the process's logging as it is.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
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
        body = await request.body()
        self.counters.bytes_received += len(body) + len(request.url.query)
        if len(body) > MAX_BODY_BYTES:
            return self._refuse(413, "body too large")
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

    def _parse(self, request: Request, body: bytes) -> tuple[str, Any]:
        received_at = utcnow()
        if request.headers.get("content-type", "").startswith("application/json"):
            return parse_osmand_json(body, received_at)
        fields = dict(request.query_params)
        if body:
            fields.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return parse_osmand_fields(fields, received_at)

    def _refuse(self, status: int, reason: str) -> PlainTextResponse:
        self.counters.messages_rejected += 1
        return PlainTextResponse(reason, status_code=status)
