"""The per-connection state machine: login, binding, every answer, files, framing errors."""

import os

import pytest
from wialon_packets import (
    D_BODY,
    IMEI,
    NOW,
    SD_BODY,
    Connection,
    compress,
    image_header,
    logged_in,
    tachograph_header,
    v1,
    v2,
)

from fleetplane.ingest.protocols.wialon_ips import (
    FrameError,
    LoginResult,
    TextFrame,
    WialonLimits,
    WialonSession,
    crc_text,
)
from fleetplane.telemetry import ImageFile, TachographFile

# -- login -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "verdict", "answer"),
    [
        (v2("L", f"2.0;{IMEI};NA"), LoginResult.ACCEPTED, b"#AL#1\r\n"),
        (v2("L", f"2.0;{IMEI};secret"), LoginResult.WRONG_PASSWORD, b"#AL#01\r\n"),
        (v2("L", f"2.0;{IMEI};NA"), LoginResult.REFUSED, b"#AL#0\r\n"),
        (v1("L", f"{IMEI};NA"), LoginResult.ACCEPTED, b"#AL#1\r\n"),
        (v1("L", f"{IMEI};secret"), LoginResult.WRONG_PASSWORD, b"#AL#01\r\n"),
        (v1("L", f"{IMEI};NA"), LoginResult.REFUSED, b"#AL#0\r\n"),
    ],
)
def test_login_verdicts(packet: bytes, verdict: LoginResult, answer: bytes) -> None:
    connection = Connection(verdict=verdict)
    assert connection.answers(packet) == answer
    assert connection.session.logged_in is (verdict is LoginResult.ACCEPTED)


@pytest.mark.parametrize(
    ("packet", "answer"),
    [
        (f"#L#2.0;{IMEI};NA;0000\r\n".encode(), b"#AL#10\r\n"),
        (f"#L#2.0;{IMEI};NA;nothex\r\n".encode(), b"#AL#10\r\n"),
        (v2("L", f"3.0;{IMEI};NA"), b"#AL#0\r\n"),
        (v2("L", f"1.1;{IMEI};NA"), b"#AL#0\r\n"),
        (v2("L", f"2.0;{IMEI}"), b"#AL#0\r\n"),
        (v2("L", f"2.0;{IMEI};NA;extra"), b"#AL#0\r\n"),
        (v1("L", IMEI), b"#AL#0\r\n"),
        (v1("L", f"{IMEI};NA;extra"), b"#AL#0\r\n"),
        (v1("L", ";NA"), b"#AL#0\r\n"),
        (v1("L", "NA;NA"), b"#AL#0\r\n"),
        (v1("L", "has space;NA"), b"#AL#0\r\n"),
        (v1("L", "9" * 65 + ";NA"), b"#AL#0\r\n"),
        (v2("L", "2.0;;NA"), b"#AL#0\r\n"),
        (b"#L#\r\n", b"#AL#0\r\n"),
    ],
)
def test_logins_refused_by_the_session(packet: bytes, answer: bytes) -> None:
    connection = Connection()
    assert connection.answers(packet) == answer
    assert connection.logins == []  # never reached the caller's check
    assert not connection.session.logged_in


def test_login_hands_the_password_to_the_caller() -> None:
    session = WialonSession()
    outcome = session.handle(TextFrame(v2("L", f"2.0;{IMEI};pa ss").rstrip()), NOW)
    assert outcome.login is not None
    assert (outcome.login.imei, outcome.login.password, outcome.login.version) == (
        IMEI,
        "pa ss",
        "2.0",
    )
    assert outcome.answer == b"" and not outcome.has_data
    session = WialonSession()
    outcome = session.handle(TextFrame(f"#L#{IMEI};NA".encode()), NOW)
    assert outcome.login is not None and outcome.login.password is None
    assert outcome.login.version == "1.1"


def test_a_frame_while_a_login_is_pending_is_a_caller_error() -> None:
    session = WialonSession()
    session.handle(TextFrame(f"#L#{IMEI};NA".encode()), NOW)
    with pytest.raises(RuntimeError):
        session.handle(TextFrame(b"#P#"), NOW)
    with pytest.raises(RuntimeError):
        WialonSession().complete_login(LoginResult.ACCEPTED)


