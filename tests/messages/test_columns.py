"""Messages as columns: `columns.read` gives what `from_messages` makes of the stored messages,
whether a day comes from the column store or from the rows, through late data, duplicates,
filtered messages and retention."""

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import RunningServer, Tenant
from fleetplane.core.db import create_system_engine, session_factory, system_session
from fleetplane.devices import service as devices
from fleetplane.messages import column_builder, column_chunks, column_store, columns, retention
from fleetplane.messages import processor as message_columns
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message

Result = TypeVar("Result")
BASE = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 4
PARAMS = ("ign", "fuel", "custom_level", "note", "absent")
# After every day of the histories.
LATER = BASE + timedelta(days=DAYS + 30)


# --- the chunk format alone -----------------------------------------------------------------

odd_floats = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, math.nan, 1e300, -1e-300, 5e-324, 19.0756, 2.0**60]
)
floats = st.one_of(
    st.integers(-(10**6), 10**6).map(float),
    st.integers(-(10**9), 10**9).map(lambda n: n / 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_floats,
)


@st.composite
def chunk_columns(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(0, 40))
    integer = st.integers(-(2**63), 2**63 - 1)
    return {
        "count": count,
        "time": np.array(draw(st.lists(integer, min_size=count, max_size=count)), np.int64),
        "speed": np.array(draw(st.lists(floats, min_size=count, max_size=count)), np.float64),
        "lat": np.array(
            [
                n / 1e7
                for n in draw(
                    st.lists(st.integers(-9 * 10**8, 9 * 10**8), min_size=count, max_size=count)
                )
            ],
            np.float64,
        ),
        "lon": np.array(draw(coordinates(count)), np.float64),
        "filtered": np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), bool),
        "fuel": np.array(
            draw(st.lists(st.one_of(st.just(math.nan), floats), min_size=count, max_size=count)),
            np.float64,
        ),
    }


def coordinates(count: int) -> st.SearchStrategy[list[float]]:
    """Stored coordinates: on an NMEA tracker's lattice of 1/10**p minute (as the protocol
    decoder and the row make them), or any 1e-7 degree, NaN where missing."""

    def on_lattice(steps: list[int], decimals: int) -> list[float]:
        return [round(k / (60 * 10**decimals) * 1e7) / 1e7 for k in steps]

    step = st.integers(-180 * 60 * 10**5, 180 * 60 * 10**5)
    lattice = st.builds(
        on_lattice, st.lists(step, min_size=count, max_size=count), st.sampled_from([3, 4, 5])
    )
    anywhere = st.lists(
        st.one_of(st.integers(-(18 * 10**8), 18 * 10**8).map(lambda n: n / 1e7), st.just(math.nan)),
        min_size=count,
        max_size=count,
    )
    return st.one_of(lattice, anywhere)


def same(mine: np.ndarray, theirs: np.ndarray) -> bool:
    return columns._same_values(mine, theirs)


@settings(max_examples=300, deadline=None)
@given(st.lists(chunk_columns(), min_size=1, max_size=4))
def test_chunks_unpack_to_the_very_arrays_they_were_packed_from(
    chunks: list[dict[str, Any]],
) -> None:
    packed = [
        column_chunks.pack(
            {
                "time_us": c["time"],
                "speed": c["speed"],
                "lat": c["lat"],
                "lon": c["lon"],
                "filtered": c["filtered"],
            },
            {"fuel": c["fuel"]} if i % 2 == 0 else {},
            c["count"],
        )
        for i, c in enumerate(chunks)
    ]
    for chunk, data in zip(chunks, packed, strict=True):
        alone = column_chunks.unpack(data, ["fuel"])
        assert same(alone.fields["time_us"], chunk["time"])
        assert same(alone.fields["speed"], chunk["speed"])
        assert same(alone.fields["lat"], chunk["lat"])
        assert same(alone.fields["lon"], chunk["lon"])
        assert same(alone.fields["filtered"], chunk["filtered"])
    together = column_chunks.unpack_many(packed, ["fuel", "absent"])
    assert same(together.fields["time_us"], np.concatenate([c["time"] for c in chunks]))
    assert same(together.fields["speed"], np.concatenate([c["speed"] for c in chunks]))
    assert same(together.fields["lat"], np.concatenate([c["lat"] for c in chunks]))
    assert same(together.fields["lon"], np.concatenate([c["lon"] for c in chunks]))
    assert same(together.fields["filtered"], np.concatenate([c["filtered"] for c in chunks]))
    fuel = [c["fuel"] if i % 2 == 0 else np.full(c["count"], np.nan) for i, c in enumerate(chunks)]
    assert same(together.params["fuel"], np.concatenate(fuel))
    assert "absent" not in together.params


