"""Builders of Wialon IPS packets and a socket-free connection for the ingest tests."""

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleetplane.ingest.protocols.wialon_ips import (
    LoginResult,
    Outcome,
    WialonFramer,
    WialonLimits,
    WialonSession,
    crc_text,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
IMEI = "123456789012345"
SD_BODY = "270413;205601;5544.6025;N;03739.6834;E;1;2;3;4"
D_BODY = (
    "270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;0.8;0;0;14.77,0.02,3.6;NA;"
    "count1:1:564,fuel:2:45.8,hw:3:V4.5,SOS:1:1"
)


def v2(kind: str, content: str | bytes, separator: bytes = b";") -> bytes:
    """A v2.0 packet line: the content, the separator and the CRC over both."""
    covered = (content.encode() if isinstance(content, str) else content) + separator
    return f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n"


def v1(kind: str, content: str | bytes) -> bytes:
    body = content.encode() if isinstance(content, str) else content
    return f"#{kind}#".encode() + body + b"\r\n"


def compress(packet: bytes) -> bytes:
    stream = zlib.compress(packet)
    return b"\xff" + len(stream).to_bytes(2, "little") + stream


def image_header(size: int, index: int, last: int, crc_of: bytes | None, name: str = "p.jpg"):
    fields = f"{size};{index};{last};010524;120000;{name}"
    if crc_of is None:
        return f"#I#{fields}\r\n".encode()
    return f"#I#{fields};{crc_text(crc_of)}\r\n".encode()


def tachograph_header(code: str, size: int, index: int, crc_of: bytes | None) -> bytes:
    if crc_of is None:
        return f"#T#{code};{size};{index}\r\n".encode()
    return f"#T#{code};{size};{index};{crc_text(crc_of)}\r\n".encode()


@dataclass
class Connection:
    """A framer and a session fed like a socket would be; logins answered by `verdict`."""

    verdict: LoginResult = LoginResult.ACCEPTED
    limits: WialonLimits = field(default_factory=WialonLimits)
    outcomes: list[Outcome] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.framer = WialonFramer(self.limits)
        self.session = WialonSession(self.limits)

    def send(self, data: bytes) -> list[Outcome]:
        new: list[Outcome] = []
        for frame in self.framer.feed(data):
            outcome = self.session.handle(frame, NOW)
            if outcome.login is not None:
                self.logins.append(outcome.login.imei)
                assert outcome.answer == b""
                outcome = self.session.complete_login(self.verdict)
            new.append(outcome)
        self.outcomes.extend(new)
        return new

    def answers(self, data: bytes) -> bytes:
        return b"".join(outcome.answer for outcome in self.send(data))


def logged_in(version: str = "2.0") -> Connection:
    connection = Connection()
    login = v2("L", f"2.0;{IMEI};NA") if version == "2.0" else v1("L", f"{IMEI};NA")
    assert connection.answers(login) == b"#AL#1\r\n"
    return connection
