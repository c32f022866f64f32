"""The HTTP server: uvicorn, with limits on request headers, built one way for
`fleetplane serve` and for the tests.

uvicorn parses with httptools when it is installed (the fast path), with h11 otherwise. Neither
bounds what a client may send before its headers end in every way we need: httptools (llhttp)
keeps an unfinished header in memory however long it grows, h11 limits only the bytes, and
neither closes a connection whose headers never end. So the connection's protocol is a small
subclass of uvicorn's that counts header bytes and headers as they arrive, refuses too much with
`431` and closes, and gives a client `header_timeout_seconds` to finish its request line and
headers and then `body_timeout_seconds` to finish its body (`408`, closed): a body sent a byte
at a time would otherwise hold its connection, before any key is checked, for ever.
"""

import asyncio
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fleetplane.config import Settings, open_file_limit
from fleetplane.core.errors import problem_response

if TYPE_CHECKING:
    from uvicorn.server import Protocols

Parser = Literal["auto", "httptools", "h11"]


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    max_bytes: int  # request line and headers together
    max_count: int
    # from the connection's start (or a later request's first byte) to the headers' end
    timeout_seconds: float
    body_timeout_seconds: float  # from the headers' end to the body's end
    max_connections: int  # open at once; one more is closed as soon as it is accepted


