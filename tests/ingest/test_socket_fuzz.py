"""Fuzzing the running server's Wialon IPS TCP listener over real sockets.

Whatever a connection carries (random bytes, damaged packets, absurd lengths, endless lines),
the server answers only with spec answer lines or closes the connection, logs no error, and
goes on serving: a fresh device connection still logs in and has its data stored.
"""

import itertools
import logging
import re
import socket
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wialon_packets import D_BODY, SD_BODY, compress, image_header, tachograph_header, v1, v2

from conftest import RunningServer, create_channel, make_tenant, shared_client

SPEC_ANSWER = re.compile(
    rb"#AL#(1|0|01|10)"
    rb"|#ASD#(-1|0|1|10|11|12|13)"
    rb"|#AD#(-1|0|1|10|11|12|13|14|15|16)"
    rb"|#AB#\d*"
    rb"|#AP#"
    rb"|#AM#(1|0|01)"
    rb"|#AI#(\d+;(1|0|01)|NA;0|1)"
    rb"|#AIT#(1|0|01)"
    rb"|#AT#(\d+;(1|0|01)|NA;0|1)"
)
IO_TIMEOUT = 10.0  # longer than any honest answer; a server that is silent this long hangs
OVERSIZED = 5 * 1024 * 1024  # more than twice the listener's 2 MiB line limit
FUZZ = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Listener:
    """An enabled channel of the running server with one known device on it."""

    server: RunningServer
    port: int
    imei: str
    errors: list[logging.LogRecord]

    @property
    def login(self) -> bytes:
        return v2("L", f"2.0;{self.imei};NA")


class ErrorRecords(logging.Handler):
    """Errors the server logs (an unhandled exception in a connection, a failed batch)."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def listener(server: RunningServer) -> Iterator[Listener]:
    tenant = make_tenant(server, "Fuzz provider", customers=0)
    channel = create_channel(tenant.api, enabled=True, transport="tcp")
    imei = str(uuid.uuid4().int)[:15]
    device = tenant.api.post("/api/devices", json=tenant.device_body(
        channel_id=channel["id"], unique_id=imei
    ))  # fmt: skip
    assert device.status_code == 201, device.text
    errors: list[logging.LogRecord] = []
    handler = ErrorRecords(errors)
    logging.getLogger().addHandler(handler)
    try:
        found = Listener(server, channel["port"], imei, errors)
        wait_for_listener(found.port)
        yield found
    finally:
        logging.getLogger().removeHandler(handler)
        tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def wait_for_listener(port: int) -> None:
    """The gateway starts a new channel's listener just after answering the API call."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# Talking to the listener
# --------------------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_and_collect(port: int, chunks: list[bytes]) -> tuple[bytes, bool]:
    """Sends the chunks, then ends the sending side, so the server has seen everything and
    must answer and close; returns (all it answered, whether it reset the connection)."""
    with connect(port) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(0.002)  # separate reads on the server, so packets span them
            sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise AssertionError("the server stopped reading") from None
        except OSError:
            pass  # the server closed the connection before reading everything: allowed
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, True
        except TimeoutError:
            raise AssertionError(f"the server hung; it answered {received[-200:]!r}") from None
        if not chunk:
            return received, False
        received += chunk


def assert_spec_answers(received: bytes, reset: bool) -> None:
    *lines, tail = received.split(b"\r\n")
    # A reset may cut the last answer short; a normal close comes after whole lines only.
    assert reset or tail == b"", f"unterminated answer {tail[:100]!r}"
    for line in lines:
        assert SPEC_ANSWER.fullmatch(line), f"not a spec answer: {line[:100]!r}"


def ask(sock: socket.socket, packet: bytes) -> bytes:
    """Sends one packet and reads one answer line."""
    sock.sendall(packet)
    return read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; it had sent {received!r}")
        received += chunk
    return received.removesuffix(b"\r\n")