def test_connection_is_bound_to_the_first_imei() -> None:
    connection = logged_in()
    assert connection.answers(v2("L", "2.0;999999999999999;NA")) == b"#AL#0\r\n"
    assert connection.logins == [IMEI]
    assert connection.session.imei == IMEI
    assert connection.session.logged_in  # the refused attempt changes nothing
    assert connection.answers(v2("SD", SD_BODY)) == b"#ASD#1\r\n"


def test_same_imei_may_log_in_again_and_switch_version() -> None:
    connection = logged_in("2.0")
    assert connection.answers(v1("L", f"{IMEI};NA")) == b"#AL#1\r\n"
    assert connection.session.version == "1.1"
    assert connection.answers(v1("SD", SD_BODY)) == b"#ASD#1\r\n"


def test_failed_relogin_logs_out_but_keeps_the_binding() -> None:
    connection = logged_in()
    connection.verdict = LoginResult.WRONG_PASSWORD
    assert connection.answers(v2("L", f"2.0;{IMEI};wrong")) == b"#AL#01\r\n"
    assert connection.answers(v2("SD", SD_BODY)) == b"#ASD#-1\r\n"
    assert connection.answers(v2("L", "2.0;999999999999999;NA")) == b"#AL#0\r\n"
    connection.verdict = LoginResult.ACCEPTED
    assert connection.answers(v2("L", f"2.0;{IMEI};right")) == b"#AL#1\r\n"


def test_repeated_failed_logins_close_the_connection() -> None:
    connection = Connection(verdict=LoginResult.WRONG_PASSWORD)
    closes = [connection.send(v2("L", f"2.0;{IMEI};guess{i}"))[0].close for i in range(5)]
    assert closes == [False, False, False, False, True]


# -- data before login -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "answer"),
    [
        (v2("SD", SD_BODY), b"#ASD#-1\r\n"),
        (v2("D", D_BODY), b"#AD#-1\r\n"),
        (v2("B", SD_BODY, b"|"), b"#AB#0\r\n"),
        (v2("M", "hello"), b"#AM#0\r\n"),
        (v2("IT", "010524;120000;DRV1;7;0"), b"#AIT#0\r\n"),
        (image_header(3, 0, 0, b"abc") + b"abc", b"#AI#NA;0\r\n"),
        (tachograph_header("7", 3, 0, b"abc") + b"abc", b"#AT#0;0\r\n"),
        (b"#P#\r\n", b"#AP#\r\n"),
    ],
)
def test_data_before_login_is_refused_and_not_stored(packet: bytes, answer: bytes) -> None:
    connection = Connection()
    [outcome] = connection.send(packet)
    assert outcome.answer == answer
    assert not outcome.has_data and not outcome.close


def test_data_after_a_refused_login_is_refused() -> None:
    connection = Connection(verdict=LoginResult.REFUSED)
    connection.send(v2("L", f"2.0;{IMEI};NA"))
    assert connection.answers(v2("D", D_BODY)) == b"#AD#-1\r\n"


# -- black box -------------------------------------------------------------------------------


def test_black_box_counts_only_the_messages_stored() -> None:
    bad_time = SD_BODY.replace("270413", "999999")
    body = "|".join([SD_BODY, bad_time, D_BODY, "1;2;3", SD_BODY])
    [outcome] = logged_in().send(v2("B", body, b"|"))
    assert outcome.answer == b"#AB#3\r\n"
    assert len(outcome.messages) == 3
    assert all(message.from_black_box for message in outcome.messages)
    assert outcome.note and "item 1" in outcome.note


def test_black_box_of_5000_messages() -> None:
    body = "|".join([D_BODY] * 2500 + [SD_BODY] * 2500)
    [outcome] = logged_in().send(v2("B", body, b"|"))
    assert outcome.answer == b"#AB#5000\r\n"
    assert len(outcome.messages) == 5000


