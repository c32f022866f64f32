"""#SD# and #D#: every answer code in both versions, and the field quirks of real devices."""

from datetime import UTC, datetime

import pytest
from wialon_packets import D_BODY, NOW, SD_BODY, logged_in, v1, v2

from fleetplane.ingest.protocols.wialon_ips import (
    decode_extended_data,
    decode_short_data,
    parse_crc_field,
)

SD = SD_BODY.split(";")
D = D_BODY.split(";")


def with_fields(base: list[str], **changes: str) -> str:
    """The body with fields replaced by position: f0=date, f1=time, ... f15=params."""
    fields = list(base)
    for key, value in changes.items():
        fields[int(key[1:])] = value
    return ";".join(fields)


def answer_of(kind: str, content: str, version: str) -> bytes:
    packet = v2(kind, content) if version == "2.0" else v1(kind, content)
    [outcome] = logged_in(version).send(packet)
    assert outcome.messages == [] or outcome.answer.endswith(b"#1\r\n")
    return outcome.answer


SHORT_CASES = [
    ("ok", SD_BODY, b"#ASD#1\r\n"),
    ("too few fields", ";".join(SD[:9]), b"#ASD#-1\r\n"),
    ("too many fields", SD_BODY + ";5", b"#ASD#-1\r\n"),
    ("bad date", with_fields(SD, f0="320413"), b"#ASD#0\r\n"),
    ("bad time", with_fields(SD, f1="256101"), b"#ASD#0\r\n"),
    ("letters in time", with_fields(SD, f1="20x601"), b"#ASD#0\r\n"),
    ("only the date NA", with_fields(SD, f0="NA"), b"#ASD#0\r\n"),
    ("latitude garbage", with_fields(SD, f2="55x4.6"), b"#ASD#10\r\n"),
    ("latitude over 90", with_fields(SD, f2="9100.0000"), b"#ASD#10\r\n"),
    ("minutes over 59", with_fields(SD, f2="5560.0000"), b"#ASD#10\r\n"),
    ("negative latitude value", with_fields(SD, f2="-5544.6025"), b"#ASD#10\r\n"),
    ("bad hemisphere", with_fields(SD, f3="X"), b"#ASD#10\r\n"),
    ("swapped hemispheres", with_fields(SD, f3="E", f5="N"), b"#ASD#10\r\n"),
    ("longitude over 180", with_fields(SD, f4="18100.0000"), b"#ASD#10\r\n"),
    ("speed garbage", with_fields(SD, f6="fast"), b"#ASD#11\r\n"),
    ("negative speed", with_fields(SD, f6="-1"), b"#ASD#11\r\n"),
    ("course over 360", with_fields(SD, f7="361"), b"#ASD#11\r\n"),
    ("negative course", with_fields(SD, f7="-5"), b"#ASD#11\r\n"),
    ("altitude garbage", with_fields(SD, f8="high"), b"#ASD#11\r\n"),
    ("altitude infinite", with_fields(SD, f8="inf"), b"#ASD#11\r\n"),
    ("speed not a number", with_fields(SD, f6="nan"), b"#ASD#11\r\n"),
    ("satellites garbage", with_fields(SD, f9="many"), b"#ASD#12\r\n"),
    ("negative satellites", with_fields(SD, f9="-4"), b"#ASD#12\r\n"),
]


@pytest.mark.parametrize("version", ["1.1", "2.0"])
@pytest.mark.parametrize(("case", "content", "answer"), SHORT_CASES)
def test_short_data_answers(version: str, case: str, content: str, answer: bytes) -> None:
    assert answer_of("SD", content, version) == answer, case


