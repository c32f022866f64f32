"""Framing of the TCP byte stream: splits, merges, compression, binary blocks, limits."""

import os
import zlib

import pytest
from wialon_packets import D_BODY, SD_BODY, compress, image_header, tachograph_header, v2

from fleetplane.ingest.protocols.wialon_ips import (
    BinaryFrame,
    FrameError,
    TextFrame,
    WialonFramer,
    WialonLimits,
)

STREAM_PACKETS = [
    v2("L", "2.0;123456789012345;NA"),
    v2("SD", SD_BODY),
    v2("D", D_BODY),
    b"#P#\r\n",
    v2("B", SD_BODY + "|" + SD_BODY, b"|"),
]


def lines(frames: list) -> list[bytes]:
    assert all(isinstance(frame, TextFrame) for frame in frames), frames
    return [frame.line for frame in frames]


def expected_lines() -> list[bytes]:
    return [packet.removesuffix(b"\r\n") for packet in STREAM_PACKETS]


def test_merged_packets_in_one_read() -> None:
    assert lines(WialonFramer().feed(b"".join(STREAM_PACKETS))) == expected_lines()


def test_byte_by_byte() -> None:
    framer = WialonFramer()
    frames = []
    for byte in b"".join(STREAM_PACKETS):
        frames += framer.feed(bytes([byte]))
    assert lines(frames) == expected_lines()
    assert framer.buffered == 0


@pytest.mark.parametrize("size", [2, 3, 7, 13, 64, 1000])
def test_any_chunking(size: int) -> None:
    stream = b"".join(STREAM_PACKETS) * 3
    framer = WialonFramer()
    frames = []
    for start in range(0, len(stream), size):
        frames += framer.feed(stream[start : start + size])
    assert lines(frames) == expected_lines() * 3


def test_bare_newline_and_empty_lines() -> None:
    assert lines(WialonFramer().feed(b"#P#\n\r\n\n#P#\r\n")) == [b"#P#", b"#P#"]


def test_partial_line_waits() -> None:
    framer = WialonFramer()
    assert framer.feed(b"#SD#2704") == []
    assert framer.buffered == 8
    assert framer.feed(b"\r") == []
    assert lines(framer.feed(b"\n")) == [b"#SD#2704"]


def test_compressed_packets_mixed_with_plain_ones() -> None:
    stream = b"#P#\r\n" + compress(v2("SD", SD_BODY)) + b"#P#\r\n" + compress(b"#P#")
    assert lines(WialonFramer().feed(stream)) == [
        b"#P#",
        v2("SD", SD_BODY).removesuffix(b"\r\n"),
        b"#P#",
        b"#P#",
    ]


def test_compressed_packet_byte_by_byte() -> None:
    framer = WialonFramer()
    frames = []
    for byte in compress(v2("D", D_BODY)) + b"#P#\r\n":
        frames += framer.feed(bytes([byte]))
    assert lines(frames) == [v2("D", D_BODY).removesuffix(b"\r\n"), b"#P#"]


def test_compressed_length_is_little_endian() -> None:
    body = "|".join(
        f"270413;{i % 24:02d}{i % 60:02d}01;55{i % 60:02d}.{i * 7919 % 10000:04d};N;"
        f"037{i % 60:02d}.{i * 104729 % 10000:04d};E;{i % 90};{i * 37 % 360};{i};{i % 12}"
        for i in range(60)
    )
    packet = compress(v2("B", body, b"|"))
    assert len(packet) - 3 > 255  # the high byte matters
    assert lines(WialonFramer().feed(packet)) == [v2("B", body, b"|").removesuffix(b"\r\n")]


def test_zlib_bomb_is_refused_without_inflating_it_all() -> None:
    limits = WialonLimits(max_inflated=10_000)
    bomb = zlib.compress(b"#D#" + b"0" * 5_000_000, 9)
    assert len(bomb) < 65536
    packet = b"\xff" + len(bomb).to_bytes(2, "little") + bomb
    framer = WialonFramer(limits)
    [error] = framer.feed(packet + b"#P#\r\n")[:1]
    assert isinstance(error, FrameError) and not error.fatal
    assert error.packet.startswith(b"#D#")
    assert lines(framer.feed(b"#P#\r\n")) == [b"#P#"]


@pytest.mark.parametrize(
    "payload",
    [b"not zlib at all", zlib.compress(b"#P#")[:-3], b""],
    ids=["garbage", "truncated", "empty"],
)
def test_broken_compressed_packet_is_fatal(payload: bytes) -> None:
    packet = b"\xff" + len(payload).to_bytes(2, "little") + payload
    [error] = WialonFramer().feed(packet)
    assert isinstance(error, FrameError) and error.fatal