def test_black_box_crc_error_has_no_number() -> None:
    packet = f"#B#{SD_BODY}|{SD_BODY}|0000\r\n".encode()
    [outcome] = logged_in().send(packet)
    assert outcome.answer == b"#AB#\r\n" and not outcome.messages


@pytest.mark.parametrize(
    ("packet", "answer"),
    [
        (b"#B#" + SD_BODY.encode() + b"\r\n", b"#AB#0\r\n"),
        (v2("B", "", b"|"), b"#AB#0\r\n"),
        (v2("B", "garbage", b"|"), b"#AB#0\r\n"),
    ],
)
def test_black_box_without_messages(packet: bytes, answer: bytes) -> None:
    assert logged_in().answers(packet) == answer


def test_black_box_v1_1() -> None:
    connection = logged_in("1.1")
    [outcome] = connection.send(v1("B", f"{SD_BODY}|{D_BODY}|{SD_BODY}|"))
    assert outcome.answer == b"#AB#3\r\n"
    assert [bool(m.params) for m in outcome.messages] == [False, True, False]


def test_black_box_with_a_string_parameter_holding_semicolons() -> None:
    item = D_BODY.replace("hw:3:V4.5", "hw:3:V4;5")
    [outcome] = logged_in().send(v2("B", f"{item}|{SD_BODY}", b"|"))
    assert outcome.answer == b"#AB#2\r\n"
    assert outcome.messages[0].params["hw"] == "V4;5"


# -- driver messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "packet", "answer", "text"),
    [
        ("2.0", v2("M", "Hello driver"), b"#AM#1\r\n", "Hello driver"),
        ("2.0", v2("M", "a;b;c"), b"#AM#1\r\n", "a;b;c"),
        ("2.0", v2("M", "Привет"), b"#AM#1\r\n", "Привет"),
        ("2.0", v2("M", "caf\xe9".encode("latin-1")), b"#AM#1\r\n", "café"),
        ("2.0", b"#M#Hello driver;0000\r\n", b"#AM#01\r\n", None),
        ("2.0", b"#M#no crc field\r\n", b"#AM#0\r\n", None),
        ("2.0", v2("M", ""), b"#AM#0\r\n", None),
        ("1.1", v1("M", "Hello; driver"), b"#AM#1\r\n", "Hello; driver"),
        ("1.1", b"#M#\r\n", b"#AM#0\r\n", None),
    ],
)
def test_driver_messages(version: str, packet: bytes, answer: bytes, text: str | None) -> None:
    [outcome] = logged_in(version).send(packet)
    assert outcome.answer == answer
    if text is None:
        assert outcome.driver_message is None
    else:
        assert outcome.driver_message is not None
        assert outcome.driver_message.text == text
        assert outcome.driver_message.received_at == NOW


# -- images ----------------------------------------------------------------------------------


def send_image(connection: Connection, blocks: list[bytes], with_crc: bool = True, **kw):
    last = len(blocks) - 1
    outcomes = []
    for index, block in enumerate(blocks):
        header = image_header(len(block), index, last, block if with_crc else None, **kw)
        outcomes += connection.send(header + block)
    return outcomes


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_image_in_blocks(version: str) -> None:
    blocks = [os.urandom(500), os.urandom(500), os.urandom(17)]
    outcomes = send_image(logged_in(version), blocks, with_crc=version == "2.0")
    assert [o.answer for o in outcomes] == [
        b"#AI#0;1\r\n",
        b"#AI#1;1\r\n",
        b"#AI#2;1\r\n#AI#1\r\n",
    ]
    assert [o.file is not None for o in outcomes] == [False, False, True]
    image = outcomes[-1].file
    assert isinstance(image, ImageFile)
    assert image.data == b"".join(blocks)
    assert image.name == "p.jpg"
    assert image.taken_at.isoformat() == "2024-05-01T12:00:00+00:00"


def test_single_block_image_and_a_name_with_semicolons() -> None:
    outcomes = send_image(logged_in(), [b"JPEG"], name="a;b.jpg")
    assert outcomes[0].answer == b"#AI#0;1\r\n#AI#1\r\n"
    assert outcomes[0].file is not None and outcomes[0].file.name == "a;b.jpg"