EXTENDED_CASES = [
    ("ok", D_BODY, b"#AD#1\r\n"),
    ("too few fields", ";".join(D[:15]), b"#AD#-1\r\n"),
    ("short data fields", SD_BODY, b"#AD#-1\r\n"),
    ("bad date", with_fields(D, f0="000000"), b"#AD#0\r\n"),
    ("only the time NA", with_fields(D, f1="NA"), b"#AD#0\r\n"),
    ("latitude garbage", with_fields(D, f2="north"), b"#AD#10\r\n"),
    ("bad hemisphere", with_fields(D, f5="Q"), b"#AD#10\r\n"),
    ("speed garbage", with_fields(D, f6="1.2.3"), b"#AD#11\r\n"),
    ("course over 360", with_fields(D, f7="400"), b"#AD#11\r\n"),
    ("altitude garbage", with_fields(D, f8="x"), b"#AD#11\r\n"),
    ("satellites garbage", with_fields(D, f9="x"), b"#AD#12\r\n"),
    ("HDOP garbage", with_fields(D, f10="good"), b"#AD#12\r\n"),
    ("negative HDOP", with_fields(D, f10="-0.5"), b"#AD#12\r\n"),
    ("inputs garbage", with_fields(D, f11="ff"), b"#AD#13\r\n"),
    ("negative outputs", with_fields(D, f12="-1"), b"#AD#13\r\n"),
    ("decimal inputs", with_fields(D, f11="1.5"), b"#AD#13\r\n"),
    ("inputs beyond 64 bits", with_fields(D, f11=str(2**63)), b"#AD#13\r\n"),
    ("ADC garbage", with_fields(D, f13="1.0,volts"), b"#AD#14\r\n"),
    ("ADC infinite", with_fields(D, f13="1.0,inf"), b"#AD#14\r\n"),
    ("params without type", with_fields(D, f15="fuel:45.8"), b"#AD#15\r\n"),
    ("params unknown type", with_fields(D, f15="fuel:4:45.8"), b"#AD#15\r\n"),
    ("params empty name", with_fields(D, f15=":1:5"), b"#AD#15\r\n"),
    ("params bare word", with_fields(D, f15="a:1:1,oops"), b"#AD#15\r\n"),
    (
        "201 params",
        with_fields(D, f15=",".join(f"p{i}:1:{i}" for i in range(201))),
        b"#AD#15\r\n",
    ),
]


@pytest.mark.parametrize("version", ["1.1", "2.0"])
@pytest.mark.parametrize(("case", "content", "answer"), EXTENDED_CASES)
def test_extended_data_answers(version: str, case: str, content: str, answer: bytes) -> None:
    assert answer_of("D", content, version) == answer, case


def test_first_failing_field_decides_the_code() -> None:
    content = with_fields(D, f0="999999", f2="x", f6="x", f11="x")
    assert answer_of("D", content, "2.0") == b"#AD#0\r\n"
    content = with_fields(D, f6="x", f9="x", f13="x")
    assert answer_of("D", content, "2.0") == b"#AD#11\r\n"


@pytest.mark.parametrize(
    ("kind", "body", "answer"),
    [
        ("SD", SD_BODY, b"#ASD#13\r\n"),
        ("D", D_BODY, b"#AD#16\r\n"),
    ],
)
def test_crc_errors(kind: str, body: str, answer: bytes) -> None:
    wrong = f"#{kind}#{body};0000\r\n".encode()
    assert logged_in().answers(wrong) == answer
    not_hex = f"#{kind}#{body};ZZZZ\r\n".encode()
    assert logged_in().answers(not_hex) == answer


def test_v2_data_without_crc_field_is_a_structure_error() -> None:
    assert logged_in().answers(b"#SD#" + SD_BODY.encode() + b"\r\n") == b"#ASD#-1\r\n"
    assert logged_in().answers(b"#SD#NA\r\n") == b"#ASD#-1\r\n"
    assert logged_in().answers(b"#D#NA\r\n") == b"#AD#-1\r\n"


def test_tampered_body_fails_its_crc() -> None:
    packet = v2("SD", SD_BODY).replace(b"5544.6025", b"5544.6026")
    assert logged_in().answers(packet) == b"#ASD#13\r\n"


@pytest.mark.parametrize("written", ["0798", "798", "0x798", "0X0798", "0x0798", " 798"])
def test_crc_field_is_read_tolerantly(written: str) -> None:
    packet = f"#M#Hello driver;{written}\r\n".encode()
    assert logged_in().answers(packet) == b"#AM#1\r\n"


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("A171", 0xA171),
        ("a171", 0xA171),
        ("0xa171", 0xA171),
        ("7", 7),
        ("", None),
        ("12345", None),
        ("0x", None),
        ("+123", None),
        ("1_23", None),
        ("NA", None),
        (b"0x1F", 0x1F),
    ],
)
def test_parse_crc_field(written: str | bytes, value: int | None) -> None:
    assert parse_crc_field(written) == value


# -- field quirks ----------------------------------------------------------------------------


