"""Change notices reach their subscribers once the transaction that raised them commits, and
never when it, or the savepoint they were raised in, rolls back."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fleetplane.core.changes import Change, ChangeHub, note
from fleetplane.core.db import session_factory


def _change(name: str) -> Change:
    return Change("thing", (name,), "prv_1", ())


def test_delivered_after_the_commit_and_dropped_on_rollback(tmp_path: Path) -> None:
    delivered: list[str] = []

    async def main() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'notices.db'}")
        hub = ChangeHub()
        hub.subscribe(["thing"], lambda change: delivered.extend(change.ids))
        hub.subscribe(["other"], lambda change: delivered.append("other kind"))
        sessions = session_factory(engine, hub)
        try:
            async with sessions() as session, session.begin():
                await session.execute(text("SELECT 1"))
                note(session, _change("committed"))
                async with session.begin_nested():
                    note(session, _change("savepoint kept"))
                assert delivered == []  # a released savepoint is not a commit
                with pytest.raises(RuntimeError):
                    async with session.begin_nested():
                        note(session, _change("savepoint undone"))
                        raise RuntimeError("undo the savepoint")
                assert delivered == []
            assert delivered == ["committed", "savepoint kept"]

            with pytest.raises(RuntimeError):
                async with sessions() as session, session.begin():
                    note(session, _change("rolled back"))
                    raise RuntimeError("undo it all")
            async with sessions() as session:  # closed without a commit
                await session.execute(text("SELECT 1"))
                note(session, _change("never committed"))
            await session.commit()  # the same session, in a new transaction
            async with sessions() as session, session.begin():
                note(session, _change("next"))
            assert delivered == ["committed", "savepoint kept", "next"]
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_failing_subscriber_does_not_keep_the_notice_from_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[str] = []

    def fail(change: Change) -> None:
        raise ValueError("a broken cache")

    async def main() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'notices.db'}")
        hub = ChangeHub()
        hub.subscribe(["thing"], fail)
        stop = hub.subscribe(["thing"], lambda change: delivered.extend(change.ids))
        try:
            async with session_factory(engine, hub)() as session, session.begin():
                note(session, _change("one"))
            stop()
            async with session_factory(engine, hub)() as session, session.begin():
                note(session, _change("two"))
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert delivered == ["one"]
    assert "a subscriber failed on a thing change" in caplog.text
