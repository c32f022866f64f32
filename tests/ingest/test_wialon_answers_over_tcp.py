"""Every answer code of the spec, v1.1 and v2.0, through a real TCP socket to the running
server: the decoder's answer tables replayed against the listener, on one connection each."""

import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from test_wialon_data import EXTENDED_CASES, SHORT_CASES
from wialon_packets import D_BODY, SD_BODY, v1, v2

from conftest import Tenant, connect_when_listening, create_channel

IMEI = "353173060000123"


class Link:
    def __init__(self, port: int) -> None:
        self.sock = connect_when_listening(port)
        self.buffer = b""

    def ask(self, packet: bytes) -> bytes:
        self.sock.sendall(packet)
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"


@pytest.fixture
def port(tenant: Tenant) -> Iterator[int]:
    channel = create_channel(tenant.api, enabled=True, transport="tcp")
    body = tenant.device_body(channel_id=channel["id"], unique_id=IMEI, password="pw1")
    assert tenant.api.post("/api/devices", json=body).status_code == 201
    yield channel["port"]
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})


def login(version: str, imei: str = IMEI, password: str = "pw1") -> bytes:
    if version == "2.0":
        return v2("L", f"2.0;{imei};{password}")
    return v1("L", f"{imei};{password}")


def data_packet(version: str, kind: str, content: str) -> bytes:
    return v2(kind, content) if version == "2.0" else v1(kind, content)


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_login_answers(port: int, version: str) -> None:
    link = Link(port)
    assert link.ask(login(version, "999999999999999")) == b"#AL#0\r\n"  # unknown device
    assert link.ask(login(version, password="wrong")) == b"#AL#01\r\n"
    if version == "2.0":
        assert link.ask(f"#L#2.0;{IMEI};pw1;0000\r\n".encode()) == b"#AL#10\r\n"  # CRC
        assert link.ask(v2("L", f"3.0;{IMEI};pw1")) == b"#AL#0\r\n"  # unknown version
    assert link.ask(login(version)) == b"#AL#1\r\n"
    assert link.ask(login(version, "999999999999998")) == b"#AL#0\r\n"  # a second IMEI
    assert link.ask(b"#P#\r\n") == b"#AP#\r\n"
    link.sock.close()


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_every_data_answer_code(port: int, version: str) -> None:
    link = Link(port)
    # before login: the packet's structure error, nothing stored
    assert link.ask(data_packet(version, "SD", SD_BODY)) == b"#ASD#-1\r\n"
    assert link.ask(data_packet(version, "D", D_BODY)) == b"#AD#-1\r\n"
    assert link.ask(data_packet(version, "M", "hi")) == b"#AM#0\r\n"
    assert link.ask(login(version)) == b"#AL#1\r\n"
    for case, content, answer in SHORT_CASES:
        assert link.ask(data_packet(version, "SD", content)) == answer, case
    for case, content, answer in EXTENDED_CASES:
        assert link.ask(data_packet(version, "D", content)) == answer, case
    link.sock.close()


def test_crc_errors_black_box_and_compression(port: int) -> None:
    link = Link(port)
    assert link.ask(login("2.0")) == b"#AL#1\r\n"
    assert link.ask(f"#SD#{SD_BODY};0000\r\n".encode()) == b"#ASD#13\r\n"
    assert link.ask(f"#D#{D_BODY};0000\r\n".encode()) == b"#AD#16\r\n"
    assert link.ask(b"#M#hello;0000\r\n") == b"#AM#01\r\n"
    bodies = [SD_BODY.replace("205601", f"2057{second:02d}") for second in range(3)]
    assert link.ask(v2("B", "|".join(bodies), separator=b"|")) == b"#AB#3\r\n"
    assert link.ask(f"#B#{'|'.join(bodies)}|0000\r\n".encode()) == b"#AB#\r\n"
    packed = v2("SD", SD_BODY.replace("205601", "205901"))
    stream = zlib.compress(packed)
    assert link.ask(b"\xff" + len(stream).to_bytes(2, "little") + stream) == b"#ASD#1\r\n"
    link.sock.close()


def test_v1_black_box(port: int) -> None:
    link = Link(port)
    assert link.ask(login("1.1")) == b"#AL#1\r\n"
    bodies: list[Any] = [SD_BODY.replace("205601", f"2101{second:02d}") for second in range(2)]
    assert link.ask(v1("B", "|".join(bodies))) == b"#AB#2\r\n"
    link.sock.close()