def one_message(kind: str, content: str, version: str = "2.0"):
    packet = v2(kind, content) if version == "2.0" else v1(kind, content)
    [outcome] = logged_in(version).send(packet)
    assert outcome.answer == f"#A{kind}#1\r\n".encode(), outcome.note
    [message] = outcome.messages
    return message


def test_date_and_time_na_use_the_receive_time() -> None:
    message = one_message("SD", with_fields(SD, f0="NA", f1="NA"))
    assert message.device_time == NOW
    assert message.received_at == NOW
    assert message.device_time_missing


def test_fractional_seconds_are_kept() -> None:
    message = one_message("SD", with_fields(SD, f1="205601.250"))
    assert message.device_time == datetime(2013, 4, 27, 20, 56, 1, 250000, tzinfo=UTC)
    assert not message.device_time_missing


def test_southern_and_western_coordinates() -> None:
    message = one_message("SD", with_fields(SD, f3="S", f5="W"))
    assert message.lat == pytest.approx(-55.743375)
    assert message.lon == pytest.approx(-(37 + 39.6834 / 60))


def test_lower_case_hemispheres() -> None:
    message = one_message("SD", with_fields(SD, f3="s", f5="e"))
    assert message.lat == pytest.approx(-55.743375)
    assert message.lon > 0


def test_coordinate_extremes() -> None:
    message = one_message("SD", with_fields(SD, f2="9000.0000", f4="18000.0000"))
    assert (message.lat, message.lon) == (90.0, 180.0)
    message = one_message("SD", with_fields(SD, f2="0000.0000", f4="00000.0000"))
    assert (message.lat, message.lon) == (0.0, 0.0)


@pytest.mark.parametrize(
    "position",
    [
        {"f2": "NA", "f3": "NA", "f4": "NA", "f5": "NA"},
        {"f2": "", "f3": "", "f4": "", "f5": ""},
        {"f2": "NA", "f3": "NA"},
        {"f4": "NA", "f5": "NA"},
        {"f3": "NA"},
    ],
)
def test_no_fix_keeps_the_message_without_a_position(position: dict[str, str]) -> None:
    message = one_message("SD", with_fields(SD, **position))
    assert message.lat is None and message.lon is None
    assert not message.has_position
    assert message.speed == 1


def test_na_everywhere_in_extended_data() -> None:
    message = one_message("D", ";".join(["NA"] * 16))
    assert message.device_time == NOW
    assert message.lat is message.lon is None
    assert message.speed is message.course is message.altitude is None
    assert message.satellites is message.hdop is None
    assert message.inputs is message.outputs is None
    assert message.adc == ()
    assert message.driver_key is None
    assert message.params == {}


def test_empty_fields_are_not_available() -> None:
    content = with_fields(D, f6="", f7="", f8="", f9="", f10="", f11="", f12="", f13="")
    message = one_message("D", with_fields(content.split(";"), f14="", f15=""))
    assert message.speed is message.course is message.altitude is message.satellites is None
    assert message.hdop is message.inputs is message.outputs is None
    assert message.adc == ()
    assert message.params == {}


def test_comma_decimals() -> None:
    content = with_fields(D, f2="5544,6025", f4="03739,6834", f6="12,5", f8="-3,5", f10="1,2")
    message = one_message("D", content)
    assert message.lat == pytest.approx(55.743375)
    assert message.speed == 12.5
    assert message.altitude == -3.5
    assert message.hdop == 1.2


def test_decimals_and_negative_altitude() -> None:
    message = one_message("SD", with_fields(SD, f6="12.7", f7="359.9", f8="-28", f9="7.0"))
    assert (message.speed, message.course, message.altitude, message.satellites) == (
        12.7,
        359.9,
        -28,
        7.0,
    )


def test_course_360_is_accepted() -> None:
    assert one_message("SD", with_fields(SD, f7="360")).course == 360


def test_bit_masks_and_driver_key() -> None:
    message = one_message("D", with_fields(D, f11="5", f12=str(2**63 - 1), f14="0A1B2C3D4E5F"))
    assert message.inputs == 5
    assert message.outputs == 2**63 - 1
    assert message.driver_key == "0A1B2C3D4E5F"


