"""Every worked example of specs/wialon-ips.md, with its exact answer and checked CRC."""

import pytest
from wialon_packets import IMEI, Connection, logged_in

from fleetplane.ingest.protocols.wialon_ips import crc16, crc_text

EXAMPLES_V2 = [
    (b"#SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;1985\r\n", b"#ASD#1\r\n", 1),
    (
        b"#D#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;0.8;0;0;14.77,0.02,3.6;NA;"
        b"count1:1:564,fuel:2:45.8,hw:3:V4.5,SOS:1:1;A171\r\n",
        b"#AD#1\r\n",
        1,
    ),
    (
        b"#B#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4|"
        b"270413;205701;5544.6025;N;03739.6834;E;0;0;3;4|268D\r\n",
        b"#AB#2\r\n",
        2,
    ),
    (b"#P#\r\n", b"#AP#\r\n", 0),
]


@pytest.mark.parametrize(
    ("covered", "crc"),
    [
        (b"2.0;123456789012345;NA;", "15CD"),
        (b"270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;", "1985"),
        (
            b"270413;205601;5544.6025;N;03739.6834;E;1;2;3;4;0.8;0;0;14.77,0.02,3.6;NA;"
            b"count1:1:564,fuel:2:45.8,hw:3:V4.5,SOS:1:1;",
            "A171",
        ),
        (
            b"270413;205601;5544.6025;N;03739.6834;E;1;2;3;4|"
            b"270413;205701;5544.6025;N;03739.6834;E;0;0;3;4|",
            "268D",
        ),
        (b"Hello driver;", "0798"),
        (b"2.0;imei;NA;", "A932"),
    ],
)
def test_spec_crcs(covered: bytes, crc: str) -> None:
    assert crc_text(covered) == crc


def test_crc16_arc_check_value() -> None:
    assert crc16(b"123456789") == 0xBB3D
    assert crc16(b"") == 0


def test_login_example() -> None:
    connection = Connection()
    assert connection.answers(b"#L#2.0;123456789012345;NA;15CD\r\n") == b"#AL#1\r\n"
    assert connection.logins == [IMEI]
    assert connection.session.imei == IMEI
    assert connection.session.version == "2.0"


@pytest.mark.parametrize(("packet", "answer", "stored"), EXAMPLES_V2)
def test_data_examples(packet: bytes, answer: bytes, stored: int) -> None:
    connection = logged_in()
    [outcome] = connection.send(packet)
    assert outcome.answer == answer
    assert len(outcome.messages) == stored
    assert not outcome.close


def test_example_values() -> None:
    [outcome] = logged_in().send(EXAMPLES_V2[1][0])
    [message] = outcome.messages
    assert message.lat == pytest.approx(55.743375, abs=1e-9)
    assert message.lon == pytest.approx(37 + 39.6834 / 60, abs=1e-9)
    assert (message.speed, message.course, message.altitude, message.satellites) == (1, 2, 3, 4)
    assert message.hdop == 0.8
    assert (message.inputs, message.outputs) == (0, 0)
    assert message.adc == (14.77, 0.02, 3.6)
    assert message.driver_key is None
    assert message.params == {"count1": 564, "fuel": 45.8, "hw": "V4.5", "SOS": 1}
    assert message.device_time.isoformat() == "2013-04-27T20:56:01+00:00"


def test_black_box_example_is_late_data() -> None:
    [outcome] = logged_in().send(EXAMPLES_V2[2][0])
    assert [m.from_black_box for m in outcome.messages] == [True, True]
    assert [m.device_time.minute for m in outcome.messages] == [56, 57]


def test_driver_message_example() -> None:
    [outcome] = logged_in().send(b"#M#Hello driver;0798\r\n")
    assert outcome.answer == b"#AM#1\r\n"
    assert outcome.driver_message is not None
    assert outcome.driver_message.text == "Hello driver"


def test_compressed_login_example() -> None:
    packet = bytes.fromhex("FF1B00780153F65136D233B0CECC4DCDB4F673B476B4343602002FF404E6")
    connection = Connection()
    assert connection.answers(packet) == b"#AL#1\r\n"
    assert connection.logins == ["imei"]


def test_v1_1_forms() -> None:
    connection = Connection()
    assert connection.answers(b"#L#123456789012345;secret\r\n") == b"#AL#1\r\n"
    assert connection.session.version == "1.1"
    [outcome] = connection.send(b"#SD#270413;205601;5544.6025;N;03739.6834;E;1;2;3;4\r\n")
    assert outcome.answer == b"#ASD#1\r\n"
    assert outcome.messages[0].lat == pytest.approx(55.743375)