def test_coordinates_of_nmea_trackers_are_stored_as_steps_of_their_minutes() -> None:
    steps = np.arange(33_000_000, 33_000_000 + 500 * 7, 7)  # 1/10,000 minute each
    lat = np.array([round(k / 600_000 * 1e7) / 1e7 for k in steps])
    lat[3] = np.nan
    any_degrees = lat.copy()
    any_degrees[5] += 1e-7  # off the lattice
    on, off = (
        column_chunks.pack({"lat": values}, {}, len(values)) for values in (lat, any_degrees)
    )
    assert len(on) < len(off)
    assert same(column_chunks.unpack(on).fields["lat"], lat)
    assert same(column_chunks.unpack(off).fields["lat"], any_degrees)
    together = column_chunks.unpack_many([on, off, on])
    assert same(together.fields["lat"], np.concatenate([lat, any_degrees, lat]))


def test_a_chunk_of_a_newer_format_is_refused() -> None:
    data = bytearray(column_chunks.pack({"time_us": np.zeros(1, np.int64)}, {}, 1))
    data[0] = column_chunks.FORMAT_VERSION + 1
    try:
        column_chunks.unpack(bytes(data))
    except ValueError as error:
        assert "format" in str(error)
    else:
        raise AssertionError("a newer format was read")


# --- read against the stored messages -------------------------------------------------------


@dataclass
class History:
    """A device's store, driven as the intake, retention and the builder drive it; `newest`
    is its live state's newest valid message time."""

    sessions: async_sessionmaker[AsyncSession]
    seq: int
    newest: datetime | None = None

    async def store(self, batch: list[Message]) -> None:
        """As the intake stores a batch (`ingest.pipeline`): the rows, then the note."""
        async with system_session(self.sessions) as session:
            await messages.insert_rows(session, [messages.to_row(self.seq, m) for m in batch])
            stored = message_columns.StoredBatch(self.seq, batch, self.newest)
            await message_columns.note_stored(session, [stored])
        valid = [m.device_time for m in batch if not m.filtered]
        if valid and (self.newest is None or max(valid) > self.newest):
            self.newest = max(valid)

    async def build(self) -> None:
        await column_builder.build_once(self.sessions, limit=10**6, pause_seconds=0)

    async def retain(self, cutoff: datetime) -> None:
        # The retention job's own per-device loop, for this device only (the shared test
        # database holds other tests' messages).
        async with system_session(self.sessions) as session:
            device_id = await _device_id(session, self.seq)
        await retention._purge_devices(self.sessions, [device_id], cutoff)

    async def check(self, after: datetime | None, until: datetime) -> None:
        async with system_session(self.sessions) as session:
            got = await columns.read(session, self.seq, after=after, until=until, params=PARAMS)
            expected = columns.from_messages(await _stored(session, self.seq, after, until), PARAMS)
        assert got.equals(expected), _difference(got, expected)


async def _stored(
    session: AsyncSession, seq: int, after: datetime | None, until: datetime
) -> list[Message]:
    return await messages.stored_since(session, seq, after=after, until=until, limit=10**9)


async def _device_id(session: AsyncSession, seq: int) -> str:
    from sqlalchemy import select

    from fleetplane.devices.models import Device

    return (await session.execute(select(Device.id).where(Device.seq == seq))).scalar_one()


def _difference(got: columns.Columns, expected: columns.Columns) -> str:
    return f"read {got.time_us.tolist()} / stored {expected.time_us.tolist()}"