def test_image_named_na_gets_a_name() -> None:
    outcomes = send_image(logged_in(), [b"JPEG"], name="NA")
    assert outcomes[0].file is not None
    assert outcomes[0].file.name == "image_20240501_120000"


def test_image_block_crc_error() -> None:
    connection = logged_in()
    packet = image_header(4, 0, 1, b"something else") + b"JPEG"
    assert connection.answers(packet) == b"#AI#0;01\r\n"


def test_image_block_out_of_order_and_repeated() -> None:
    connection = logged_in()
    block = b"abc"
    assert connection.answers(image_header(3, 0, 2, block) + block) == b"#AI#0;1\r\n"
    assert connection.answers(image_header(3, 2, 2, block) + block) == b"#AI#2;0\r\n"
    assert connection.answers(image_header(3, 1, 2, block) + block) == b"#AI#1;1\r\n"
    assert connection.answers(image_header(3, 1, 2, block) + block) == b"#AI#1;1\r\n"
    [last] = connection.send(image_header(3, 2, 2, block) + block)
    assert last.answer == b"#AI#2;1\r\n#AI#1\r\n"
    assert last.file is not None and last.file.data == block * 3


def test_image_block_without_block_zero() -> None:
    connection = logged_in()
    assert connection.answers(image_header(3, 1, 2, b"abc") + b"abc") == b"#AI#1;0\r\n"


def test_image_restarts_on_block_zero() -> None:
    connection = logged_in()
    connection.send(image_header(1, 0, 1, b"a") + b"a")
    connection.send(image_header(1, 0, 1, b"b") + b"b")
    [last] = connection.send(image_header(1, 1, 1, b"c") + b"c")
    assert last.file is not None and last.file.data == b"bc"


@pytest.mark.parametrize(
    "header",
    [
        b"#I#3;x;0;010524;120000;p.jpg;0000\r\n",
        b"#I#3;0;y;010524;120000;p.jpg;0000\r\n",
        b"#I#3;0;0;010524;120000\r\n",
    ],
)
def test_image_header_structure_errors(header: bytes) -> None:
    assert logged_in().answers(header + b"abc") == b"#AI#NA;0\r\n"


def test_image_header_value_errors() -> None:
    connection = logged_in()
    assert connection.answers(image_header(3, 2, 1, b"abc") + b"abc") == b"#AI#2;0\r\n"
    bad_time = f"#I#3;0;0;320524;120000;p.jpg;{crc_text(b'abc')}\r\n".encode()
    assert connection.answers(bad_time + b"abc") == b"#AI#0;0\r\n"


def test_image_over_the_file_limit_is_dropped() -> None:
    connection = Connection(limits=WialonLimits(max_file=1000))
    connection.send(v2("L", f"2.0;{IMEI};NA"))
    block = b"x" * 600
    assert connection.answers(image_header(600, 0, 1, block) + block) == b"#AI#0;1\r\n"
    assert connection.answers(image_header(600, 1, 1, block) + block) == b"#AI#1;0\r\n"
    assert connection.answers(image_header(600, 1, 1, block) + block) == b"#AI#1;0\r\n"


def test_image_with_too_many_blocks_is_refused() -> None:
    connection = Connection(limits=WialonLimits(max_blocks=10))
    connection.send(v2("L", f"2.0;{IMEI};NA"))
    assert connection.answers(image_header(1, 0, 10, b"x") + b"x") == b"#AI#0;0\r\n"


# -- tachograph ------------------------------------------------------------------------------


def tachograph_info(version: str, content: str) -> bytes:
    return v2("IT", content) if version == "2.0" else v1("IT", content)


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_tachograph_file(version: str) -> None:
    connection = logged_in(version)
    info = tachograph_info(version, "010524;153000;DRV 42/7;C1;1")
    assert connection.answers(info) == b"#AIT#1\r\n"
    blocks = [os.urandom(700), os.urandom(30)]
    outcomes = []
    for index, block in enumerate(blocks):
        header = tachograph_header("C1", len(block), index, block if version == "2.0" else None)
        outcomes += connection.send(header + block)
    assert [o.answer for o in outcomes] == [b"#AT#0;1\r\n", b"#AT#1;1\r\n#AT#1\r\n"]
    file = outcomes[-1].file
    assert isinstance(file, TachographFile)
    assert file.name == "DRV_42_7_20240501_153000.ddd"
    assert file.driver_id == "DRV 42/7"
    assert file.data == b"".join(blocks)


