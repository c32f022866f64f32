"""Assignment periods: when a device belonged to which customer, and so which part of its
history each customer sees."""

import asyncio
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db
from fleetplane import bootstrap
from fleetplane.audit.service import Actor
from fleetplane.config import Settings
from fleetplane.core.db import (
    create_system_engine,
    migrate,
    run_platform_work,
    session_factory,
    system_session,
)
from fleetplane.devices import service as devices
from fleetplane.devices.models import DeviceAssignment
from fleetplane.devices.schemas import DeviceUpdate
from messages.test_compact_migration import run_alembic

T0 = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)


def periods(server: RunningServer, device_id: str) -> list[tuple[str, bool]]:
    """(customer, still open) of each of the device's periods, oldest first."""

    async def read(session: AsyncSession) -> list[tuple[str, bool]]:
        statement = (
            select(DeviceAssignment)
            .where(DeviceAssignment.device_id == device_id)
            .order_by(DeviceAssignment.started_at)
        )
        rows = (await session.execute(statement)).scalars()
        return [(row.customer_id, row.ended_at is None) for row in rows]

    return run_in_db(server.settings, read)


def test_assigning_moving_and_releasing_a_device_keep_its_periods(
    server: RunningServer, tenant: Tenant
) -> None:
    first, second = (c["id"] for c in tenant.customers)
    device = tenant.api.post("/api/devices", json=tenant.device_body()).json()["id"]
    assert periods(server, device) == []

    def assign(customer_id: str | None) -> None:
        response = tenant.api.patch(f"/api/devices/{device}", json={"customer_id": customer_id})
        assert response.status_code == 200, response.text

    assign(first)
    assert periods(server, device) == [(first, True)]
    assign(first)  # no change, no new period
    tenant.api.patch(f"/api/devices/{device}", json={"name": "Renamed"})
    assert periods(server, device) == [(first, True)]
    assign(second)
    assert periods(server, device) == [(first, False), (second, True)]
    assign(None)
    assert periods(server, device) == [(first, False), (second, False)]

    short_lived = tenant.api.post("/api/customers", json={"name": "Leaving"}).json()["id"]
    assign(short_lived)
    assert tenant.api.delete(f"/api/customers/{short_lived}").status_code == 204
    assert periods(server, device)[-1] == (short_lived, False)


async def _move_at_once(
    base_url: str, secret: str, device_id: str, customers: list[str]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(customers))
    headers = {"x-platform-api-key": secret}
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers=headers
    ) as client:
        return await asyncio.gather(
            *(
                client.patch(f"/api/devices/{device_id}", json={"customer_id": customer_id})
                for customer_id in customers
            )
        )


def test_concurrent_moves_of_a_device_each_end_the_period_before(
    server: RunningServer, tenant: Tenant
) -> None:
    first, second = (c["id"] for c in tenant.customers)
    device = tenant.api.post("/api/devices", json=tenant.device_body()).json()["id"]
    moves = [first, second] * 6
    answers = asyncio.run(_move_at_once(server.base_url, tenant.api.key, device, moves))
    assert [answer.status_code for answer in answers] == [200] * len(moves), [
        answer.text for answer in answers if answer.status_code != 200
    ]
    kept = periods(server, device)
    now = tenant.api.get(f"/api/devices/{device}").json()["customer_id"]
    assert [customer for customer, still_open in kept if still_open] == [now]
    assert all(a != b for (a, _), (b, _) in itertools.pairwise(kept))