def with_device(
    server: RunningServer, tenant: Tenant, work: Callable[[History], Awaitable[Result]]
) -> Result:
    device_id = tenant.api.post("/api/devices", json=tenant.device_body()).json()["id"]

    async def run() -> Result:
        engine = create_system_engine(server.settings)
        sessions = session_factory(engine)
        try:
            async with system_session(sessions) as session:
                seq = (await devices.seqs_of(session, [device_id]))[device_id]
            return await work(History(sessions, seq))
        finally:
            await engine.dispose()

    return asyncio.run(run())


minutes = st.integers(0, DAYS * 24 * 60 - 1)
values = st.one_of(
    st.none(),
    st.integers(-5, 300).map(float),
    st.integers(0, 2000).map(lambda n: n / 10),
    st.sampled_from([19.0756, -0.0, 0.1 + 0.2]),
)
param_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.integers(0, 10**6).map(lambda n: n / 100),
    st.sampled_from([True, False, None, "on", "0A1B", -0.0, 1e300, math.nan, 2**70, [1]]),
)


@st.composite
def message(draw: st.DrawFn) -> Message:
    at = BASE + timedelta(minutes=draw(minutes), microseconds=draw(st.sampled_from([0, 7])))
    params = draw(
        st.dictionaries(st.sampled_from(["ign", "fuel", "custom_level", "note"]), param_values)
    )
    return Message(
        device_time=at,
        received_at=at + timedelta(seconds=draw(st.integers(0, 5000))),
        lat=draw(st.one_of(st.none(), st.floats(-89, 89))),
        lon=draw(st.one_of(st.none(), st.floats(-179, 179))),
        speed=draw(values),
        altitude=draw(values),
        course=draw(values),
        satellites=draw(st.one_of(st.none(), st.integers(0, 30))),
        hdop=draw(values),
        inputs=draw(st.one_of(st.none(), st.integers(0, 255))),
        outputs=draw(st.one_of(st.none(), st.integers(0, 255))),
        params=params,
        from_black_box=draw(st.booleans()),
        filtered=draw(st.booleans()),
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.lists(message(), min_size=1, max_size=30)),
        st.tuples(st.just("build"), st.none()),
        st.tuples(st.just("retain"), minutes),
        st.tuples(st.just("check"), st.tuples(st.one_of(st.none(), minutes), minutes)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=operations)
def test_read_is_what_the_stored_messages_give(
    server: RunningServer, tenant: Tenant, history: list[tuple[str, Any]]
) -> None:
    async def play(device: History) -> None:
        for operation, argument in history:
            if operation == "store":
                await device.store(argument)
            elif operation == "build":
                await device.build()
            elif operation == "retain":
                await device.retain(BASE + timedelta(minutes=argument))
            else:
                after, until = argument
                start = None if after is None else BASE + timedelta(minutes=after)
                await device.check(start, BASE + timedelta(minutes=until, seconds=30))
            await device.check(None, LATER)
        await device.build()
        await device.check(None, LATER)

    with_device(server, tenant, play)


# --- the column store is used, and kept true --------------------------------------------------


def reports(first: datetime, count: int, every: timedelta, **fields: Any) -> list[Message]:
    return [
        Message(
            device_time=first + every * n,
            received_at=first + every * n,
            lat=56.9 + n * 1e-5,
            lon=24.1,
            speed=float(n % 90),
            params={"ign": n % 2, "fuel": 40 + n / 10},
            **fields,
        )
        for n in range(count)
    ]


async def chunk_days(device: History) -> list[datetime]:
    async with system_session(device.sessions) as session:
        found = await column_store.current_chunks(session, device.seq, after=None, until=LATER)
    return [chunk.start for chunk in found]


