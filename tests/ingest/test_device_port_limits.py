"""Device ports under abuse (#7): what an anonymous sender can make the server hold is bounded,
and the API and the other channels keep answering while one channel is flooded.

These tests run servers of their own, with small limits, on databases of their own (the shared
server's gateway would otherwise start their channels too). Connections come from several
loopback addresses (127.0.0.x), which Linux routes to this machine like any other."""

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from wialon_packets import image_header, v2

from conftest import (
    RunningServer,
    Tenant,
    create_channel,
    fresh_database,
    make_settings,
    make_tenant,
    run_in_db,
    start_server,
)
from fleetplane.config import Settings
from fleetplane.core.db import create_system_engine, session_factory, system_session
from fleetplane.devices import service as devices

SOCKET_SECONDS = 10  # far beyond any limit's reaction: reaching it means no reaction at all

GUARDED = {
    "device_connections_per_channel": 12,
    "device_connections_per_address": 8,
    "device_connections_unlimited_networks": "",  # loopback counts like any other address
    "device_unfinished_file_bytes": 64 * 1024,
    "osmand_max_body_bytes": 64 * 1024,
    "osmand_max_header_bytes": 8 * 1024,
    "auto_register_per_minute": 3,
}
IMPATIENT = {"device_login_timeout_seconds": 1, "device_idle_timeout_seconds": 2}


@contextmanager
def own_server(
    backend: str, folder: Path, **settings: Any
) -> Iterator[tuple[RunningServer, Tenant]]:
    with fresh_database(backend, folder) as url:
        running = start_server(make_settings(url, folder / "data", **settings))
        try:
            yield running, make_tenant(running, customers=1)
        finally:
            running.stop()


@pytest.fixture(scope="module")
def guarded(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Tenant]]:
    with own_server(backend, tmp_path_factory.mktemp("guarded"), **GUARDED) as running:
        yield running


@pytest.fixture(scope="module")
def impatient(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Tenant]]:
    with own_server(backend, tmp_path_factory.mktemp("impatient"), **IMPATIENT) as running:
        yield running


# --- helpers ----------------------------------------------------------------------------------


def listening_channel(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    channel = create_channel(tenant.api, enabled=True, **fields)
    wait_for(
        lambda: counters(tenant, channel)["listening"],
        lambda: f"the listener did not start: {counters(tenant, channel)}",
    )
    return channel


def counters(tenant: Tenant, channel: dict[str, Any]) -> dict[str, Any]:
    return tenant.api.get(f"/api/channels/{channel['id']}").json()["counters"] or {
        "listening": False
    }


def wait_for(condition: Any, failure: str | Any) -> None:
    """Waits for `condition`; `failure` is the message (or makes it) when it never holds."""
    deadline = time.monotonic() + SOCKET_SECONDS
    while not condition():
        assert time.monotonic() < deadline, failure() if callable(failure) else failure
        time.sleep(0.05)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=SOCKET_SECONDS, source_address=(source, 0)
    )


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (whatever it said first); False when it
    keeps it open past SOCKET_SECONDS."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def ask(sock: socket.socket, packet: bytes, answers: int = 1) -> list[str]:
    sock.sendall(packet)
    received = b""
    while received.count(b"\r\n") < answers:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        received += chunk
    return received.decode().split("\r\n")[:answers]


