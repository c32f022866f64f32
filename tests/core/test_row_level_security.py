"""PostgreSQL row-level security: the second wall behind the application's own filters.

These queries deliberately leave out every tenant filter, as a bug would."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db
from fleetplane.core.db import create_engine, session_factory, set_tenant_scope
from fleetplane.devices import service as devices
from fleetplane.ingest.message import Message
from fleetplane.messages import service as messages


@pytest.fixture(autouse=True)
def _postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only; this is the SQLite run")


def in_session(server: RunningServer, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        engine = create_engine(server.settings)
        try:
            async with session_factory(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def device_ids(server: RunningServer, **scope: Any) -> set[str]:
    async def work(session: AsyncSession) -> set[str]:
        await set_tenant_scope(session, **scope)
        return set((await session.execute(text("SELECT id FROM devices"))).scalars())

    return in_session(server, work)


def all_device_ids(tenant: Tenant) -> set[str]:
    return {d["id"] for devices in tenant.devices.values() for d in devices}


def test_the_app_runs_as_a_role_that_cannot_bypass_rls(server: RunningServer) -> None:
    async def work(session: AsyncSession) -> tuple[str, bool, bool]:
        row = (
            await session.execute(
                text(
                    "SELECT current_user, rolbypassrls, rolsuper FROM pg_roles"
                    " WHERE rolname = current_user"
                )
            )
        ).one()
        return row[0], row[1], row[2]

    assert in_session(server, work) == ("fleetplane_app", False, False)


def test_without_a_scope_nothing_is_visible(server: RunningServer, tenant: Tenant) -> None:
    assert device_ids(server) == set()


def test_a_provider_scope_sees_only_its_rows(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    seen = device_ids(server, provider_id=tenant.provider_id)
    assert all_device_ids(tenant) <= seen
    assert not seen & all_device_ids(other_tenant)


def test_a_customer_scope_sees_only_that_customers_rows(
    server: RunningServer, tenant: Tenant
) -> None:
    customer = tenant.customers[0]["id"]
    seen = device_ids(server, provider_id=tenant.provider_id, customer_id=customer)
    assert seen == {d["id"] for d in tenant.devices[customer]}


def test_writing_another_providers_rows_is_refused(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    async def work(session: AsyncSession) -> None:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        await session.execute(
            text(
                "INSERT INTO devices (id, provider_id, unique_id, name, created_at, updated_at)"
                " VALUES ('dev_intruder', :p, 'X', 'x', now(), now())"
            ),
            {"p": other_tenant.provider_id},
        )

    with pytest.raises(DBAPIError, match="row-level security"):
        in_session(server, work)


def test_messages_are_visible_only_with_their_device(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    own = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    foreign = other_tenant.devices[other_tenant.customers[0]["id"]][0]["id"]
    moment = datetime(2024, 5, 1, tzinfo=UTC)

    async def store(session: AsyncSession) -> None:
        seqs = await devices.seqs_of(session, [own, foreign])
        message = Message(device_time=moment, received_at=moment, lat=1.0, lon=2.0)
        await messages.insert_rows(session, [messages.to_row(seqs[own], message)])
        await messages.insert_rows(session, [messages.to_row(seqs[foreign], message)])

    run_in_db(server.settings, store)

    def visible(**scope: Any) -> set[str]:
        async def work(session: AsyncSession) -> set[str]:
            await set_tenant_scope(session, **scope)
            rows = await session.execute(
                text("SELECT d.id FROM messages m JOIN devices d ON d.seq = m.device_seq")
            )
            return set(rows.scalars())

        return in_session(server, work)

    assert visible() == set()
    assert visible(provider_id=tenant.provider_id) == {own}
    assert visible(provider_id=other_tenant.provider_id) == {foreign}
    other_customer = tenant.customers[1]["id"]
    assert visible(provider_id=tenant.provider_id, customer_id=other_customer) == set()


def test_writing_messages_of_another_providers_device_is_refused(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    foreign = other_tenant.devices[other_tenant.customers[0]["id"]][0]["id"]

    seq = run_in_db(server.settings, lambda s: devices.seqs_of(s, [foreign]))[foreign]

    async def work(session: AsyncSession) -> None:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        moment = datetime(2024, 5, 1, tzinfo=UTC)
        row = messages.to_row(seq, Message(device_time=moment, received_at=moment))
        await messages.insert_rows(session, [row])

    with pytest.raises(DBAPIError, match="row-level security"):
        in_session(server, work)