def test_days_that_are_over_are_read_from_their_chunks(
    server: RunningServer, tenant: Tenant
) -> None:
    day = timedelta(days=1)

    async def play(device: History) -> None:
        await device.store(reports(BASE, 3 * 288, timedelta(minutes=5)))
        await device.check(None, LATER)
        assert await chunk_days(device) == []  # nothing packed yet
        await device.build()
        # The last day is the device's current one: a later day follows the first two.
        assert await chunk_days(device) == [BASE, BASE + day]
        await device.check(None, LATER)
        await device.check(BASE + timedelta(hours=5), BASE + day + timedelta(hours=7))

        # A black box into the first day: the days from then on are read from the rows until
        # the builder has packed the first again and seen that the second is as it was.
        late = reports(BASE + timedelta(minutes=2), 3, timedelta(hours=1), from_black_box=True)
        await device.store(late)
        assert await chunk_days(device) == []
        await device.check(None, LATER)
        await device.build()
        assert await chunk_days(device) == [BASE, BASE + day]
        await device.check(None, LATER)

        # A resend of a stored message (the first one stored stays).
        again = reports(BASE + day, 1, day, from_black_box=True)
        again[0].params["fuel"] = 99.5
        await device.store(again)
        assert await chunk_days(device) == [BASE]
        await device.check(None, LATER)
        await device.build()
        assert await chunk_days(device) == [BASE, BASE + day]
        await device.check(None, LATER)

        # Retention through the first day: its chunk goes with the rows, and comes back packed
        # from what remains.
        await device.retain(BASE + timedelta(hours=12))
        assert await chunk_days(device) == [BASE + day]
        await device.check(None, LATER)
        await device.build()
        assert await chunk_days(device) == [BASE, BASE + day]
        await device.check(None, LATER)
        await device.retain(BASE + day + timedelta(seconds=1))
        assert await chunk_days(device) == []
        await device.check(None, LATER)

    with_device(server, tenant, play)


def test_a_builder_that_read_before_a_change_stores_nothing(
    server: RunningServer, tenant: Tenant
) -> None:
    async def play(device: History) -> None:
        await device.store(reports(BASE, 2 * 288, timedelta(minutes=5)))
        async with system_session(device.sessions) as session:
            waiting = await column_store.waiting_days(session, 100_000)
        mine = [day for day in waiting if day.device_seq == device.seq]
        assert [day.start for day in mine] == [BASE]  # the second is the device's current day
        # Late data lands after the builder read the day's version...
        await device.store(reports(BASE + timedelta(seconds=1), 1, timedelta(hours=1)))
        # ...so what it packed from the rows it read then is not stored.
        assert not await column_builder.build_day(device.sessions, mine[0])
        assert await chunk_days(device) == []
        await device.build()
        assert BASE in await chunk_days(device)
        await device.check(None, LATER)

    with_device(server, tenant, play)


def test_the_intake_notes_a_day_once_and_late_data_as_it_comes(
    server: RunningServer, tenant: Tenant
) -> None:
    async def play(device: History) -> None:
        first = reports(BASE + timedelta(hours=23), 24, timedelta(minutes=5))  # across midnight
        await device.store(first[:12])
        await device.store(first[12:])
        await device.build()
        assert await chunk_days(device) == [BASE]
        await device.check(None, LATER)
        # Filtered messages alone open no day (a day of them is read from the rows)...
        three = reports(BASE + timedelta(days=2), 3, timedelta(minutes=1), filtered=True)
        await device.store(three)
        await device.build()
        assert await chunk_days(device) == [BASE]
        await device.check(None, LATER)
        # ...but a late one marks its day stale like any other.
        await device.store(reports(BASE + timedelta(hours=2), 1, timedelta(0), filtered=True))
        assert await chunk_days(device) == []
        await device.check(None, LATER)
        await device.build()
        assert await chunk_days(device) == [BASE]
        await device.check(None, LATER)

    with_device(server, tenant, play)


def test_fields_a_caller_leaves_unread_are_missing_and_the_rest_as_read() -> None:
    at = datetime(2026, 11, 3, 8, tzinfo=UTC)
    found = [
        Message(
            device_time=at + timedelta(seconds=n),
            received_at=at,
            lat=56.9,
            lon=24.1,
            altitude=12.0,
            speed=30.0 + n,
            course=90.0,
            satellites=9,
            hdop=0.9,
            inputs=3,
            outputs=1,
            params={"fuel": 40.5},
        )
        for n in range(3)
    ]
    whole = columns.from_messages(found, ["fuel"])
    partial = columns.from_messages(found, ["fuel"], unread={"altitude", "hdop", "inputs"})
    assert np.isnan(partial.altitude).all() and np.isnan(partial.hdop).all()
    assert (partial.inputs == -1).all()
    for name in ("time_us", "lat", "lon", "speed", "course", "satellites", "outputs"):
        assert np.array_equal(getattr(partial, name), getattr(whole, name)), name
    assert np.array_equal(partial.params["fuel"], whole.params["fuel"])
