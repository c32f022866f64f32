"""A Wialon IPS 2.0 tracker on a real socket for end-to-end tests of what the pipeline derives:
messages as the protocol's text, sent in black boxes."""

from collections.abc import Sequence
from datetime import datetime

from fleetplane.ingest.protocols.wialon_ips import crc_text
from ingest.test_wialon_tcp_server import Tracker as SocketTracker

PER_PACKET = 60  # messages in one black box


def wialon_body(at: datetime, lat: float, lon: float, speed: float, satellites: int = 9) -> str:
    def degrees(value: float, width: int) -> str:
        whole = int(value)
        return f"{whole:0{width}d}{(value - whole) * 60:07.4f}"

    return (
        f"{at:%d%m%y;%H%M%S};{degrees(lat, 2)};N;{degrees(lon, 3)};E;{round(speed)};0;20;"
        f"{satellites};0.9;0;0;NA;NA;"
    )


class Tracker(SocketTracker):
    """A Wialon IPS 2.0 device on a real socket, logged in; every packet waits for its answer."""

    def __init__(self, port: int, imei: str) -> None:
        super().__init__(port)
        assert self.ask_packet("L", f"2.0;{imei};NA") == "#AL#1"

    def ask_packet(self, kind: str, content: str, separator: str = ";") -> str:
        covered = (content + separator).encode()
        return self.ask(f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n")

    def send(self, bodies: Sequence[str]) -> None:
        """In black boxes of PER_PACKET messages (each answered with its count)."""
        for start in range(0, len(bodies), PER_PACKET):
            chunk = bodies[start : start + PER_PACKET]
            answer = self.ask_packet("B", "|".join(chunk), "|")
            assert answer == f"#AB#{len(chunk)}", answer