def assert_still_serving(listener: Listener) -> None:
    """A fresh device connection logs in and has its data stored; the HTTP side is up; and
    nothing went wrong inside the server on the way."""
    with connect(listener.port) as sock:
        assert ask(sock, listener.login) == b"#AL#1"
        assert ask(sock, v2("D", D_BODY)) == b"#AD#1"
    health = shared_client(listener.server.base_url).get("/healthz")
    assert health.status_code == 200, health.text
    assert not listener.errors, [record.getMessage() for record in listener.errors]


def fuzz(listener: Listener, chunks: list[bytes]) -> None:
    listener.errors.clear()
    received, reset = send_and_collect(listener.port, chunks)
    assert_spec_answers(received, reset)
    assert_still_serving(listener)


# --------------------------------------------------------------------------------------------
# What devices (and others) may send
# --------------------------------------------------------------------------------------------

VALID_PACKETS = [
    v2("SD", SD_BODY),
    v1("SD", SD_BODY),
    v2("D", D_BODY),
    v1("D", D_BODY),
    v2("B", f"{SD_BODY}|{D_BODY}", b"|"),
    v1("B", f"{SD_BODY}|{SD_BODY}"),
    b"#P#\r\n",
    v2("M", "Hello driver"),
    compress(v2("D", D_BODY)),
    compress(b"#P#"),
    image_header(5, 0, 1, b"abcde") + b"abcde",
    image_header(3, 1, 1, b"fgh") + b"fgh",
    v2("IT", "010524;153000;DRV1;C1;1"),
    tachograph_header("C1", 4, 0, b"wxyz") + b"wxyz",
    v2("L", "2.0;999999999999999;NA"),  # a device the channel does not know
]
DATA_BODIES = {"SD": SD_BODY, "D": D_BODY, "B": f"{SD_BODY}|{D_BODY}"}
SEPARATORS = [b";", b"|", b"#", b",", b":", b"\r\n", b"\n"]
# Any text but line ends, so the packet stays one line and must be answered.
FIELD_VALUES = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "NA", "-0", "1,5", "1e309", "999999", "32768", "65536", "ü", "a:1:1"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30),
)


@st.composite
def damaged(draw: st.DrawFn, packet: bytes) -> bytes:
    """Byte-level damage: the CRC (when there is one) no longer matches."""
    for _ in range(draw(st.integers(1, 4))):
        if not packet:
            break
        at = draw(st.integers(0, len(packet) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "cut", "double"]))
        if operation == "flip":
            packet = packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
        elif operation == "insert":
            packet = packet[:at] + draw(st.binary(min_size=1, max_size=8)) + packet[at:]
        elif operation == "delete":
            packet = packet[:at] + packet[at + 1 :]
        elif operation == "cut":
            packet = packet[:at]
        else:
            separator = draw(st.sampled_from(SEPARATORS))
            packet = packet.replace(separator, separator * 2, draw(st.integers(1, 3)))
    return packet


@st.composite
def rewritten_data(draw: st.DrawFn) -> bytes:
    """A data packet with one field replaced and its CRC recomputed, so the odd value gets past
    the CRC check to the decoder and, when accepted, to the database."""
    kind = draw(st.sampled_from(sorted(DATA_BODIES)))
    at = draw(st.integers(0, DATA_BODIES[kind].count(";")))
    return with_field(kind, at, draw(FIELD_VALUES))


@st.composite
def unknown_types(draw: st.DrawFn) -> bytes:
    kind = draw(st.text(string.ascii_uppercase + string.ascii_lowercase + "#;0", max_size=6))
    body = draw(st.sampled_from([SD_BODY, D_BODY, "", "NA"]))
    return f"#{kind}#{body}\r\n".encode()


@st.composite
def compressed_headers(draw: st.DrawFn) -> bytes:
    """0xFF and a length up to 64 KiB, followed by less than (or anything but) that."""
    length = draw(st.one_of(st.just(65535), st.integers(0, 65535)))
    return b"\xff" + length.to_bytes(2, "little") + draw(st.binary(max_size=100))


