"""UDP datagrams (device -> server, no answers) and server -> device command lines."""

import zlib

import pytest
from wialon_packets import D_BODY, IMEI, NOW, SD_BODY, compress, v1, v2

from fleetplane.ingest.protocols.wialon_ips import (
    Datagram,
    DatagramError,
    LoginResult,
    WialonFramer,
    WialonLimits,
    WialonSession,
    decode_datagram,
    encode_driver_message,
    encode_raw_command,
    encode_snapshot_request,
    encode_tachograph_request,
)


def decoded(data: bytes) -> Datagram:
    result = decode_datagram(data, NOW)
    assert isinstance(result, Datagram), result
    return result


def refused(data: bytes) -> DatagramError:
    result = decode_datagram(data, NOW)
    assert isinstance(result, DatagramError), result
    return result


@pytest.mark.parametrize(
    ("data", "version", "count"),
    [
        (IMEI.encode() + v1("SD", SD_BODY), "1.1", 1),
        (IMEI.encode() + v1("D", D_BODY), "1.1", 1),
        (IMEI.encode() + v1("B", f"{SD_BODY}|{D_BODY}"), "1.1", 2),
        (f"2.0;{IMEI}".encode() + v2("SD", SD_BODY), "2.0", 1),
        (f"2.0;{IMEI}".encode() + v2("D", D_BODY), "2.0", 1),
        (f"2.0;{IMEI}".encode() + v2("B", f"{SD_BODY}|{SD_BODY}", b"|"), "2.0", 2),
        (f"2.0;{IMEI}".encode() + v2("SD", SD_BODY).rstrip(), "2.0", 1),
        (IMEI.encode() + b"#P#", "1.1", 0),
    ],
)
def test_datagrams(data: bytes, version: str, count: int) -> None:
    datagram = decoded(data)
    assert (datagram.imei, datagram.version, len(datagram.messages)) == (IMEI, version, count)


def test_datagram_message_values() -> None:
    [message] = decoded(f"2.0;{IMEI}".encode() + v2("D", D_BODY)).messages
    assert message.lat == pytest.approx(55.743375)
    assert message.params["SOS"] == 1
    assert not message.from_black_box


def test_compressed_datagram() -> None:
    datagram = decoded(compress(f"2.0;{IMEI}".encode() + v2("SD", SD_BODY)))
    assert len(datagram.messages) == 1


def test_black_box_datagram_keeps_the_good_items() -> None:
    datagram = decoded(IMEI.encode() + v1("B", f"{SD_BODY}|broken|{SD_BODY}"))
    assert len(datagram.messages) == 2 and datagram.note


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "IMEI"),
        (b"#SD#" + SD_BODY.encode(), "IMEI"),
        (b"just text", "IMEI"),
        (f"3.0;{IMEI}#SD#x".encode(), "version"),
        (b"NA" + v1("SD", SD_BODY), "IMEI"),
        (IMEI.encode() + b"#sd#x", "packet"),
        (IMEI.encode() + v1("L", f"{IMEI};NA"), "UDP"),
        (IMEI.encode() + v1("M", "hi"), "UDP"),
        (IMEI.encode() + v1("SD", SD_BODY.replace("270413", "990413")), "ASD#0"),
        (IMEI.encode() + v1("D", "x"), "AD#-1"),
        (f"2.0;{IMEI}#SD#{SD_BODY};0000".encode(), "ASD#13"),
        (f"2.0;{IMEI}#B#{SD_BODY}|0000".encode(), "AB#"),
        (b"\xff\x05\x00abc", "compressed"),
        (b"\xff\x03\x00abc", "compressed"),
        (b"\xff", "compressed"),
    ],
)
def test_bad_datagrams(data: bytes, reason: str) -> None:
    assert reason in refused(data).reason


def test_datagram_error_names_the_claimed_imei() -> None:
    assert refused(IMEI.encode() + v1("D", "x")).imei == IMEI


def test_compressed_datagram_bomb() -> None:
    bomb = zlib.compress(IMEI.encode() + b"#B#" + b"0" * 1_000_000, 9)
    data = b"\xff" + len(bomb).to_bytes(2, "little") + bomb
    assert "inflates" in decode_datagram(data, NOW, WialonLimits(max_inflated=1000)).reason


# -- commands --------------------------------------------------------------------------------


def test_driver_message_v2_carries_the_crc_of_the_spec_example() -> None:
    assert encode_driver_message("Hello driver") == b"#M#Hello driver;0798\r\n"


def test_driver_message_v1_has_no_crc() -> None:
    assert encode_driver_message("Hello driver", "1.1") == b"#M#Hello driver\r\n"


def test_driver_message_round_trips_through_our_own_parser() -> None:
    framer, session = WialonFramer(), WialonSession()
    for frame in framer.feed(v2("L", f"2.0;{IMEI};NA")):
        session.handle(frame, NOW)
    session.complete_login(LoginResult.ACCEPTED)
    [frame] = framer.feed(encode_driver_message("Ölstand prüfen; bitte"))
    outcome = session.handle(frame, NOW)
    assert outcome.answer == b"#AM#1\r\n"
    assert outcome.driver_message is not None
    assert outcome.driver_message.text == "Ölstand prüfen; bitte"


def test_requests_and_raw_commands() -> None:
    assert encode_snapshot_request() == b"#QI#\r\n"
    assert encode_tachograph_request("DRV42") == b"#QT#DRV42\r\n"
    assert encode_raw_command("SETPARAM 1 2") == b"SETPARAM 1 2\r\n"


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_driver_message("two\nlines"),
        lambda: encode_driver_message("cr\r"),
        lambda: encode_tachograph_request(""),
        lambda: encode_tachograph_request("a\r\nb"),
        lambda: encode_raw_command(""),
        lambda: encode_raw_command("x\ny"),
    ],
)
def test_commands_refuse_what_would_break_the_framing(call) -> None:
    with pytest.raises(ValueError):
        call()
