"""Property tests: whatever bytes arrive, the framer and session never raise, hold bounded
memory, and every packet gets a spec answer, is explicitly ignored, or closes the connection."""

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wialon_packets import (
    D_BODY,
    IMEI,
    NOW,
    SD_BODY,
    compress,
    image_header,
    tachograph_header,
    v1,
    v2,
)

from fleetplane.ingest.protocols.wialon_ips import (
    Datagram,
    DatagramError,
    LoginResult,
    Outcome,
    WialonFramer,
    WialonLimits,
    WialonSession,
    _crc_by_bytes,
    _crc_by_folding,
    crc16,
    decode_black_box,
    decode_datagram,
    decode_extended_data,
    decode_short_data,
)

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
LIMITS = WialonLimits(
    max_line=400, max_compressed=300, max_inflated=600, max_block=64, max_file=200, max_blocks=8
)
FRAMER_BOUND = max(LIMITS.max_line, LIMITS.max_block, LIMITS.max_compressed + 3) + 1

VALID_PACKETS = [
    v2("L", f"2.0;{IMEI};NA"),
    v1("L", f"{IMEI};NA"),
    v2("SD", SD_BODY),
    v1("SD", SD_BODY),
    v2("D", D_BODY),
    v1("D", D_BODY),
    v2("B", f"{SD_BODY}|{D_BODY}", b"|"),
    v1("B", f"{SD_BODY}|{SD_BODY}"),
    b"#P#\r\n",
    v2("M", "Hello driver"),
    v1("M", "Hello driver"),
    compress(v2("SD", SD_BODY)),
    compress(b"#P#"),
    image_header(5, 0, 1, b"abcde") + b"abcde",
    image_header(3, 1, 1, b"fgh") + b"fgh",
    v2("IT", "010524;153000;DRV1;C1;1"),
    tachograph_header("C1", 4, 0, b"wxyz") + b"wxyz",
    tachograph_header("C1", 2, 1, b"!!") + b"!!",
]


def check(outcome: Outcome) -> None:
    assert outcome.login is None
    if outcome.answer:
        lines = outcome.answer.split(b"\r\n")
        assert lines[-1] == b"", outcome.answer
        for line in lines[:-1]:
            assert SPEC_ANSWER.fullmatch(line), outcome.answer
    else:
        assert outcome.close or (outcome.note and "ignored" in outcome.note), outcome
    if outcome.messages:
        assert outcome.answer.startswith((b"#ASD#1", b"#AD#1", b"#AB#"))
    if outcome.file is not None:
        assert outcome.answer.endswith((b"#AI#1\r\n", b"#AT#1\r\n"))


def run(chunks: list[bytes], verdict: LoginResult = LoginResult.ACCEPTED) -> list[bytes]:
    """Feeds the chunks until a close; returns each outcome's answer."""
    framer, session = WialonFramer(LIMITS), WialonSession(LIMITS)
    answers: list[bytes] = []
    for chunk in chunks:
        for frame in framer.feed(chunk):
            outcome = session.handle(frame, NOW)
            if outcome.login is not None:
                outcome = session.complete_login(verdict)
            check(outcome)
            answers.append(outcome.answer)
            if outcome.close:
                return answers
        assert framer.buffered <= FRAMER_BOUND
        assert session.buffered <= LIMITS.max_file
    return answers


def mutate(data: bytes, draw) -> bytes:
    operations = draw(st.lists(st.sampled_from(["flip", "insert", "delete", "cut"]), max_size=4))
    for operation in operations:
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if operation == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif operation == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif operation == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data = data[:at]
    return data


@st.composite
def streams(draw) -> bytes:
    packets = draw(st.lists(st.sampled_from(VALID_PACKETS), min_size=1, max_size=12))
    parts = [mutate(packet, draw) if draw(st.booleans()) else packet for packet in packets]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(st.binary(max_size=60)))
    return b"".join(parts)


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    run([data])


@SETTINGS
@given(st.data())
def test_mutated_valid_streams_in_any_chunks(data: st.DataObject) -> None:
    stream = data.draw(streams())
    verdict = data.draw(st.sampled_from(list(LoginResult)))
    whole = run([stream], verdict)
    assert run(data.draw(chunked(stream)), verdict) == whole


@SETTINGS
@given(st.data())
def test_logged_in_mutated_streams(data: st.DataObject) -> None:
    stream = v2("L", f"2.0;{IMEI};NA") + data.draw(streams())
    answers = run([stream])
    assert answers[0] == b"#AL#1\r\n"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), st.binary(max_size=100))
def test_compressed_header_of_any_length(length: int, tail: bytes) -> None:
    run([b"\xff" + length.to_bytes(2, "little") + tail])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_crc_folding_equals_the_byte_table(data: bytes) -> None:
    assert _crc_by_folding(data) == _crc_by_bytes(data) == crc16(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_data_decoders_never_raise(body: bytes, with_crc: bool) -> None:
    for decoder in (decode_short_data, decode_extended_data, decode_black_box):
        result = decoder(body, with_crc, NOW)
        assert SPEC_ANSWER.fullmatch(result.answer.removesuffix(b"\r\n"))


FIELD_TEXT = st.sampled_from(
    ["", "NA", "0", "1", "-1", "1.5", "1,5", "nan", "inf", "9" * 25, "x", "5544.6025", "N", "ü"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD_TEXT, min_size=8, max_size=20), st.sampled_from(["SD", "D"]))
def test_field_soup_gets_a_spec_answer(fields: list[str], kind: str) -> None:
    body = ";".join(fields).encode()
    decoder = decode_short_data if kind == "SD" else decode_extended_data
    result = decoder(body, False, NOW)
    assert SPEC_ANSWER.fullmatch(result.answer.removesuffix(b"\r\n"))
    assert len(result.messages) == (1 if result.answer.endswith(b"#1\r\n") else 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_datagrams_never_raise(data: bytes) -> None:
    assert isinstance(decode_datagram(data, NOW, LIMITS), Datagram | DatagramError)