SHUTDOWN_GRACE_SECONDS = 5


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str | None = None,
    parser: Parser = "auto",
) -> uvicorn.Config:
    """The uvicorn configuration every server of the platform runs with."""
    limits = HeaderLimits(
        settings.max_header_bytes,
        settings.max_headers,
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.max_http_connections or max(64, open_file_limit() // 8),
    )
    return uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=log_level or settings.log_level,
        access_log=False,
        http=limited_protocol(parser, limits),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Event streams never end by themselves: without a grace limit a stop would wait for
        # every client to go, and the listeners and steps would go on until then.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def limited_protocol(parser: Parser, limits: HeaderLimits) -> type[asyncio.Protocol]:
    """uvicorn's protocol for `parser` ("auto": httptools when installed), with the limits."""
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    base: type[Any] = _limited_httptools() if parser == "httptools" else _LimitedH11
    return type(base.__name__, (base,), {"limits": limits})


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that breaks a limit."""


def _refusal(status: int, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer closing the connection, written straight to the socket: the
    request never reaches the application."""
    body = problem_response(status, code, detail).body
    return (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + bytes(body)


_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


class _HeaderDeadline(asyncio.Protocol):
    """The timeouts shared by both parsers: a request's line and headers must be complete
    within `limits.timeout_seconds` of the connection's start (its first request) or of a
    later request's first byte, and its body within `limits.body_timeout_seconds` of the
    headers' end."""

    limits: ClassVar[HeaderLimits]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: "set[Protocols]"  # the server's open connections, this one among them
    cycle: Any  # uvicorn's request-response cycle of the current request, or None
    _deadline: asyncio.TimerHandle | None = None
    _body_deadline: asyncio.TimerHandle | None = None
    _request_started = False  # some of them belong to a request (not just an idle connection)

    # asyncio types the argument as any transport; a stream server's is always a Transport
    # (uvicorn's protocols declare the same).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Each connection holds a file handle, whether it sends anything or not: past the
            # cap it goes back at once, so idle sockets cannot starve the process of handles.
            transport.abort()
            return
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        self._disarm_body_deadline()
        super().connection_lost(exc)

    def _arm_body_deadline(self) -> None:
        if self._body_deadline is None:
            seconds = self.limits.body_timeout_seconds
            self._body_deadline = self.loop.call_later(seconds, self._body_too_slow)

    def _disarm_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:  # else: answered already
            detail = f"The request body did not arrive within {self.limits.body_timeout_seconds} s."
            self.transport.write(_refusal(408, "request_timeout", detail))
        self.transport.close()

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.timeout_seconds, self._too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._request_started:
            detail = f"The request headers did not arrive within {self.limits.timeout_seconds} s."
            self.transport.write(_refusal(408, "request_timeout", detail))
        self.transport.close()  # a connection that sent nothing is just closed

    def _refuse_headers(self, detail: str) -> None:
        self._disarm_deadline()
        if not self.transport.is_closing():
            self.transport.write(_refusal(431, "request_header_fields_too_large", detail))
            self.transport.close()

    def _too_large(self) -> str:
        return (
            f"The request line and headers are larger than the limit of "
            f"{self.limits.max_bytes} bytes, or more than {self.limits.max_count} headers."
        )


def _limited_httptools() -> type[Any]:
    """Defined on demand: uvicorn's httptools protocol imports httptools, which is optional."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpTools(_HeaderDeadline, HttpToolsProtocol):
        """httptools keeps an unfinished header whole until it ends, so the bytes received
        while headers are awaited are counted around each feed to the parser (bounding memory
        by the limit plus one read), and the finished headers are counted exactly as the
        parser hands them over."""

        _awaiting_headers = True
        _request_bytes = 0  # received while the current request's headers are awaited
        _header_size = 0
        _header_count = 0
        _refused = False

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers:
                self._request_bytes += len(data)
                self._arm_deadline()
            super().data_received(data)
            if self._awaiting_headers and self._request_bytes > self.limits.max_bytes:
                self._refuse_headers(self._too_large())

        def on_message_begin(self) -> None:
            self._header_size = self._header_count = 0
            self._arm_deadline()  # a pipelined request may begin in the previous one's read
            self._request_started = True
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url), headers=0)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4, headers=1)  # ": " and CRLF
            super().on_header(name, value)

        def _count(self, size: int, headers: int) -> None:
            self._header_size += size
            self._header_count += headers
            if (
                self._header_size > self.limits.max_bytes
                or self._header_count > self.limits.max_count
            ):
                self._refused = True
                raise _Refused  # stops the parser; uvicorn answers through send_400_response

        def on_headers_complete(self) -> None:
            self._awaiting_headers = self._request_started = False
            self._disarm_deadline()
            self._arm_body_deadline()  # a request without a body completes at once
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm_body_deadline()
            super().on_message_complete()
            self._awaiting_headers = True  # the next request on this connection
            self._request_bytes = 0

        def send_400_response(self, msg: str) -> None:
            if self._refused:
                self._refuse_headers(self._too_large())
            else:
                super().send_400_response(msg)

    return LimitedHttpTools


class _LimitedConnection(h11.Connection):
    """h11 bounds the bytes of an unfinished request itself (431); a request that arrives
    whole in one read passes that check, so its size and header count are checked here. The
    status h11 suggests for what it refused is kept for the answer."""

    def __init__(self, limits: HeaderLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_bytes)
        self.limits = limits
        self.refused_with: int | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as error:
            self.refused_with = error.error_status_hint
            raise
        if isinstance(event, h11.Request) and self._too_large(event):
            self.refused_with = 431
            raise h11.RemoteProtocolError("request headers too large", error_status_hint=431)
        return event

    def _too_large(self, request: h11.Request) -> bool:
        size = len(request.target) + sum(
            len(name) + len(value) + 4 for name, value in request.headers
        )
        return size > self.limits.max_bytes or len(request.headers) > self.limits.max_count


class _LimitedH11(_HeaderDeadline, H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _LimitedConnection = _LimitedConnection(self.limits)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts a pipelined request already received
        self._follow_request()

    def _follow_request(self) -> None:
        """Arms the header deadline while part of a request's headers waits in h11's buffer,
        and the body deadline while its body is awaited."""
        if self.conn.their_state is h11.SEND_BODY:
            self._arm_body_deadline()
        else:
            self._disarm_body_deadline()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._request_started = True
            self._arm_deadline()
        elif self.conn.their_state is not h11.IDLE:
            self._request_started = False
            self._disarm_deadline()

    def send_400_response(self, msg: str) -> None:
        if self.conn.refused_with == 431:
            self._refuse_headers(self._too_large())
        else:
            super().send_400_response(msg)