@st.composite
def long_lines(draw: st.DrawFn) -> bytes:
    """Long but under the line limit: every one is decoded in full."""
    kind = draw(st.sampled_from(["D", "SD", "B", "M", "L", "XX"]))
    item = draw(st.sampled_from([b"1;", b"|", b"a:1:1,", b"x"]))
    return f"#{kind}#".encode() + item * draw(st.integers(1_000, 100_000)) + b"\r\n"


def with_field(kind: str, index: int, value: str) -> bytes:
    fields = DATA_BODIES[kind].split(";")
    fields[index] = value
    return v2(kind, ";".join(fields).encode(), b"|" if kind == "B" else b";")


PACKETS = st.one_of(
    st.sampled_from(VALID_PACKETS),
    st.sampled_from(VALID_PACKETS).flatmap(damaged),
    rewritten_data(),
    unknown_types(),
    compressed_headers(),
    long_lines(),
    st.binary(max_size=64),
)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@FUZZ
@given(logged_in=st.booleans(), data=st.binary(max_size=4096))
def test_arbitrary_bytes(listener: Listener, logged_in: bool, data: bytes) -> None:
    fuzz(listener, [listener.login + data if logged_in else data])


@FUZZ
@given(logged_in=st.booleans(), packets=st.lists(PACKETS, min_size=1, max_size=12), data=st.data())
def test_damaged_and_odd_packets(
    listener: Listener, logged_in: bool, packets: list[bytes], data: st.DataObject
) -> None:
    stream = (listener.login if logged_in else b"") + b"".join(packets)
    fuzz(listener, data.draw(chunked(stream)))


SATELLITES = 9  # field index in SD and D bodies


@FUZZ
@given(packet=rewritten_data())
@example(packet=with_field("D", SATELLITES, "40000"))  # beyond a 16-bit column
@example(packet=with_field("SD", SATELLITES, "99999999999999999999"))  # beyond 64 bits
def test_every_well_formed_data_packet_is_answered(listener: Listener, packet: bytes) -> None:
    """A data packet with a correct CRC always gets its answer code (stored, or refused with
    the code of the field at fault): closing without an answer would make the device send
    the same packet again on every connection, for ever."""
    listener.errors.clear()
    with connect(listener.port) as sock:
        assert ask(sock, listener.login) == b"#AL#1"
        answer = ask(sock, packet)
    assert re.fullmatch(rb"#A(SD|D|B)#.*", answer) and SPEC_ANSWER.fullmatch(answer), answer
    assert_still_serving(listener)


@pytest.mark.parametrize(
    ("start", "answer"),
    [(b"#D#", b"#AD#-1"), (b"#B#", b"#AB#0"), (b"not a packet", None)],
    ids=["data", "black-box", "garbage"],
)
def test_a_line_far_beyond_the_limit_is_refused_without_being_buffered(
    listener: Listener, start: bytes, answer: bytes | None
) -> None:
    """5 MiB without a line end: a packet is refused as soon as it passes the limit, before
    its end arrives, and the rest is skipped; what is not a packet closes the connection."""
    listener.errors.clear()
    with connect(listener.port) as sock:
        assert ask(sock, listener.login) == b"#AL#1"
        sent = send_without_line_end(sock, start, OVERSIZED)
        if answer is None:
            assert read_until_closed(sock)[0] == b""  # closed, without an answer
        else:
            assert sent == OVERSIZED
            assert read_line(sock) == answer  # answered although the line has not ended
            assert ask(sock, b"\r\n" + v2("D", D_BODY)) == b"#AD#1"  # in step again
    assert_still_serving(listener)


def send_without_line_end(sock: socket.socket, start: bytes, total: int) -> int:
    """Sends `start` then filler up to `total` bytes; returns how many were sent before the
    server closed the connection (all of them when it did not)."""
    sent = 0
    chunk = start + b"1" * (64 * 1024 - len(start))
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
            chunk = b"1" * 64 * 1024
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent
