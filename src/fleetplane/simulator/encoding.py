"""The device side of Wialon IPS 2.0: fixes to packets, server answers to values.

Packets are written as a v2.0 tracker writes them (see `specs/wialon-ips.md`); the CRC is the
platform's own, so a simulated device and the listener cannot disagree about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.simulator.route import Fix

MAX_BLACK_BOX = 5000  # messages in one `#B#` packet, per the protocol
IGNITION_INPUT = 0b1  # input 1 is wired to the ignition

_TEN_THOUSANDTHS_PER_DEGREE = 60 * 10_000  # DDMM.MMMM keeps 1/10,000 of a minute


def encode_login(imei: str, password: str | None = None) -> bytes:
    """`#L#2.0;IMEI;Password;CRC` (`NA` when the device has no password)."""
    for value in (imei, password or ""):
        if any(character in value for character in ";#\r\n"):
            raise ValueError(f"{value!r} cannot be sent in a login")
    return _with_crc(b"L", f"2.0;{imei};{password or 'NA'}".encode(), b";")


def encode_data(fix: Fix) -> bytes:
    """`#D#` with every field of the fix and its CRC."""
    return _with_crc(b"D", extended_body(fix).encode(), b";")


def encode_black_box(fixes: Sequence[Fix]) -> bytes:
    """`#B#` with the fixes' bodies joined by `|`, then `|CRC`."""
    if not 0 < len(fixes) <= MAX_BLACK_BOX:
        raise ValueError(f"a black box holds 1 to {MAX_BLACK_BOX} messages, not {len(fixes)}")
    return _with_crc(b"B", "|".join(map(extended_body, fixes)).encode(), b"|")


def encode_ping() -> bytes:
    return b"#P#\r\n"


def _with_crc(kind: bytes, content: bytes, separator: bytes) -> bytes:
    covered = content + separator
    return b"#" + kind + b"#" + covered + crc_text(covered).encode() + b"\r\n"


def extended_body(fix: Fix) -> str:
    """The sixteen `#D#` fields, without the CRC (also a black-box item)."""
    return ";".join(
        (
            f"{fix.time:%d%m%y}",
            f"{fix.time:%H%M%S}",
            *_position_fields(fix),
            _optional(fix.speed),
            _optional(fix.course),
            _optional(fix.altitude),
            str(fix.satellites),
            "NA" if fix.hdop is None else f"{fix.hdop:.1f}",
            str(IGNITION_INPUT if fix.ignition else 0),
            "0",  # outputs: none driven
            "NA",  # no analog inputs: the sensors report as parameters
            fix.driver_key or "NA",
            _params(fix),
        )
    )


def _position_fields(fix: Fix) -> tuple[str, str, str, str]:
    if fix.lat is None or fix.lon is None:
        return ("NA", "NA", "NA", "NA")
    return (
        _degrees_minutes(fix.lat, 2),
        "N" if fix.lat >= 0 else "S",
        _degrees_minutes(fix.lon, 3),
        "E" if fix.lon >= 0 else "W",
    )


def _degrees_minutes(value: float, degree_digits: int) -> str:
    """NMEA `DDMM.MMMM`, rounded in whole units so minutes never print as 60."""
    units = round(abs(value) * _TEN_THOUSANDTHS_PER_DEGREE)
    degrees, rest = divmod(units, _TEN_THOUSANDTHS_PER_DEGREE)
    minutes, fraction = divmod(rest, 10_000)
    return f"{degrees:0{degree_digits}d}{minutes:02d}.{fraction:04d}"


def _optional(value: int | None) -> str:
    return "NA" if value is None else str(value)


def _params(fix: Fix) -> str:
    return ",".join(
        (
            f"ign:1:{int(fix.ignition)}",
            f"fuel:2:{fix.fuel:.1f}",
            f"pwr_ext:2:{fix.power:.2f}",
            f"odometer:2:{fix.odometer:.3f}",
            f"engine_hours:2:{fix.engine_hours:.2f}",
        )
    )


# --------------------------------------------------------------------------------------------
# Server answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A line from the server: `#AD#1` is kind `AD`, value `1`."""

    kind: str
    value: str

    @property
    def number(self) -> int | None:
        """The value as an integer (`#AB#12` -> 12); None when it is not one (`#AB#`)."""
        try:
            return int(self.value)
        except ValueError:
            return None


def parse_answer(line: bytes) -> Answer | None:
    """`#KIND#value` without its line end; None when the line is not a packet."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("#"):
        return None
    kind, separator, value = text[1:].partition("#")
    if not separator or not kind:
        return None
    return Answer(kind, value)
