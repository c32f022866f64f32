"""The pipeline's cache of validity rules: when it reads again.

The cache reads the real database. Whether it read again shows in what it answers: the
rules are changed in the database behind its back, so kept rules are the old ones and rules
read again are the new ones."""

import asyncio
import contextlib

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db
from fleetplane.audit.service import Actor
from fleetplane.core.changes import ChangeHub
from fleetplane.core.db import create_system_engine, session_factory, system_session
from fleetplane.devices import service as devices
from fleetplane.devices.processor import DeviceRules, DeviceRulesCache
from fleetplane.devices.schemas import DeviceUpdate


def device_ids(tenant: Tenant, count: int) -> list[str]:
    created = [tenant.api.post("/api/devices", json=tenant.device_body()) for _ in range(count)]
    assert all(response.status_code == 201 for response in created)
    return [response.json()["id"] for response in created]


def set_min_satellites(tenant: Tenant, value: int, *device_ids: str) -> None:
    for device_id in device_ids:
        body = {"validity": {"min_satellites": value}}
        response = tenant.api.patch(f"/api/devices/{device_id}", json=body)
        assert response.status_code == 200, response.text


def read(server: RunningServer, cache: DeviceRulesCache, ids: list[str]) -> dict[str, int | None]:
    """Each device's `min_satellites` as the cache answers it, read in a pipeline session."""

    async def rules(session: AsyncSession) -> dict[str, DeviceRules]:
        return await cache.rules_of(session, ids)

    found = run_in_db(server.settings, rules)
    return {device_id: found[device_id].validity.min_satellites for device_id in ids}


def test_rules_are_read_once_per_device(server: RunningServer, tenant: Tenant) -> None:
    a, b, c = device_ids(tenant, 3)
    set_min_satellites(tenant, 4, a, b, c)
    cache = DeviceRulesCache(ttl_seconds=600)
    assert read(server, cache, [a, b]) == {a: 4, b: 4}
    set_min_satellites(tenant, 7, a, b, c)
    assert read(server, cache, [a, b, c]) == {a: 4, b: 4, c: 7}


def test_forgotten_and_expired_rules_are_read_again(server: RunningServer, tenant: Tenant) -> None:
    a, b = device_ids(tenant, 2)
    set_min_satellites(tenant, 4, a, b)
    cache = DeviceRulesCache(ttl_seconds=600)
    read(server, cache, [a, b])
    set_min_satellites(tenant, 7, a, b)
    cache.forget(a)
    assert read(server, cache, [a, b]) == {a: 7, b: 4}

    expiring = DeviceRulesCache(ttl_seconds=0)
    assert read(server, expiring, [a]) == {a: 7}
    set_min_satellites(tenant, 9, a)
    assert read(server, expiring, [a]) == {a: 9}


def test_rules_read_while_a_change_is_forgotten_are_not_kept(
    server: RunningServer, tenant: Tenant
) -> None:
    """The read may have seen the rules from before the change: used once, never kept."""
    [a] = device_ids(tenant, 1)
    set_min_satellites(tenant, 4, a)
    cache = DeviceRulesCache(ttl_seconds=600)

    async def read_while_forgotten(session: AsyncSession) -> dict[str, DeviceRules]:
        # The change is forgotten while the cache's query runs.
        event.listen(session.sync_session, "do_orm_execute", lambda _: cache.forget(a), once=True)
        return await cache.rules_of(session, [a])

    found = run_in_db(server.settings, read_while_forgotten)
    assert found[a].validity.min_satellites == 4
    set_min_satellites(tenant, 7, a)
    assert read(server, cache, [a]) == {a: 7}


def test_a_change_is_forgotten_when_it_commits(server: RunningServer, tenant: Tenant) -> None:
    """The service raises the device's change notice; the cache, subscribed to the hub of its
    sessions, forgets the device's rules once the change commits, not when it rolls back."""
    [a] = device_ids(tenant, 1)
    set_min_satellites(tenant, 4, a)
    changes = ChangeHub()
    cache = DeviceRulesCache(ttl_seconds=600, changes=changes)
    actor = Actor(tenant.provider_id, system="test")

    def new_rules(value: int) -> DeviceUpdate:
        return DeviceUpdate.model_validate({"validity": {"min_satellites": value}})

    async def scenario() -> list[int | None]:
        engine = create_system_engine(server.settings)
        sessions = session_factory(engine, changes)
        seen: list[int | None] = []

        async def look() -> None:
            async with system_session(sessions) as session:
                seen.append((await cache.rules_of(session, [a]))[a].validity.min_satellites)

        try:
            await look()
            async with system_session(sessions) as session:  # a change made as a service call
                await devices.update(session, actor, a, new_rules(7))
                await look()  # not yet committed: still the kept rules
            await look()
            with contextlib.suppress(RuntimeError):
                async with system_session(sessions) as session:
                    await devices.update(session, actor, a, new_rules(9))
                    raise RuntimeError("the change fails")
            set_min_satellites(tenant, 11, a)  # through another hub: behind the cache's back
            await look()  # nothing was forgotten: the kept rules
        finally:
            await engine.dispose()
        return seen

    assert asyncio.run(scenario()) == [4, 4, 7, 7]