def test_compressed_empty_packet_is_fatal() -> None:
    [error] = WialonFramer().feed(compress(b"\r\n"))
    assert isinstance(error, FrameError) and error.fatal


def test_line_over_the_limit_is_refused_and_skipped() -> None:
    framer = WialonFramer(WialonLimits(max_line=1000))
    frames = framer.feed(b"#B#" + b"1" * 600)
    assert frames == []
    [error] = framer.feed(b"2" * 600)
    assert isinstance(error, FrameError) and not error.fatal
    assert error.packet.startswith(b"#B#")
    assert framer.buffered == 0
    for _ in range(100):  # the rest of the line is dropped as it comes, never held
        assert framer.feed(b"3" * 10_000) == []
        assert framer.buffered == 0
    assert lines(framer.feed(b"4\r\n#P#\r\n")) == [b"#P#"]


def test_complete_line_over_the_limit_in_one_read() -> None:
    framer = WialonFramer(WialonLimits(max_line=100))
    frames = framer.feed(b"#D#" + b"x" * 200 + b"\r\n#P#\r\n")
    assert isinstance(frames[0], FrameError) and frames[0].packet.startswith(b"#D#")
    assert lines(frames[1:]) == [b"#P#"]


def test_default_line_limit_holds_a_full_black_box() -> None:
    body = "|".join([D_BODY] * 5000)
    packet = v2("B", body, b"|")
    assert len(packet) < WialonLimits().max_line
    assert lines(WialonFramer().feed(packet)) == [packet.removesuffix(b"\r\n")]


def test_image_block_reads_exactly_size_bytes() -> None:
    payload = b"\r\n#P#\r\n\xff\x00binary"  # looks like packets, but is the block
    stream = image_header(len(payload), 0, 0, payload) + payload + b"#P#\r\n"
    frames = WialonFramer().feed(stream)
    assert frames[0] == BinaryFrame(image_header(len(payload), 0, 0, payload)[:-2], payload)
    assert lines(frames[1:]) == [b"#P#"]


def test_binary_block_byte_by_byte() -> None:
    payload = os.urandom(300)
    stream = tachograph_header("7", 300, 0, payload) + payload + b"#P#\r\n"
    framer = WialonFramer()
    frames = []
    for byte in stream:
        frames += framer.feed(bytes([byte]))
        assert framer.buffered <= 400
    assert isinstance(frames[0], BinaryFrame) and frames[0].payload == payload
    assert lines(frames[1:]) == [b"#P#"]


def test_zero_size_block() -> None:
    frames = WialonFramer().feed(image_header(0, 0, 0, b"") + b"#P#\r\n")
    assert frames[0] == BinaryFrame(image_header(0, 0, 0, b"")[:-2], b"")
    assert lines(frames[1:]) == [b"#P#"]


def test_tachograph_info_is_not_a_binary_header() -> None:
    assert lines(WialonFramer().feed(b"#IT#010524;120000;D1;7;3;ABCD\r\n#P#\r\n")) == [
        b"#IT#010524;120000;D1;7;3;ABCD",
        b"#P#",
    ]


@pytest.mark.parametrize(
    "header",
    [b"#I#big;0;0;010524;120000;p.jpg;0000\r\n", b"#T#7;-5;0;0000\r\n", b"#T#7\r\n"],
)
def test_unreadable_block_size_is_fatal(header: bytes) -> None:
    [error] = WialonFramer().feed(header)
    assert isinstance(error, FrameError) and error.fatal
    assert error.packet == header[:-2]


def test_block_over_the_limit_is_fatal_and_not_buffered() -> None:
    framer = WialonFramer(WialonLimits(max_block=1000))
    [error] = framer.feed(image_header(1001, 0, 0, b"x"))
    assert isinstance(error, FrameError) and error.fatal
    assert framer.buffered == 0


def test_compressed_block_header_with_the_block_inside() -> None:
    payload = b"\x00\x01\x02\r\n"
    header = image_header(len(payload), 0, 0, payload)
    frames = WialonFramer().feed(compress(header + payload) + b"#P#\r\n")
    assert frames[0] == BinaryFrame(header[:-2], payload)
    assert lines(frames[1:]) == [b"#P#"]


def test_compressed_block_header_with_the_block_after_it() -> None:
    payload = b"\xff\xfe\xfd"
    header = image_header(len(payload), 0, 0, payload)
    frames = WialonFramer().feed(compress(header) + payload + b"#P#\r\n")
    assert frames[0] == BinaryFrame(header[:-2], payload)
    assert lines(frames[1:]) == [b"#P#"]


def test_compressed_block_of_the_wrong_size() -> None:
    header = image_header(10, 0, 0, b"x")
    [error] = WialonFramer().feed(compress(header + b"short"))
    assert isinstance(error, FrameError) and not error.fatal
