"""What the simulator encodes decodes, with the platform's own decoder, to the same values."""

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from fleetplane.ingest.protocols.wialon_ips import (
    LoginResult,
    WialonFramer,
    WialonSession,
    decode_black_box,
    decode_extended_data,
)
from fleetplane.simulator.encoding import (
    MAX_BLACK_BOX,
    Answer,
    encode_black_box,
    encode_data,
    encode_login,
    encode_ping,
    extended_body,
    parse_answer,
)
from fleetplane.simulator.route import Fix, VehicleProfile, vehicle_fixes
from fleetplane.telemetry import Message

RECEIVED = datetime(2024, 5, 2, tzinfo=UTC)
START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
COORDINATE_ROUNDING = 1e-6  # DDMM.MMMM keeps 1/10,000 of a minute: 1.7e-6 degrees at most


@pytest.fixture(scope="module")
def fixes() -> list[Fix]:
    """Six hours of a vehicle that often loses its fix, so both kinds of report occur."""
    reports = vehicle_fixes(3, START, 10, profile=VehicleProfile(no_fix_chance=0.05))
    return list(itertools.islice(reports, 6 * 360))


def assert_decodes_to(message: Message, fix: Fix) -> None:
    assert message.device_time == fix.time
    assert not message.device_time_missing
    if fix.lat is None or fix.lon is None:
        assert message.lat is None and message.lon is None
    else:
        assert message.lat == pytest.approx(fix.lat, abs=COORDINATE_ROUNDING)
        assert message.lon == pytest.approx(fix.lon, abs=COORDINATE_ROUNDING)
    assert message.speed == fix.speed
    assert message.course == fix.course
    assert message.altitude == fix.altitude
    assert message.satellites == fix.satellites
    assert message.hdop == fix.hdop
    assert message.inputs == (1 if fix.ignition else 0)
    assert message.outputs == 0
    assert message.adc == ()
    assert message.driver_key == fix.driver_key
    assert message.params == {
        "ign": int(fix.ignition),
        "fuel": fix.fuel,
        "pwr_ext": fix.power,
        "odometer": fix.odometer,
        "engine_hours": fix.engine_hours,
    }


def body_of(packet: bytes, kind: bytes) -> bytes:
    prefix = b"#" + kind + b"#"
    assert packet.startswith(prefix) and packet.endswith(b"\r\n")
    return packet[len(prefix) : -2]


def test_every_report_decodes_to_its_values(fixes: list[Fix]) -> None:
    assert any(not fix.has_fix for fix in fixes) and any(fix.has_fix for fix in fixes)
    for fix in fixes:
        result = decode_extended_data(body_of(encode_data(fix), b"D"), True, RECEIVED)
        assert result.answer == b"#AD#1\r\n", result.note
        [message] = result.messages
        assert_decodes_to(message, fix)
        assert not message.from_black_box


def test_a_black_box_decodes_to_its_reports_in_order(fixes: list[Fix]) -> None:
    result = decode_black_box(body_of(encode_black_box(fixes), b"B"), True, RECEIVED)
    assert result.answer == f"#AB#{len(fixes)}\r\n".encode(), result.note
    assert len(result.messages) == len(fixes)
    for message, fix in zip(result.messages, fixes, strict=True):
        assert_decodes_to(message, fix)
        assert message.from_black_box


def test_a_black_box_holds_one_to_five_thousand_reports(fixes: list[Fix]) -> None:
    full = list(itertools.islice(itertools.cycle(fixes), MAX_BLACK_BOX))
    assert encode_black_box(full).count(b"|") == MAX_BLACK_BOX
    for size in (0, MAX_BLACK_BOX + 1):
        with pytest.raises(ValueError, match="black box"):
            encode_black_box(list(itertools.islice(itertools.cycle(fixes), size)))


@pytest.mark.parametrize(
    ("lat", "lon", "fields"),
    [
        (56.9496, 24.1052, "5656.9760;N;02406.3120;E"),
        (-33.8688, -151.2093, "3352.1280;S;15112.5580;W"),
        (59.99999999, 9.99999999, "6000.0000;N;01000.0000;E"),  # minutes never print as 60
        (0.0, 0.0, "0000.0000;N;00000.0000;E"),
    ],
)
def test_coordinates_are_written_as_degrees_and_minutes(
    fixes: list[Fix], lat: float, lon: float, fields: str
) -> None:
    fix = replace(next(fix for fix in fixes if fix.has_fix), lat=lat, lon=lon)
    assert extended_body(fix).split(";")[2:6] == fields.split(";")
    [message] = decode_extended_data(body_of(encode_data(fix), b"D"), True, RECEIVED).messages
    assert (message.lat, message.lon) == pytest.approx((lat, lon), abs=COORDINATE_ROUNDING)


def test_the_login_matches_the_protocol_example() -> None:
    assert encode_login("123456789012345") == b"#L#2.0;123456789012345;NA;15CD\r\n"


@pytest.mark.parametrize(("imei", "password"), [("1", ";"), ("12#3", None), ("1\r\n", None)])
def test_a_login_that_cannot_be_written_is_refused(imei: str, password: str | None) -> None:
    with pytest.raises(ValueError, match="login"):
        encode_login(imei, password)


def test_a_session_accepts_the_login_data_black_box_and_ping(fixes: list[Fix]) -> None:
    """The whole conversation through the listener's framer and session, in random pieces."""
    stream = b"".join(
        [
            encode_login("860000000000001", "secret"),
            *map(encode_data, fixes[:50]),
            encode_black_box(fixes[50:300]),
            encode_ping(),
            encode_black_box(fixes[300:301] * 2),
        ]
    )
    framer, session = WialonFramer(), WialonSession()
    answers, messages = b"", []
    rng = random.Random(5)
    while stream:
        cut = rng.randint(1, 900)
        piece, stream = stream[:cut], stream[cut:]
        for frame in framer.feed(piece):
            outcome = session.handle(frame, received_at=RECEIVED)
            if outcome.login is not None:
                assert (outcome.login.imei, outcome.login.password) == ("860000000000001", "secret")
                assert outcome.login.version == "2.0"
                outcome = session.complete_login(LoginResult.ACCEPTED)
            answers += outcome.answer
            messages.extend(outcome.messages)
    assert answers == b"#AL#1\r\n" + b"#AD#1\r\n" * 50 + b"#AB#250\r\n#AP#\r\n#AB#2\r\n"
    for message, fix in zip(messages, [*fixes[:301], fixes[300]], strict=True):
        assert_decodes_to(message, fix)


@pytest.mark.parametrize(
    ("line", "answer", "number"),
    [
        (b"#AL#1\r\n", Answer("AL", "1"), 1),
        (b"#AL#01\r\n", Answer("AL", "01"), 1),
        (b"#AB#\r\n", Answer("AB", ""), None),
        (b"#AB#4999\n", Answer("AB", "4999"), 4999),
        (b"#AP#\r\n", Answer("AP", ""), None),
        (b"#M#Hello;0798\r\n", Answer("M", "Hello;0798"), None),
    ],
)
def test_answers_are_read(line: bytes, answer: Answer, number: int | None) -> None:
    assert parse_answer(line) == answer
    assert answer.number == number


@pytest.mark.parametrize("line", [b"hello\r\n", b"#AD\r\n", b"##1\r\n", b""])
def test_lines_that_are_not_answers_are_recognised(line: bytes) -> None:
    assert parse_answer(line) is None
