"""Turns on SQLite's one writer lock (`core.db.writer_session`): the intake (urgent) goes
before other writers waiting, and another writer holds the turn only from its first write to
its commit, so its reads and work before it never hold up the intake."""

import asyncio
from pathlib import Path

import sqlalchemy as sa

from fleetplane.core.db import WriterTurns, session_factory, writer_session
from fleetplane.core.db import _engine as engine_for

TABLE = sa.Table("turn_test", sa.MetaData(), sa.Column("n", sa.Integer))


def test_urgent_writers_go_before_the_others_waiting_and_each_kind_in_order() -> None:
    async def scenario() -> list[str]:
        turns = WriterTurns()
        order: list[str] = []

        async def writer(name: str, urgent: bool) -> None:
            await turns.take(urgent=urgent)
            order.append(name)
            await asyncio.sleep(0)
            turns.give_back()

        await turns.take(urgent=False)  # held while the others line up
        waiting = [
            asyncio.create_task(writer("step 1", False)),
            asyncio.create_task(writer("intake 1", True)),
            asyncio.create_task(writer("step 2", False)),
            asyncio.create_task(writer("intake 2", True)),
        ]
        await asyncio.sleep(0.01)
        turns.give_back()
        await asyncio.gather(*waiting)
        return order

    assert asyncio.run(scenario()) == ["intake 1", "intake 2", "step 1", "step 2"]


def test_a_writer_cancelled_while_waiting_leaves_the_turn_to_the_next() -> None:
    async def scenario() -> bool:
        turns = WriterTurns()
        await turns.take(urgent=True)
        cancelled = asyncio.create_task(turns.take(urgent=False))
        after = asyncio.create_task(turns.take(urgent=False))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        turns.give_back()
        await asyncio.wait_for(after, 1)
        turns.give_back()
        await asyncio.wait_for(turns.take(urgent=True), 1)  # free again
        return cancelled.cancelled()

    assert asyncio.run(scenario())


def test_a_writer_takes_its_turn_at_its_first_write_not_before(tmp_path: Path) -> None:
    """While a step reads and computes, the intake writes; the step's first write waits for the
    intake's commit, and an intake arriving while the step writes waits for the step's."""

    async def scenario() -> list[str]:
        engine = engine_for(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}", None, 1)
        sessions = session_factory(engine)
        async with engine.begin() as connection:
            await connection.run_sync(TABLE.metadata.create_all)
        order: list[str] = []
        reading, step_wrote = asyncio.Event(), asyncio.Event()
        intake_in, intake_may_commit = asyncio.Event(), asyncio.Event()

        async def step() -> None:
            async with writer_session(sessions) as session:
                await session.execute(sa.select(TABLE))  # a read: no turn needed
                reading.set()
                await asyncio.wait_for(intake_in.wait(), 5)  # the intake writes meanwhile
                order.append("step writes")
                await session.execute(TABLE.insert().values(n=1))  # waits for the intake
                order.append("step wrote")
                step_wrote.set()
                await asyncio.sleep(0.05)
            order.append("step committed")

        async def intake(label: str) -> None:
            async with writer_session(sessions, urgent=True) as session:
                order.append(f"{label} in")
                intake_in.set()
                await session.execute(TABLE.insert().values(n=2))
                if label == "intake 1":
                    await intake_may_commit.wait()
            order.append(f"{label} committed")

        try:
            stepping = asyncio.create_task(step())
            await reading.wait()
            first = asyncio.create_task(intake("intake 1"))
            await asyncio.sleep(0.05)  # the step is at its first write, waiting for the turn
            intake_may_commit.set()
            await asyncio.wait_for(first, 5)
            await asyncio.wait_for(step_wrote.wait(), 5)
            await intake("intake 2")  # arrives while the step holds the turn
            await asyncio.wait_for(stepping, 5)
        finally:
            await engine.dispose()
        return order

    assert asyncio.run(scenario()) == [
        "intake 1 in",
        "step writes",
        "intake 1 committed",
        "step wrote",
        "step committed",
        "intake 2 in",
        "intake 2 committed",
    ]