def device(tenant: Tenant, channel: dict[str, Any], unique_id: str) -> dict[str, Any]:
    body = tenant.device_body(channel_id=channel["id"], unique_id=unique_id)
    response = tenant.api.post("/api/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# --- connection limits ------------------------------------------------------------------------


def test_connections_over_the_per_address_limit_are_closed_at_once(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant)
    held = [connect(channel["port"], "127.0.0.2") for _ in range(8)]
    try:
        wait_for(lambda: counters(tenant, channel)["connections"] == 8, "not all accepted")
        ninth = connect(channel["port"], "127.0.0.2")
        held.append(ninth)
        assert closed_by_server(ninth)
        other_address = connect(channel["port"], "127.0.0.3")
        held.append(other_address)
        assert ask(other_address, v2("L", "2.0;UNKNOWN1;NA")) == ["#AL#0"]
        assert counters(tenant, channel)["connections_refused"] == 1
    finally:
        close_all(held)


def test_the_api_and_other_channels_answer_while_a_channel_is_flooded(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = guarded
    flooded = listening_channel(tenant)
    other = listening_channel(tenant)
    device(tenant, other, "FLOODSAFE1")
    sources = [f"127.0.0.{number}" for number in range(10, 15)]
    flood = [connect(flooded["port"], source) for source in sources for _ in range(6)]
    try:
        refused = [sock for sock in flood if closed_by_server_quickly(sock)]
        assert len(refused) == len(flood) - 12  # the channel holds 12 connections
        seen = counters(tenant, flooded)
        assert (seen["connections"], seen["connections_refused"]) == (12, len(flood) - 12)
        # the API answers, and a device on another channel logs in and is acknowledged
        assert tenant.api.get("/api/channels").status_code == 200
        with connect(other["port"]) as tracker:
            assert ask(tracker, v2("L", "2.0;FLOODSAFE1;NA")) == ["#AL#1"]
            data = "251126;120000;5656.9760;N;02406.3120;E;33;90;12;9"
            assert ask(tracker, v2("SD", data)) == ["#ASD#1"]
    finally:
        close_all(flood)


def closed_by_server_quickly(sock: socket.socket) -> bool:
    """Whether a flood connection was refused: those are closed before anything is sent;
    accepted ones stay open (for the login timeout), so a short wait tells them apart."""
    sock.settimeout(1)
    try:
        return closed_by_server(sock)
    finally:
        sock.settimeout(SOCKET_SECONDS)


def test_the_process_cap_leaves_room_below_the_open_file_limit(
    tmp_path: Path, backend: str
) -> None:
    from fleetplane.ingest.limits import DeviceLimits, connection_budget, open_file_limit

    limits = DeviceLimits.from_settings(Settings())
    assert limits.connections_total == connection_budget(open_file_limit())
    assert limits.connections_total <= open_file_limit() - 256
    assert limits.connections_per_channel < limits.connections_total
    assert connection_budget(1024) == 768 and connection_budget(20_000) == 15_000
    # all channels together stop at the process cap
    settings = {**GUARDED, "device_connections_total": 10}
    with own_server(backend, tmp_path, **settings) as (_, tenant):
        first, second = listening_channel(tenant), listening_channel(tenant)
        held = [connect(first["port"], f"127.0.0.{20 + n // 4}") for n in range(8)]
        try:
            wait_for(lambda: counters(tenant, first)["connections"] == 8, "not all accepted")
            held += [connect(second["port"], "127.0.0.30") for _ in range(2)]
            wait_for(lambda: counters(tenant, second)["connections"] == 2, "not all accepted")
            over = connect(second["port"], "127.0.0.31")
            held.append(over)
            assert closed_by_server(over)
            assert counters(tenant, second)["connections_refused"] == 1
            assert tenant.api.get("/api/channels").status_code == 200
        finally:
            close_all(held)


def test_osmand_connections_over_the_limit_are_closed_at_once(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant, protocol="osmand", transport="http")
    held = [connect(channel["port"], "127.0.0.40") for _ in range(8)]
    try:
        wait_for(
            lambda: counters(tenant, channel)["connections"] == 8,
            lambda: f"not all accepted: {counters(tenant, channel)}",
        )
        ninth = connect(channel["port"], "127.0.0.40")
        held.append(ninth)
        assert closed_by_server(ninth), counters(tenant, channel)
        assert counters(tenant, channel)["connections_refused"] == 1, counters(tenant, channel)
    finally:
        close_all(held)


def test_a_connection_holds_only_a_logins_worth_of_bytes_before_its_login(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    """An unfinished line is held in memory until its end; before a login that is anyone's
    line, so it may be only as long as a login (not 2 MiB on each of thousands of sockets)."""
    _, tenant = guarded
    channel = listening_channel(tenant)
    device(tenant, channel, "BIGLINE001")
    with connect(channel["port"], "127.0.0.20") as sock:
        sock.sendall(b"#D#" + b"1" * 64 * 1024)  # no line end: it would wait for more
        assert ask(sock, b"") == ["#AD#-1"]
        # the rest of that line is dropped as it comes, and the connection goes on
        sock.sendall(b"2" * 64 * 1024 + b"\r\n")
        assert ask(sock, v2("L", "2.0;BIGLINE001;NA")) == ["#AL#1"]
        # once logged in, a long black box is taken whole
        message = "251126;120000;5656.9760;N;02406.3120;E;33;90;12;9;NA;0;0;;NA;"
        black_box = "|".join([message] * 2000).encode() + b"|"
        assert len(black_box) > 64 * 1024
        assert ask(sock, v2("B", black_box, b"")) == ["#AB#2000"]


# --- timeouts ---------------------------------------------------------------------------------


def test_a_connection_that_does_not_log_in_is_closed(
    impatient: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = impatient
    channel = listening_channel(tenant)
    with connect(channel["port"]) as sock:
        # pings keep it from being idle, but do not log it in
        sock.settimeout(0.3)
        deadline = time.monotonic() + SOCKET_SECONDS
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"#P#\r\n")
                closed = sock.recv(4096) == b"" or closed_by_server(sock)
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
        assert closed
    assert counters(tenant, channel)["connections_timed_out"] >= 1


def test_a_silent_logged_in_connection_is_closed(impatient: tuple[RunningServer, Tenant]) -> None:
    _, tenant = impatient
    channel = listening_channel(tenant)
    device(tenant, channel, "SILENT0001")
    with connect(channel["port"]) as sock:
        assert ask(sock, v2("L", "2.0;SILENT0001;NA")) == ["#AL#1"]
        assert closed_by_server(sock)


def test_an_osmand_request_head_sent_a_byte_at_a_time_is_cut_off(
    impatient: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = impatient
    channel = listening_channel(tenant, protocol="osmand", transport="http")
    with connect(channel["port"]) as sock:
        sock.sendall(b"GET /?id=SLOW&lat=1&lon=2 HTTP/1.1\r\n")
        closed = False
        deadline = time.monotonic() + SOCKET_SECONDS
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
                time.sleep(0.2)
            except ConnectionError:
                closed = True
            if not closed:
                sock.settimeout(0.01)
                try:
                    closed = sock.recv(4096) == b""
                except TimeoutError:
                    pass
                except ConnectionError:
                    closed = True
        assert closed


# --- OsmAnd request size ----------------------------------------------------------------------


def http_answer(sock: socket.socket) -> int:
    """The status of the answer the server sends (and then closes with)."""
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {received!r}")
        received += chunk
    return int(received.split(b" ", 2)[1])


def test_an_osmand_body_declared_too_large_is_refused_before_it_is_sent(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant, protocol="osmand", transport="http")
    with connect(channel["port"], "127.0.0.50") as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 300000000\r\n\r\nid=X&"
        )
        assert http_answer(sock) == 413
        assert closed_by_server(sock)


def test_a_chunked_osmand_body_is_cut_at_the_limit(guarded: tuple[RunningServer, Tenant]) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant, protocol="osmand", transport="http")
    chunk = b"a" * 16 * 1024
    with connect(channel["port"], "127.0.0.51") as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:  # the body never ends: only the limit can stop it
            for _ in range(64):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except ConnectionError:
            pass  # refused while sending: the answer is waiting in the socket
        assert http_answer(sock) == 413


def test_osmand_request_heads_are_bounded(guarded: tuple[RunningServer, Tenant]) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant, protocol="osmand", transport="http")
    headers = b"".join(b"X-Padding-%d: %s\r\n" % (n, b"p" * 1000) for n in range(64))
    with connect(channel["port"], "127.0.0.52") as sock:
        try:
            sock.sendall(b"GET /?id=NOSUCHDEVICE&lat=1&lon=2 HTTP/1.1\r\nHost: x\r\n" + headers)
            sock.sendall(b"\r\n")
        except ConnectionError:
            pass
        assert http_answer(sock) in (400, 431)
        assert closed_by_server(sock)


# --- image and tachograph blocks ----------------------------------------------------------------


def spooled(server: RunningServer) -> list[int]:
    """Sizes of the unfinished files waiting on disk."""
    folder = server.settings.data_dir / "files" / "spool"
    sizes = []
    for path in folder.glob("*") if folder.exists() else []:
        with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
            sizes.append(path.stat().st_size)
    return sorted(sizes)


def test_image_blocks_wait_on_disk_within_the_devices_cap(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    server, tenant = guarded
    channel = listening_channel(tenant)
    device(tenant, channel, "CAMERA0001")
    block = b"\xff\xd8\xff" + b"b" * (40 * 1024 - 3)
    with connect(channel["port"], "127.0.0.60") as sock:
        assert ask(sock, v2("L", "2.0;CAMERA0001;NA")) == ["#AL#1"]
        assert ask(sock, image_header(len(block), 0, 2, block) + block) == ["#AI#0;1"]
        assert spooled(server) == [len(block)]
        # a second 40 KiB block would put the device over its 64 KiB of unfinished files
        assert ask(sock, image_header(len(block), 1, 2, block) + block) == ["#AI#1;0"]
        assert spooled(server) == []
        assert ask(sock, b"#P#\r\n") == ["#AP#"]  # the connection is still usable
        assert ask(sock, image_header(len(block), 0, 2, block) + block) == ["#AI#0;1"]
        assert spooled(server) == [len(block)]
    wait_for(lambda: spooled(server) == [], "the ended connection's spool was left behind")


# --- auto-registration ------------------------------------------------------------------------


def test_a_channel_registers_only_so_many_devices_a_minute(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    _, tenant = guarded
    channel = listening_channel(tenant, auto_register=True)
    answers = []
    for number in range(5):
        with connect(channel["port"], "127.0.0.70") as sock:
            answers += ask(sock, v2("L", f"2.0;NEWDEVICE{number};NA"))
    assert answers == ["#AL#1"] * 3 + ["#AL#0"] * 2
    found = tenant.api.get("/api/devices", params={"channel_id": channel["id"]}).json()["items"]
    assert sorted(d["unique_id"] for d in found) == ["NEWDEVICE0", "NEWDEVICE1", "NEWDEVICE2"]


def test_a_channel_registers_only_so_many_devices_in_all(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    server, tenant = guarded
    channel = create_channel(tenant.api, auto_register=True)
    known = device(tenant, channel, "ADDEDBYHAND")
    registrations = devices.RegistrationLimit(per_minute=100, max_devices=2)

    def find(unique_id: str) -> Any:
        async def work(session: Any) -> Any:
            return await devices.find_or_register_on_channel(
                session, channel["id"], unique_id, registrations
            )

        return run_in_db(server.settings, work)

    assert find("AUTO1") is not None and find("AUTO2") is not None
    assert find("AUTO3") is None  # two were registered by the channel: no more
    assert find("ADDEDBYHAND") == (known["id"], None)  # devices added by hand do not count
    assert find("AUTO1") is not None  # and the registered ones stay known


RACING_LOGINS = 8


def test_racing_logins_never_pass_the_channel_total(
    guarded: tuple[RunningServer, Tenant],
) -> None:
    server, tenant = guarded
    channel = create_channel(tenant.api, auto_register=True)
    registrations = devices.RegistrationLimit(per_minute=100, max_devices=2)

    async def log_in_at_once() -> list[Any]:
        engine = create_system_engine(server.settings, pool_size=RACING_LOGINS)
        sessions = session_factory(engine)

        async def log_in(unique_id: str) -> Any:
            async with system_session(sessions) as session:
                return await devices.find_or_register_on_channel(
                    session, channel["id"], unique_id, registrations
                )

        try:
            logins = (log_in(f"RACER{n}") for n in range(RACING_LOGINS))
            return await asyncio.gather(*logins)
        finally:
            await engine.dispose()

    found = asyncio.run(log_in_at_once())
    assert sum(device is not None for device in found) == 2, found
    listed = tenant.api.get("/api/devices", params={"channel_id": channel["id"]}).json()
    assert len(listed["items"]) == 2
