"""Request headers are bounded in size, count and time, and request bodies in time, on both
HTTP parsers uvicorn can use."""

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RunningServer, make_settings, start_server
from fleetplane.core.http_server import Parser

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module", params=["httptools", "h11"])
def limited_server(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server as `fleetplane serve` runs it (default limits but short timeouts), on each
    parser."""
    parser: Parser = request.param
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("data"),
        gateway=False,
        header_timeout_seconds=HEADER_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
    )
    running = start_server(settings, parser=parser)
    yield running
    running.stop()


def connect(server: RunningServer) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)  # a server that refuses early closes: the test reads its answer


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout, if it
    never does, fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def request(path: str = "/healthz", *headers: bytes, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: test", *headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_headers_over_the_size_limit_get_431_and_the_connection_closes(
    limited_server: RunningServer,
) -> None:
    with connect(limited_server) as sock:
        send(sock, request("/healthz", b"X-Big: " + b"a" * (40 * 1024)))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer
    assert b"request_header_fields_too_large" in answer


def test_unfinished_headers_over_the_limit_are_refused_without_waiting_for_their_end(
    limited_server: RunningServer,
) -> None:
    """What a client sends before its headers end is held only up to the limit."""
    with connect(limited_server) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (40 * 1024))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_long_url_counts_as_header_bytes(limited_server: RunningServer) -> None:
    with connect(limited_server) as sock:
        send(sock, request("/healthz?" + "a" * (40 * 1024)))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_too_many_headers_get_431(limited_server: RunningServer) -> None:
    headers = [b"X-Many-%d: v" % number for number in range(150)]
    with connect(limited_server) as sock:
        send(sock, request("/healthz", *headers))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_requests_within_the_limits_are_served(limited_server: RunningServer) -> None:
    """Up to the limits, on one kept-alive connection, pipelined, and a large body in the
    same packets as its headers (a body is not header bytes)."""
    headers = [b"X-Many-%d: %s" % (number, b"v" * 250) for number in range(95)]
    body = b'{"name": "' + b"x" * (600 * 1024) + b'"}'
    post = (
        b"POST /api/customers HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with connect(limited_server) as sock:
        send(sock, request("/healthz", *headers) + post + request("/healthz", close=True))
        answer = read_until_closed(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"401", b"200"], answer[:500]


def test_headers_that_never_end_time_out_with_408(limited_server: RunningServer) -> None:
    with connect(limited_server) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: a")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request_timeout" in answer


def post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_that_never_ends_times_out_with_408(limited_server: RunningServer) -> None:
    """Before any key is checked: the body is read first, so anyone could hold a connection
    by sending a byte of it now and then."""
    with connect(limited_server) as sock:
        send(sock, post_head("/api/customers", 1000) + b'{"name": ')
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request_timeout" in answer


def test_a_body_left_unread_after_the_answer_does_not_hold_the_connection(
    limited_server: RunningServer,
) -> None:
    with connect(limited_server) as sock:
        send(sock, post_head("/no-such-path", 1000) + b"{")
        answer = read_until_closed(sock)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"404"], answer[:300]


def test_a_connection_that_sends_nothing_is_closed(limited_server: RunningServer) -> None:
    with connect(limited_server) as sock:
        assert read_until_closed(sock) == b""


def test_the_next_request_on_a_kept_alive_connection_has_the_same_timeout(
    limited_server: RunningServer,
) -> None:
    with connect(limited_server) as sock:
        send(sock, request("/healthz") + b"GET /healthz HTTP/1.1\r\nHost: te")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"408"], answer


def test_the_test_server_runs_the_limited_protocol(server: RunningServer) -> None:
    """The shared test server is configured by the same function as `fleetplane serve`."""
    with connect(server) as sock:
        send(sock, request("/healthz", *[b"X-Many-%d: v" % n for n in range(150)]))
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")


def test_limits_come_from_settings(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url, tmp_path, gateway=False, max_headers=20, max_header_bytes=2048
    )
    running = start_server(settings)
    try:
        with connect(running) as sock:
            send(sock, request("/healthz", *[b"X-Many-%d: v" % n for n in range(25)]))
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
        with connect(running) as sock:
            send(sock, request("/healthz", b"X-Big: " + b"a" * 3000))
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
        with connect(running) as sock:
            send(sock, request("/healthz", b"X-Big: " + b"a" * 1500, close=True))
            assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        running.stop()


def test_connections_past_the_cap_are_closed_at_once(database_url: str, tmp_path: Path) -> None:
    """Idle connections cannot take every file handle: past the cap, one is closed as soon as
    it is accepted, and the others (and new ones once some close) are served."""
    settings = make_settings(database_url, tmp_path, gateway=False, max_http_connections=3)
    running = start_server(settings)
    try:
        held = [connect(running) for _ in range(3)]
        refused = connect(running)
        refused.settimeout(5)
        assert refused.recv(100) == b"", "a connection past the cap was kept"
        refused.close()
        send(held[0], request(close=True))
        assert b" 200 " in read_until_closed(held[0]).split(b"\r\n", 1)[0]
        held[0].close()
        fresh = connect(running)
        send(fresh, request(close=True))
        assert b" 200 " in read_until_closed(fresh).split(b"\r\n", 1)[0]
        for sock in [*held[1:], fresh]:
            sock.close()
    finally:
        running.stop()
