"""Wialon IPS decoding speed: messages per second through the framer and the session.

The stream is what a connected device sends: a login, then single `#D#` packets and black
boxes (`#B#`) of D and SD bodies, half of the messages each way, fed in 64 KiB reads as a
socket would return them. Version 2.0 (every packet carries a CRC) and 1.1 (no CRC) are
measured separately, on one core, without storage. DESIGN.md budgets 50,000 msg/s for the whole
ingest pipeline on two cores, so decoding must stay well below half a core at that rate.

    python bench/wialon_decode.py [--messages N] [--rounds N]
"""

import argparse
import platform
import sys
import time
from datetime import UTC, datetime, timedelta

from fleetplane.ingest.protocols.wialon_ips import (
    LoginResult,
    WialonFramer,
    WialonSession,
    crc_text,
)

DESIGN_PIPELINE_RATE = 50_000
READ_SIZE = 64 * 1024
BLACK_BOX_SIZE = 100
START = datetime(2024, 5, 1, tzinfo=UTC)


def _extended_body(index: int) -> str:
    moment = START + timedelta(seconds=10 * index)
    lat = f"{5540 + index % 20:04d}.{index % 10000:04d}"
    lon = f"{3730 + index % 25:05d}.{(index * 7) % 10000:04d}"
    params = f"pwr_ext:2:12.{index % 100},odometer:1:{100000 + index},fw:3:V4.5,temp1:2:21.5"
    return (
        f"{moment:%d%m%y;%H%M%S};{lat};N;{lon};E;{index % 90};{index % 360};"
        f"{150 + index % 30};{8 + index % 5};0.9;{index % 16};0;12.71,0.02,3.6;NA;{params}"
    )


def _short_body(index: int) -> str:
    moment = START + timedelta(seconds=10 * index)
    return (
        f"{moment:%d%m%y;%H%M%S};5544.{index % 10000:04d};N;03739.6834;E;"
        f"{index % 90};{index % 360};150;9"
    )


def _packet(kind: str, content: str, separator: str, with_crc: bool) -> bytes:
    if not with_crc:
        return f"#{kind}#{content}\r\n".encode()
    covered = f"{content}{separator}".encode()
    return f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n"


def build_stream(messages: int, with_crc: bool) -> bytes:
    """A login and `messages` messages: half single #D#, half in black boxes of 100."""
    login = "2.0;860000000000001;NA" if with_crc else "860000000000001;NA"
    packets = [_packet("L", login, ";", with_crc)]
    index = 0
    while index < messages // 2:
        packets.append(_packet("D", _extended_body(index), ";", with_crc))
        index += 1
    while index < messages:
        bodies = [
            _extended_body(i) if i % 2 else _short_body(i)
            for i in range(index, min(index + BLACK_BOX_SIZE, messages))
        ]
        packets.append(_packet("B", "|".join(bodies), "|", with_crc))
        index += len(bodies)
    return b"".join(packets)


def decode_stream(stream: bytes) -> int:
    """Decoded message count; every answer must be a success."""
    framer, session = WialonFramer(), WialonSession()
    received_at = datetime.now(UTC)
    decoded = 0
    for start in range(0, len(stream), READ_SIZE):
        for frame in framer.feed(stream[start : start + READ_SIZE]):
            outcome = session.handle(frame, received_at)
            if outcome.login is not None:
                outcome = session.complete_login(LoginResult.ACCEPTED)
            if outcome.note is not None:
                raise RuntimeError(f"unexpected refusal: {outcome.note}")
            decoded += len(outcome.messages)
    return decoded


def measure(messages: int, rounds: int, with_crc: bool) -> float:
    stream = build_stream(messages, with_crc)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        decoded = decode_stream(stream)
        best = min(best, time.perf_counter() - started)
        if decoded != messages:
            raise RuntimeError(f"decoded {decoded} of {messages} messages")
    return messages / best


def main(messages: int = 100_000, rounds: int = 5) -> int:
    print(f"Python {platform.python_version()} on {platform.machine()}, one core, best of {rounds}")
    print(f"{messages:,} messages: half single #D#, half in #B# of {BLACK_BOX_SIZE}")
    for label, with_crc in (("v2.0 (CRC)", True), ("v1.1 (no CRC)", False)):
        rate = measure(messages, rounds, with_crc)
        share = DESIGN_PIPELINE_RATE / rate
        print(
            f"  {label:<14} {rate:>10,.0f} msg/s  "
            f"({share:.0%} of one core at the pipeline's {DESIGN_PIPELINE_RATE:,} msg/s)"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    sys.exit(main(arguments.messages, arguments.rounds))
