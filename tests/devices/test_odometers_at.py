"""`devices.counters.odometers_at`: the odometer the counters showed after a device's message at
given times (what the trips step keeps on each interval's start and end), against counting the
stored messages from scratch, whatever the checkpoints, the messages the caller holds, the
odometers it already knows and the messages without a position between."""

import itertools
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db
from fleetplane.devices import service as devices
from fleetplane.devices.counters import Counters, DeviceCountersStep, count, odometers_at
from fleetplane.messages import service as messages
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message
from steps.test_pipeline_steps import START

CASES = 30


def drive(rng: random.Random) -> list[Message]:
    """Messages over a few hours: mostly fixes wandering about, some without a position, some
    silences of up to two hours."""
    at, lat, lon = START - timedelta(hours=5, minutes=rng.randrange(60)), 56.9, 24.1
    found = []
    for _ in range(rng.randrange(2, 160)):
        at += timedelta(seconds=rng.choice([1, 10, 30, 60, 600, 7200]), microseconds=1000)
        positioned = rng.random() < 0.7
        if positioned:
            lat += rng.uniform(-0.002, 0.002)
            lon += rng.uniform(-0.002, 0.002)
        message = Message(
            device_time=at,
            received_at=at,
            lat=lat if positioned else None,
            lon=lon if positioned else None,
            speed=30.0 if positioned else None,
            satellites=rng.choice([2, 9]) if positioned else None,
            inputs=0,
            outputs=0,
        )
        found.append(messages.stored_form(message))
    return found


def from_scratch(stored: list[Message]) -> dict[datetime, float]:
    counters, found = Counters(), {}
    for message in stored:
        counters, _ = count(counters, [message], None)
        found[message.device_time] = counters.odometer_m
    return found


def test_the_odometer_at_any_message_is_the_one_counted_from_scratch(
    server: RunningServer, tenant: Tenant
) -> None:
    rng = random.Random(9)
    for case in range(CASES):
        found, expected = a_case(server, tenant, rng)
        assert found == expected, f"case {case}"


def a_case(
    server: RunningServer, tenant: Tenant, rng: random.Random
) -> tuple[dict[datetime, float | None], dict[datetime, float]]:
    """A new device's messages stored, the counters run over them in rounds cut anywhere (to
    where they got), then a few times asked with the messages of some span in hand: (what was
    found, what counting from scratch gives), by time asked."""
    created = tenant.api.post("/api/devices", json=tenant.device_body())
    assert created.status_code == 201, created.text
    device_id = created.json()["id"]
    stored = drive(rng)
    # Mostly as in the pipeline: the counters have counted everything, and the caller holds
    # the newest messages.
    cuts = sorted(rng.sample(range(1, len(stored) + 1), k=min(3, len(stored))))
    if rng.random() < 0.6:
        cuts[-1] = len(stored)
    first = rng.randrange(len(stored) + 1)
    last = len(stored) if rng.random() < 0.6 else rng.randrange(first, len(stored) + 1)
    in_hand = stored[first:last]
    asked = rng.sample([m.device_time for m in stored], k=min(10, len(stored)))
    # Odometers the caller knows from earlier answers: starting points too.
    expected = from_scratch(stored)
    positioned = [m for m in stored if m.lat is not None and m.lon is not None]
    known = [
        (m.device_time, expected[m.device_time], m.lat, m.lon)
        for m in rng.sample(positioned, k=min(rng.randrange(3), len(positioned)))
    ]

    async def work(session: AsyncSession) -> dict[tuple[str, datetime], float]:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        await messages.insert_rows(session, [messages.to_row(seq, m) for m in stored])
        device = StepDevice(device_id, seq, tenant.provider_id, None)
        for start, end in itertools.pairwise([0, *cuts]):
            await DeviceCountersStep().process(session, [DeviceMessages(device, stored[start:end])])
        return await odometers_at(session, [(device, asked, in_hand, known)])

    found = run_in_db(server.settings, work)
    return (
        {at: found.get((device_id, at)) for at in asked},
        {at: expected[at] for at in asked},
    )


def test_a_time_before_what_the_counters_counted_from_a_live_state_has_no_answer(
    server: RunningServer, tenant: Tenant
) -> None:
    """A device counted on from its live state (migration 0016): its older messages were never
    counted by the step, so their odometers are unknown, not counted from zero."""
    created = tenant.api.post("/api/devices", json=tenant.device_body())
    device_id = created.json()["id"]
    old, first, second = (
        messages.stored_form(
            Message(device_time=at, received_at=at, lat=56.9 + n / 100, lon=24.1, satellites=9)
        )
        for n, at in enumerate(START - timedelta(hours=h) for h in (5, 2, 1))
    )

    async def work(session: AsyncSession) -> dict[tuple[str, datetime], float]:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        stored = [old, first, second]
        await messages.insert_rows(session, [messages.to_row(seq, m) for m in stored])
        device = StepDevice(device_id, seq, tenant.provider_id, None)
        # The step began after `old`: from the live state, zero here.
        await DeviceCountersStep().process(session, [DeviceMessages(device, [first, second])])
        asked = [m.device_time for m in stored]
        return await odometers_at(session, [(device, asked, [], [])])

    found = run_in_db(server.settings, work)
    assert found == {
        (device_id, first.device_time): 0.0,
        (device_id, second.device_time): from_scratch([first, second])[second.device_time],
    }


def test_the_usual_round_reads_no_stored_message(
    server: RunningServer, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trips step's usual question: the odometer at the newest fix of the round, the
    counters having counted the round just before. Answered from the counters' checkpoint,
    also when messages without a position followed the fix."""
    created = tenant.api.post("/api/devices", json=tenant.device_body())
    device_id = created.json()["id"]
    hour = START.replace(minute=0, second=0)  # all within one hour
    stored = [
        messages.stored_form(
            Message(
                device_time=hour + timedelta(minutes=10, seconds=10 * n),
                received_at=START,
                lat=None if n >= 30 else 56.9 + n / 1000,
                lon=None if n >= 30 else 24.1,
                inputs=0,
            )
        )
        for n in range(33)
    ]
    in_hand = stored[-10:]

    async def store(session: AsyncSession) -> StepDevice:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        await messages.insert_rows(session, [messages.to_row(seq, m) for m in stored])
        device = StepDevice(device_id, seq, tenant.provider_id, None)
        await DeviceCountersStep().process(session, [DeviceMessages(device, stored[:-10])])
        await DeviceCountersStep().process(session, [DeviceMessages(device, in_hand)])
        return device

    device = run_in_db(server.settings, store)

    async def unread(*args: object, **kwargs: object) -> list[Message]:
        raise AssertionError("a stored message was read")

    monkeypatch.setattr(messages, "stored_since", unread)
    asked = [stored[29].device_time]  # the newest fix, followed by three without a position

    async def ask(session: AsyncSession) -> dict[tuple[str, datetime], float]:
        return await odometers_at(session, [(device, asked, in_hand, [])])

    found = run_in_db(server.settings, ask)
    expected = from_scratch(stored)
    assert found == {(device_id, at): expected[at] for at in asked}