@pytest.mark.parametrize(
    ("packet", "answer"),
    [
        (b"#IT#010524;153000;DRV1;C1;1;0000\r\n", b"#AIT#01\r\n"),
        (v2("IT", "010524;153000;DRV1;C1"), b"#AIT#0\r\n"),
        (v2("IT", "010524;153000;NA;C1;1"), b"#AIT#0\r\n"),
        (v2("IT", "010524;153000;DRV1;C1;many"), b"#AIT#0\r\n"),
        (v2("IT", "330524;153000;DRV1;C1;1"), b"#AIT#0\r\n"),
        (b"#IT#no crc\r\n", b"#AIT#0\r\n"),
        (v2("IT", "NA;NA;DRV1;C1;0"), b"#AIT#1\r\n"),
    ],
)
def test_tachograph_info_answers(packet: bytes, answer: bytes) -> None:
    assert logged_in().answers(packet) == answer


def test_tachograph_time_na_uses_the_receive_time() -> None:
    connection = logged_in()
    connection.send(v2("IT", "NA;NA;D1;C1;0"))
    [outcome] = connection.send(tachograph_header("C1", 1, 0, b"x") + b"x")
    assert outcome.file is not None and outcome.file.name == "D1_20240501_120000.ddd"


def test_tachograph_block_answers() -> None:
    connection = logged_in()
    block = b"abc"
    assert connection.answers(tachograph_header("C1", 3, 0, block) + block) == b"#AT#0;0\r\n"
    connection.send(v2("IT", "010524;153000;DRV1;C1;1"))
    assert connection.answers(tachograph_header("C9", 3, 0, block) + block) == b"#AT#0;0\r\n"
    assert connection.answers(tachograph_header("C1", 3, 0, b"zzz") + block) == b"#AT#0;01\r\n"
    assert connection.answers(tachograph_header("C1", 3, 1, block) + block) == b"#AT#1;0\r\n"
    assert connection.answers(tachograph_header("C1", 3, 5, block) + block) == b"#AT#5;0\r\n"
    assert connection.answers(b"#T#C1;3;x;0000\r\nabc") == b"#AT#NA;0\r\n"
    assert connection.answers(b"#T#C1;3;0;1;2\r\nabc") == b"#AT#NA;0\r\n"
    assert connection.answers(tachograph_header("C1", 3, 0, block) + block) == b"#AT#0;1\r\n"
    [outcome] = connection.send(tachograph_header("C1", 3, 1, block) + block)
    assert outcome.answer == b"#AT#1;1\r\n#AT#1\r\n"
    # the download is over: a further block has no file info
    assert connection.answers(tachograph_header("C1", 3, 1, block) + block) == b"#AT#1;0\r\n"


def test_tachograph_file_over_the_limit_is_dropped() -> None:
    connection = Connection(limits=WialonLimits(max_file=5))
    connection.send(v2("L", f"2.0;{IMEI};NA"))
    connection.send(v2("IT", "010524;153000;DRV1;C1;1"))
    assert connection.answers(tachograph_header("C1", 3, 0, b"abc") + b"abc") == b"#AT#0;1\r\n"
    assert connection.answers(tachograph_header("C1", 3, 1, b"abc") + b"abc") == b"#AT#1;0\r\n"
    assert connection.answers(tachograph_header("C1", 2, 1, b"ab") + b"ab") == b"#AT#1;0\r\n"


# -- framing errors, unknown and garbage lines -----------------------------------------------