@pytest.mark.parametrize(
    ("adc", "values"),
    [
        ("NA", ()),
        ("", ()),
        ("3.6", (3.6,)),
        ("1,2.5,-0.5", (1.0, 2.5, -0.5)),
        ("1.5,NA,2", (1.5, None, 2.0)),
        ("1.5,,2", (1.5, None, 2.0)),
    ],
)
def test_adc_lists(adc: str, values: tuple) -> None:
    assert one_message("D", with_fields(D, f13=adc)).adc == values


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("NA", {}),
        ("a:1:-9223372036854775808", {"a": -(2**63)}),
        ("a:1:9223372036854775807", {"a": 2**63 - 1}),
        ("a:1:9223372036854775808,b:1:2", {"b": 2}),
        ("a:1:1.5,b:2:1e3", {"b": 1000.0}),
        ("a:2:abc,b:2:-0.25", {"b": -0.25}),
        ("a:2:nan,b:2:inf,c:2:1", {"c": 1.0}),
        ("a:1:NA,b:2:NA,c:3:NA,d:3:x", {"d": "x"}),
        ("a:3:", {"a": ""}),
        ("url:3:http://x/y?a=1", {"url": "http://x/y?a=1"}),
        ("text:3:hello, world, again,n:1:5", {"text": "hello, world, again", "n": 5}),
        ("a:1:1,", {"a": 1}),
        ("a:1:1,,b:1:2", {"a": 1, "b": 2}),
        ("PWR.EXT:2:12.5,ТОПЛИВО:2:40,Fuel Level:1:3", None),
        ("msg:3:driver says hi", {"msg": "driver says hi"}),
        ("SOS:1:1,text:3:help me", {"SOS": 1, "text": "help me"}),
        ("mcc:1:250,mnc:1:1,lac:1:7706,cell_id:1:41951", None),
        ("x" * 38 + ":1:1,b:1:2", None),
        ("x" * 39 + ":1:1,b:1:2", {"b": 2}),
        ("s:3:" + "y" * 1344, {"s": "y" * 1344}),
        ("s:3:" + "y" * 1345 + ",b:1:2", {"b": 2}),
        ("s:3:" + "y" * 1000 + "," + "z" * 400 + ",b:1:2", {"b": 2}),
        ("a:1:1,a:1:2", {"a": 2}),
        (",".join(f"p{i}:1:{i}" for i in range(200)), None),
    ],
)
def test_params(params: str, expected: dict | None) -> None:
    message = one_message("D", with_fields(D, f15=params))
    if expected is None:  # stored exactly as sent
        expected = {}
        for item in params.split(","):
            name, kind, value = item.split(":")
            expected[name] = int(value) if kind == "1" else float(value)
    assert message.params == expected


def test_semicolon_inside_a_string_parameter() -> None:
    message = one_message("D", with_fields(D, f15="note:3:a;b;c,n:1:1"))
    assert message.params == {"note": "a;b;c", "n": 1}


def test_semicolon_inside_a_string_parameter_v1_1() -> None:
    message = one_message("D", with_fields(D, f15="note:3:a;b"), version="1.1")
    assert message.params == {"note": "a;b"}


def test_utf8_names_and_values() -> None:
    message = one_message("D", with_fields(D, f15="водитель:3:Иван Петров,ÄÖ:1:1"))
    assert message.params == {"водитель": "Иван Петров", "ÄÖ": 1}


def test_latin1_fallback_is_per_value() -> None:
    content = with_fields(D, f15="city:3:Zürich,name:3:NAME_PLACEHOLDER", f14="KEY_PLACEHOLDER")
    raw = content.encode("utf-8").replace(b"NAME_PLACEHOLDER", "Müller".encode("latin-1"))
    raw = raw.replace(b"KEY_PLACEHOLDER", b"\xe9t\xe9")
    [outcome] = logged_in().send(v2("D", raw))
    assert outcome.answer == b"#AD#1\r\n"
    [message] = outcome.messages
    assert message.params == {"city": "Zürich", "name": "Müller"}
    assert message.driver_key == "été"


def test_latin1_name_of_a_parameter() -> None:
    raw = with_fields(D, f15="X:1:1").encode().replace(b"X:1", "Größe:1".encode("latin-1"))
    [outcome] = logged_in("1.1").send(v1("D", raw))
    assert outcome.messages[0].params == {"Größe": 1}


def test_decoders_directly() -> None:
    result = decode_short_data(SD_BODY.encode(), False, NOW)
    assert result.answer == b"#ASD#1\r\n" and len(result.messages) == 1
    result = decode_extended_data(b"garbage", False, NOW)
    assert result.answer == b"#AD#-1\r\n" and result.messages == [] and result.note
