"""What the domains derive from messages goes by the customer's retention too: old
notifications (with their deliveries) and visits that ended before the cutoff are purged; newer
ones, open visits and another customer's stay."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from conftest import RunningServer, Tenant, run_in_db
from fleetplane import registry
from fleetplane.core.db import create_system_engine, run_platform_work, session_factory
from fleetplane.core.ids import new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.geofences.models import GeofenceVisit
from fleetplane.messages import retention
from fleetplane.notifications import service as notifications
from fleetplane.notifications.models import Delivery
from operations import store_automation

NOW = utcnow().replace(microsecond=0)


def days_ago(days: float) -> Any:
    return NOW - timedelta(days=days)


def test_notifications_and_visits_follow_the_customers_retention(
    server: RunningServer, tenant: Tenant
) -> None:
    short, long = tenant.customers
    tenant.api.patch(f"/api/customers/{short['id']}", json={"retention_days": 30})
    tenant.api.patch(f"/api/customers/{long['id']}", json={"retention_days": 400})
    for customer in (short, long):
        index = tenant.customers.index(customer)
        automation_id = store_automation(tenant, [], customer_index=index)
        device_id = tenant.devices[customer["id"]][0]["id"]
        _notify(server, tenant, customer["id"], automation_id, device_id, [1, 29, 31, 90])
        fence = tenant.module_api(index).post(
            "/module/geofences",
            json={"name": "Yard", "geometry": {"type": "Point", "coordinates": [24.1, 56.9]},
                  "radius_m": 100},
        )  # fmt: skip
        assert fence.status_code == 201, fence.text
        # (entered, left) days ago; None: still inside.
        _visits(server, tenant, customer["id"], device_id, fence.json()["id"],
                [(2, 1), (40, 35), (95, 90), (50, None)])  # fmt: skip
    deliveries_before = _count_deliveries(server)

    assert _purge(server) >= 4

    short_api, long_api = tenant.module_api(0), tenant.module_api(1)
    assert _notified_ages(short_api) == [1, 29]
    assert _notified_ages(long_api) == [1, 29, 31, 90]
    assert _visit_spans(short_api) == [(2, 1), (50, None)]
    assert _visit_spans(long_api) == [(2, 1), (40, 35), (50, None), (95, 90)]
    assert _count_deliveries(server) == deliveries_before - 2  # the two purged ones' webhooks


def _notify(
    server: RunningServer,
    tenant: Tenant,
    customer_id: str,
    automation_id: str,
    device_id: str,
    ages: list[int],
) -> None:
    firings = [
        notifications.Firing(
            automation_id=automation_id, provider_id=tenant.provider_id,
            customer_id=customer_id, device_id=device_id, type="speeding",
            time=days_ago(age), position=None, data={"age": age},
            actions=[{"type": "webhook", "url": "ftp://hooks.example/x"}] if age in (31, 90)
            else [],
        )
        for age in ages
    ]  # fmt: skip

    async def record(session: Any) -> None:
        await notifications.record(session, firings)

    asyncio.run(run_platform_work(server.settings, record))


def _visits(
    server: RunningServer,
    tenant: Tenant,
    customer_id: str,
    device_id: str,
    geofence_id: str,
    spans: list[tuple[int, int | None]],
) -> None:
    async def insert(session: Any) -> None:
        for entered, left in spans:
            exit_time = None if left is None else days_ago(left)
            session.add(
                GeofenceVisit(
                    id=new_id("vis"), provider_id=tenant.provider_id, customer_id=customer_id,
                    device_id=device_id, geofence_id=geofence_id, enter_time=days_ago(entered),
                    exit_time=exit_time, duration_s=0.0, distance_m=0.0, enter_lat=56.9,
                    enter_lon=24.1, exit_lat=None, exit_lon=None,
                    last_time=exit_time or days_ago(entered), last_lat=56.9, last_lon=24.1,
                    counted=True,
                )
            )  # fmt: skip

    asyncio.run(run_platform_work(server.settings, insert))


def _purge(server: RunningServer) -> int:
    async def run() -> int:
        engine = create_system_engine(server.settings)
        try:
            sessions = session_factory(engine)
            return await retention.purge_once(sessions, 365, derived=registry.RETENTION)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _count_deliveries(server: RunningServer) -> int:
    async def count(session: Any) -> int:
        return int((await session.execute(select(func.count()).select_from(Delivery))).scalar())

    return run_in_db(server.settings, count)


def _notified_ages(api: Any) -> list[int]:
    items = api.get("/module/automations/notifications", params={"limit": 1000}).json()["items"]
    return sorted(i["data"]["age"] for i in items if "age" in i["data"])


def _visit_spans(api: Any) -> list[tuple[int, int | None]]:
    items = api.get("/module/geofences/visits", params={"limit": 1000}).json()["items"]
    spans = []
    for item in items:
        entered = round((NOW - datetime.fromisoformat(item["enter"])).total_seconds() / 86400)
        left = None
        if item["exit"] is not None:
            left = round((NOW - datetime.fromisoformat(item["exit"])).total_seconds() / 86400)
        spans.append((entered, left))
    return sorted(spans, key=lambda span: span[0])