@pytest.mark.parametrize(
    ("packet_start", "answer"),
    [
        (b"#L#2.0;", b"#AL#0\r\n"),
        (b"#SD#2704", b"#ASD#-1\r\n"),
        (b"#D#2704", b"#AD#-1\r\n"),
        (b"#B#2704", b"#AB#0\r\n"),
        (b"#M#hello", b"#AM#0\r\n"),
        (b"#IT#0105", b"#AIT#0\r\n"),
        (b"#I#5;0;0", b"#AI#NA;0\r\n"),
        (b"#T#C1;99;3;ABCD", b"#AT#3;0\r\n"),
        (b"#T#C1", b"#AT#NA;0\r\n"),
    ],
)
def test_over_long_line_gets_its_packets_structure_error(packet_start: bytes, answer: bytes):
    connection = Connection(limits=WialonLimits(max_line=100))
    connection.send(v2("L", f"2.0;{IMEI};NA"))
    [outcome] = connection.send(packet_start + b"9" * 200)
    assert outcome.answer == answer and not outcome.close and not outcome.has_data
    assert connection.answers(b"999\r\n#P#\r\n") == b"#AP#\r\n"


def test_fatal_frame_error_answers_then_closes() -> None:
    connection = logged_in()
    [outcome] = connection.send(b"#I#huge;0;0;010524;120000;p.jpg;0000\r\n")
    assert outcome.answer == b"#AI#NA;0\r\n" and outcome.close
    [outcome] = logged_in().send(b"\xff\x03\x00abc")
    assert outcome.answer == b"" and outcome.close


def test_frame_error_of_an_unknown_packet_closes() -> None:
    outcome = WialonSession().handle(FrameError("too long", b"#P#xxxx"), NOW)
    assert outcome.close and outcome.answer == b""
    outcome = WialonSession().handle(FrameError("too long", b"GET / HTTP/1.1"), NOW)
    assert outcome.close


def test_unknown_packet_type_is_ignored() -> None:
    connection = logged_in()
    [outcome] = connection.send(b"#XYZ#whatever\r\n")
    assert outcome.answer == b"" and not outcome.close and outcome.note
    assert connection.answers(b"#P#\r\n") == b"#AP#\r\n"


@pytest.mark.parametrize(
    "line", [b"GET / HTTP/1.1\r\n", b"#\r\n", b"##\r\n", b"#sd#x\r\n", b"#TOOLONG#x\r\n"]
)
def test_garbage_line_closes(line: bytes) -> None:
    [outcome] = Connection().send(line)
    assert outcome.close and outcome.answer == b""


def test_block_header_as_a_text_frame_is_a_structure_error() -> None:
    session = WialonSession()
    outcome = session.handle(TextFrame(b"#I#3;0;0;010524;120000;p.jpg"), NOW)
    assert outcome.answer == b"#AI#NA;0\r\n"


# -- the answer travels with the data it acknowledges ----------------------------------------


def test_outcomes_pair_each_answer_with_its_data() -> None:
    connection = Connection()
    stream = (
        v2("L", f"2.0;{IMEI};NA")
        + v2("D", D_BODY)
        + compress(v2("B", f"{SD_BODY}|{SD_BODY}", b"|"))
        + b"#P#\r\n"
        + v2("M", "hi")
    )
    outcomes = connection.send(stream)
    assert [(o.answer, len(o.messages), o.has_data) for o in outcomes] == [
        (b"#AL#1\r\n", 0, False),
        (b"#AD#1\r\n", 1, True),
        (b"#AB#2\r\n", 2, True),
        (b"#AP#\r\n", 0, False),
        (b"#AM#1\r\n", 0, True),
    ]


def test_a_pipelined_stream_split_anywhere_gives_the_same_answers() -> None:
    stream = (
        v2("L", f"2.0;{IMEI};NA")
        + v2("SD", SD_BODY)
        + compress(v2("D", D_BODY))
        + image_header(4, 0, 0, b"\r\n#P")
        + b"\r\n#P"
        + v2("B", f"{SD_BODY}|{D_BODY}", b"|")
    )
    whole = Connection().answers(stream)
    assert whole == b"#AL#1\r\n#ASD#1\r\n#AD#1\r\n#AI#0;1\r\n#AI#1\r\n#AB#2\r\n"
    connection = Connection()
    assert b"".join(connection.answers(bytes([byte])) for byte in stream) == whole
