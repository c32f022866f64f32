"""The pipeline's cache of validity rules and ignition sensors: when it reads again."""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fleetplane.core.changes import Change, ChangeHub, note
from fleetplane.core.db import session_factory
from fleetplane.devices import processor
from fleetplane.devices.processor import DeviceRules, DeviceRulesCache
from fleetplane.devices.service import DEVICE_CHANGE
from fleetplane.devices.validity import ValidityRules


class CountingLoader:
    """Stands in for the database: each device's rules carry the number of the read."""

    def __init__(self) -> None:
        self.reads: list[list[str]] = []
        self.during_read: Any = None

    async def __call__(self, session: Any, device_ids: list[str]) -> dict[str, DeviceRules]:
        self.reads.append(list(device_ids))
        if self.during_read is not None:
            self.during_read()
        rules = ValidityRules(min_satellites=len(self.reads))
        return {device_id: DeviceRules(rules) for device_id in device_ids}


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> CountingLoader:
    counting = CountingLoader()
    monkeypatch.setattr(processor, "_load_rules", counting)
    return counting


async def test_rules_are_read_once_per_device(loader: CountingLoader) -> None:
    cache = DeviceRulesCache(ttl_seconds=600)
    await cache.rules_of(None, ["a", "b"])  # type: ignore[arg-type]
    found = await cache.rules_of(None, ["a", "b", "c"])  # type: ignore[arg-type]
    assert loader.reads == [["a", "b"], ["c"]]
    assert found["a"].validity.min_satellites == 1
    assert found["c"].validity.min_satellites == 2


async def test_forgotten_and_expired_rules_are_read_again(loader: CountingLoader) -> None:
    cache = DeviceRulesCache(ttl_seconds=600)
    await cache.rules_of(None, ["a", "b"])  # type: ignore[arg-type]
    cache.forget("a")
    await cache.rules_of(None, ["a", "b"])  # type: ignore[arg-type]
    assert loader.reads == [["a", "b"], ["a"]]
    expiring = DeviceRulesCache(ttl_seconds=0)
    await expiring.rules_of(None, ["a"])  # type: ignore[arg-type]
    await expiring.rules_of(None, ["a"])  # type: ignore[arg-type]
    assert len(loader.reads) == 4


async def test_rules_read_while_a_change_is_forgotten_are_not_kept(
    loader: CountingLoader,
) -> None:
    """The read may have seen the rules from before the change: used once, never kept."""
    cache = DeviceRulesCache(ttl_seconds=600)
    loader.during_read = lambda: cache.forget("a")
    await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
    loader.during_read = None
    await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
    await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
    assert loader.reads == [["a"], ["a"]]


async def test_a_change_is_forgotten_when_it_commits(
    loader: CountingLoader, tmp_path: Path
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    changes = ChangeHub()
    sessions = session_factory(engine, changes)
    cache = DeviceRulesCache(ttl_seconds=600, changes=changes)
    validity_changed = Change(DEVICE_CHANGE, ("a",), "prv_1", (), device_ids=("a",))
    try:
        await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
        session: AsyncSession
        async with sessions() as session:
            async with session.begin():
                note(session, validity_changed)
                await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
                assert len(loader.reads) == 1  # not yet committed: still the kept rules
            await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
            assert len(loader.reads) == 2
        async with sessions() as session:
            with pytest.raises(RuntimeError):
                async with session.begin():
                    note(session, validity_changed)
                    raise RuntimeError("the change fails")
        await cache.rules_of(None, ["a"])  # type: ignore[arg-type]
        assert len(loader.reads) == 2  # nothing changed: nothing forgotten
    finally:
        await engine.dispose()
