"""Messages older than the customer's retention are purged; newer ones and others stay."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

from conftest import RunningServer, Tenant
from fleetplane.core.db import create_system_engine, run_platform_work, session_factory
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.messages import retention
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message


def store(server: RunningServer, device_id: str, ages_in_days: list[int]) -> None:
    now = utcnow().replace(microsecond=0)
    times = [now - timedelta(days=age) for age in ages_in_days]

    async def insert(session: Any) -> None:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        rows = [messages.to_row(seq, Message(device_time=t, received_at=now)) for t in times]
        await messages.insert_rows(session, rows)

    asyncio.run(run_platform_work(server.settings, insert))


def purge(server: RunningServer, default_days: int) -> int:
    async def run() -> int:
        engine = create_system_engine(server.settings)
        try:
            return await retention.purge_once(session_factory(engine), default_days)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def ages(tenant: Tenant, index: int, device_id: str) -> list[int]:
    items = tenant.module_api(index).get(f"/module/devices/{device_id}/messages").json()["items"]
    now = utcnow()
    times = [datetime.fromisoformat(item["time"]) for item in items]
    return sorted(round((now - time).total_seconds() / 86400) for time in times)


def test_each_customer_keeps_its_own_retention(server: RunningServer, tenant: Tenant) -> None:
    short, long = tenant.customers
    tenant.api.patch(f"/api/customers/{short['id']}", json={"retention_days": 30})
    tenant.api.patch(f"/api/customers/{long['id']}", json={"retention_days": 400})
    short_device = tenant.devices[short["id"]][0]["id"]
    long_device = tenant.devices[long["id"]][0]["id"]
    store(server, short_device, [1, 29, 31, 90, 500])
    store(server, long_device, [1, 29, 31, 90, 500])
    assert purge(server, default_days=365) >= 4
    assert ages(tenant, 0, short_device) == [1, 29]
    assert ages(tenant, 1, long_device) == [1, 29, 31, 90]
