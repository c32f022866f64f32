"""Pure ASGI middleware: request body limit and rate-limit headers on every answer."""

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetplane.core.auth import RATELIMIT_SCOPE_KEY
from fleetplane.core.errors import BodyTooLarge, payload_too_large


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, by Content-Length or while streaming, so a
    client cannot make the server buffer without bound."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await payload_too_large(self.max_bytes)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimitHeadersMiddleware:
    """Copies the caller's rate-limit figures onto every answer, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                figures: dict[str, str] | None = scope.get(RATELIMIT_SCOPE_KEY)
                if figures:
                    message["headers"] = _merge(message.get("headers", []), figures)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _merge(headers: Any, figures: dict[str, str]) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    extra = [
        (name.lower().encode(), value.encode())
        for name, value in figures.items()
        if name.lower().encode() not in present
    ]
    return [*headers, *extra]