def test_a_move_reads_and_locks_the_device_and_its_periods_by_provider(
    server: RunningServer, tenant: Tenant
) -> None:
    """The tenancy filter is in the code itself, not left to row-level security: every
    statement of a move that reads or locks the device or its periods names the provider."""
    first, second = (c["id"] for c in tenant.customers)
    device = tenant.api.post("/api/devices", json=tenant.device_body()).json()["id"]
    statements: list[str] = []

    async def move_twice() -> None:
        engine = create_system_engine(server.settings)
        sa.event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            lambda _conn, _cursor, sql, *_: statements.append(" ".join(sql.split())),
        )
        actor = Actor(provider_id=tenant.provider_id)
        try:
            for customer_id in (first, second):
                async with system_session(session_factory(engine)) as session:
                    change = DeviceUpdate(customer_id=customer_id)
                    await devices.update(session, actor, device, change)
        finally:
            await engine.dispose()

    asyncio.run(move_twice())
    reads = [
        sql
        for sql in statements
        if sql.startswith("SELECT") and re.search(r"FROM (devices|device_assignments)\b", sql)
    ]
    assert reads, statements
    unfiltered = [sql for sql in reads if "provider_id = " not in sql.partition(" WHERE ")[2]]
    assert unfiltered == []


def test_a_customer_getting_a_device_back_sees_only_its_current_period(
    tenant: Tenant,
) -> None:
    first, second = (c["id"] for c in tenant.customers)
    device = tenant.devices[first][0]["id"]
    path = f"/module/devices/{device}/commands"
    api = tenant.module_api(0)
    assert api.post(path, json={"type": "driver_message", "text": "first period"}).is_success
    for customer_id in (second, first):
        response = tenant.api.patch(f"/api/devices/{device}", json={"customer_id": customer_id})
        assert response.status_code == 200, response.text
    assert api.get(path).json()["items"] == []
    assert api.post(path, json={"type": "driver_message", "text": "second period"}).is_success
    assert [c["text"] for c in api.get(path).json()["items"]] == ["second period"]


def test_the_migration_opens_a_period_for_every_assigned_device(empty_database_url: str) -> None:
    url = empty_database_url
    run_alembic(url, "upgrade", "0012")
    settings = Settings(database_url=url)

    async def seed(session: AsyncSession) -> None:
        provider = (await bootstrap.create_provider(session, "Old fleet")).provider_id
        for customer in ("cus_old_a", "cus_old_b"):
            await session.execute(
                sa.text(
                    "INSERT INTO customers (id, provider_id, name, status, modules, timezone,"
                    " retention_days, created_at, updated_at)"
                    " VALUES (:id, :p, 'c', 'active', '[]', 'UTC', 365, :t, :t)"
                ),
                {"id": customer, "p": provider, "t": T0},
            )
        for device, customer in (
            ("dev_moved", "cus_old_a"),
            ("dev_assigned_at_creation", "cus_old_b"),
            ("dev_unassigned", None),
        ):
            await session.execute(
                sa.text(
                    "INSERT INTO devices (id, provider_id, customer_id, unique_id, name,"
                    " created_at, updated_at) VALUES (:id, :p, :c, :id, 'van', :t, :t)"
                ),
                {"id": device, "p": provider, "c": customer, "t": T0},
            )
        for action, hours in (("device.assign", 1), ("device.move", 2), ("device.update", 3)):
            await session.execute(
                sa.text(
                    "INSERT INTO audit_log (id, provider_id, actor, action, object_type,"
                    " object_id, changes, at) VALUES (:id, :p, 'key', :a, 'device',"
                    " 'dev_moved', '{}', :t)"
                ),
                {
                    "id": f"aud_{hours}",
                    "p": provider,
                    "a": action,
                    "t": T0 + timedelta(hours=hours),
                },
            )

    asyncio.run(run_platform_work(settings, seed))
    asyncio.run(migrate(settings))

    async def read(session: AsyncSession) -> dict[str, Any]:
        rows = (await session.execute(select(DeviceAssignment))).scalars()
        return {
            row.device_id: (row.customer_id, row.started_at, row.ended_at, row.history_from)
            for row in rows
        }

    moved_at = T0 + timedelta(hours=2)
    assert asyncio.run(run_platform_work(settings, read)) == {
        # another customer had it before: its history shows from the move on
        "dev_moved": ("cus_old_a", moved_at, None, moved_at),
        # its first customer: all of its history shows
        "dev_assigned_at_creation": ("cus_old_b", T0, None, None),
    }
    run_alembic(url, "downgrade", "0012")
    run_alembic(url, "upgrade", "head")
