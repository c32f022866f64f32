"""Packed rows decoded straight into columns (`codec_columns.decode`) give what the rows give
one by one (`codec.unpack` through `stored_since`'s messages, then `columns.from_messages`),
bit for bit, whatever the rows hold."""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.messages import codec, codec_columns, columns
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message

BASE = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = ["ign", "fuel", "odometer", "adc1", "text", "custom_level", "io_239", "ñame"]

odd_floats = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, math.nan, 1e300, -1e-300, 5e-324, 19.0756, 0.1 + 0.2,
     2.0**53, 2.0**60, 123456.789, 12.5, -7.25]
)  # fmt: skip
any_float = st.one_of(
    odd_floats,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**7), 10**7).map(lambda n: n / 10),
    st.integers(-(10**9), 10**9).map(lambda n: n / 1000),
    st.integers(-(10**12), 10**12).map(lambda n: n / 10**6),
)
field_float = st.one_of(st.none(), any_float, st.integers(0, 1023).map(float))
big_int = st.one_of(
    st.integers(-(2**40), 2**40),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**70,
                     -(2**63), -(2**63) - 1, -(2**70)]),
)  # fmt: skip
param_value = st.one_of(
    big_int,
    any_float,
    st.sampled_from([True, False, None, "on", "0A1B", "", "ÿ", [1, 2], {"a": 1}]),
    st.text(max_size=5),
)


@st.composite
def stored_message(draw: st.DrawFn, index: int) -> Message:
    at = BASE + timedelta(seconds=10 * index, microseconds=draw(st.sampled_from([0, 7])))
    return Message(
        device_time=at,
        received_at=at + timedelta(milliseconds=draw(st.integers(-(10**9), 10**9))),
        lat=draw(st.one_of(st.none(), st.floats(-89, 89))),
        lon=draw(st.one_of(st.none(), st.floats(-179, 179))),
        altitude=draw(field_float),
        speed=draw(field_float),
        course=draw(field_float),
        satellites=draw(st.one_of(st.none(), st.integers(0, 30), big_int.filter(_fits_int64))),
        hdop=draw(field_float),
        inputs=draw(st.one_of(st.none(), st.integers(0, 255), big_int.filter(_fits_int64))),
        outputs=draw(st.one_of(st.none(), st.integers(0, 255), big_int.filter(_fits_int64))),
        params=draw(st.dictionaries(st.sampled_from(NAMES), param_value)),
        from_black_box=draw(st.booleans()),
        device_time_missing=draw(st.booleans()),
        filtered=draw(st.booleans()),
    )


def _fits_int64(value: int) -> bool:
    return -(2**63) <= value < 2**63  # a mask column is int64: beyond, neither path reads it


@st.composite
def stored_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 30))
    return [messages.to_row(1, draw(stored_message(index))) for index in range(count)]


def one_by_one(rows: list[dict[str, Any]]) -> columns.Columns:
    """What `read_rows` gave before: `stored_since`'s messages, then `from_messages`."""
    found = [
        messages.from_stored_row(row["device_time"], row["lat_e7"], row["lon_e7"], row["packed"])
        for row in rows
    ]
    return columns.from_messages(found, numeric_params(found))


def numeric_params(found: list[Message]) -> list[str]:
    """The parameters that are a number in some message (what a chunk holds)."""
    names: dict[str, None] = {}
    for message in found:
        names.update((n, None) for n, v in message.params.items() if isinstance(v, int | float))
    return list(names)


def at_once(rows: list[dict[str, Any]]) -> columns.Columns:
    times = np.array([columns.time_us(row["device_time"]) for row in rows], np.int64)
    return columns.from_rows(
        times, [r["lat_e7"] for r in rows], [r["lon_e7"] for r in rows], [r["packed"] for r in rows]
    )


@settings(max_examples=250, deadline=None)
@given(stored_rows())
def test_rows_decoded_at_once_are_the_rows_decoded_one_by_one(rows: list[dict[str, Any]]) -> None:
    expected = one_by_one(rows)
    got = at_once(rows)
    assert got.equals(expected), (got, expected)


def test_rows_of_a_day_of_reports() -> None:
    rows = [
        messages.to_row(
            1,
            Message(
                device_time=BASE + timedelta(seconds=10 * n),
                received_at=BASE + timedelta(seconds=10 * n + 1),
                lat=56.9 + n * 1e-5,
                lon=24.1,
                speed=float(n % 90),
                altitude=20.0,
                satellites=9,
                hdop=0.9,
                inputs=n % 4,
                params={"ign": n % 2, "fuel": 40 + n / 10, "driver_key": "0A1B", "io_1": n},
            ),
        )
        for n in range(8640)
    ]
    got = at_once(rows)
    assert got.equals(one_by_one(rows))
    assert sorted(got.params) == ["fuel", "ign", "io_1"]


def test_a_row_of_a_newer_format_is_refused() -> None:
    row = messages.to_row(1, Message(device_time=BASE, received_at=BASE, params={"ign": 1}))
    newer = bytes([row["packed"][0] | 0x80, 0x08]) + row["packed"][1:]
    with pytest.raises(ValueError, match="newer format"):
        codec.unpack(BASE, newer)
    with pytest.raises(ValueError, match="newer format"):
        codec_columns.decode([None], [None], [newer])
