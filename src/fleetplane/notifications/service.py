"""What the automations fired, recorded with the deliveries of their actions.

A firing becomes one notification and, in the same transaction, one outbox row per action that
goes somewhere (a webhook, an e-mail, a device command): what commits is delivered at least
once by the delivery worker, and nothing the rule did is lost to a crash in between. The in-app
`notification` action is the notification itself, announced on the live event stream."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.bulk import write_rows
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks, rows_changed
from fleetplane.core.events import Event, EventHub
from fleetplane.core.ids import new_id
from fleetplane.core.pagination import PageParams, fetch_page
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.notifications.models import Delivery, DeliveryAttempt, Notification

# A committed notification whose rule has the in-app action (values: `announced`).
NOTIFICATION_CHANGE = "notification"
# Committed outbox rows (ids: the deliveries'): the delivery worker looks at once.
DELIVERY_CHANGE = "delivery"
# The type of the notification `POST /module/automations/{id}/test` fires.
TEST_TYPE = "test"
# The actions carried out by the delivery worker; `notification` needs no delivery.
DELIVERED_ACTIONS = frozenset({"webhook", "email", "command"})
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class Firing:
    """An automation fired on a device (or, for a test, on none)."""

    automation_id: str
    provider_id: str
    customer_id: str
    device_id: str | None
    type: str  # the trigger type
    time: datetime  # when it happened (device time)
    position: Mapping[str, Any] | None  # lat, lon, speed, course... of the message
    data: Mapping[str, Any]  # what triggered it (the speed and threshold, the geofence...)
    actions: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


async def record(session: AsyncSession, firings: Sequence[Firing]) -> list[str]:
    """Writes the firings' notifications and outbox rows (a statement per table); returns the
    notifications' ids, in the firings' order."""
    if not firings:
        return []
    now = utcnow()
    notifications: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    announced: list[dict[str, Any]] = []
    for firing in firings:
        notification: dict[str, Any] = {
            "id": new_id("ntf"),
            "provider_id": firing.provider_id,
            "customer_id": firing.customer_id,
            "automation_id": firing.automation_id,
            "device_id": firing.device_id,
            "type": firing.type,
            "time": firing.time,
            "position": dict(firing.position) if firing.position is not None else None,
            "data": dict(firing.data),
            "created_at": now,
        }
        notifications.append(notification)
        for index, action in enumerate(firing.actions):
            if action["type"] in DELIVERED_ACTIONS:
                deliveries.append(_delivery(notification, index, action, now))
            elif action["type"] == "notification":
                announced.append(notification)
    connection = await session.connection()
    await write_rows(connection, Notification.__table__, notifications)
    await write_rows(connection, Delivery.__table__, deliveries)
    if announced:
        ids = tuple(n["id"] for n in announced)
        note(session, Change(NOTIFICATION_CHANGE, ids, values=tuple(announced)))
    if deliveries:
        note(session, Change(DELIVERY_CHANGE, tuple(d["id"] for d in deliveries)))
    return [n["id"] for n in notifications]


def _delivery(
    notification: Mapping[str, Any], index: int, action: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "id": new_id("dlv"),
        "provider_id": notification["provider_id"],
        "customer_id": notification["customer_id"],
        "notification_id": notification["id"],
        "action_index": index,
        "action": dict(action),
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def fire_test(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    automation_id: str,
    actions: Sequence[Mapping[str, Any]],
) -> str:
    """Fires a sample event (type `test`) through the rule's actions, on the customer's first
    device (none if it has none); the notification's id."""
    device = await devices.first_of_customer(session, provider_id, customer_id)
    firing = Firing(
        automation_id=automation_id,
        provider_id=provider_id,
        customer_id=customer_id,
        device_id=device.id if device is not None else None,
        type=TEST_TYPE,
        time=utcnow(),
        position=None,
        data={"test": True, "detail": "A test of the automation's actions."},
        actions=tuple(actions),
    )
    return (await record(session, [firing]))[0]


# --- reading them back -----------------------------------------------------------------------


def list_query(
    provider_id: str,
    customer_id: str,
    *,
    automation_id: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's notifications (`since` inclusive, `until` exclusive, on `time`)."""
    statement = select(
        Notification.id,
        Notification.automation_id,
        Notification.device_id,
        Notification.type,
        Notification.time,
        Notification.data,
        Notification.position,
    ).where(Notification.provider_id == provider_id, Notification.customer_id == customer_id)
    if automation_id is not None:
        statement = statement.where(Notification.automation_id == automation_id)
    if device_id is not None:
        statement = statement.where(Notification.device_id == device_id)
    if since is not None:
        statement = statement.where(Notification.time >= since)
    if until is not None:
        statement = statement.where(Notification.time < until)
    return statement


async def list_page(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    statement: Select[*tuple[Any, ...]],
    page: PageParams,
) -> dict[str, Any]:
    """One page of `list_query`'s notifications, shaped: `items` and `next_cursor`."""
    rows, next_cursor = await fetch_page(session, statement, Notification.id, page)
    items = await shape_notifications(session, provider_id, customer_id, rows)
    return {"items": items, "next_cursor": next_cursor}


async def shape_notifications(
    session: AsyncSession, provider_id: str, customer_id: str, rows: Sequence[Row[Any]]
) -> list[dict[str, Any]]:
    """The page's notifications, each with its deliveries' attempts (two queries a page)."""
    owned = (Delivery.provider_id == provider_id, Delivery.customer_id == customer_id)
    deliveries: dict[str, list[Delivery]] = {}
    for chunk in id_chunks([row.id for row in rows]):
        statement = (
            select(Delivery)
            .where(*owned, Delivery.notification_id.in_(chunk))
            .order_by(Delivery.notification_id, Delivery.action_index)
        )
        for delivery in (await session.execute(statement)).scalars():
            deliveries.setdefault(delivery.notification_id, []).append(delivery)
    attempts: dict[str, list[DeliveryAttempt]] = {}
    delivery_ids = [d.id for found in deliveries.values() for d in found]
    for chunk in id_chunks(delivery_ids):
        attempts_query = (
            select(DeliveryAttempt)
            .where(
                DeliveryAttempt.provider_id == provider_id,
                DeliveryAttempt.customer_id == customer_id,
                DeliveryAttempt.delivery_id.in_(chunk),
            )
            .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt)
        )
        for attempt in (await session.execute(attempts_query)).scalars():
            attempts.setdefault(attempt.delivery_id, []).append(attempt)
    items = []
    for row in rows:
        log: list[dict[str, Any]] = []
        for delivery in deliveries.get(row.id, ()):
            log += _attempt_log(delivery, attempts.get(delivery.id, ()))
        items.append({**row._asdict(), "deliveries": log})
    return items


def _attempt_log(delivery: Delivery, attempts: Sequence[DeliveryAttempt]) -> list[dict[str, Any]]:
    """A delivery's attempts, and the next one while it is pending."""
    common = {
        "delivery_id": delivery.id,
        "action": delivery.action["type"],
        "delivery_status": delivery.status,
    }
    log = [
        {
            **common,
            "attempt": attempt.attempt,
            "status": attempt.status,
            "status_code": attempt.status_code,
            "latency_ms": attempt.latency_ms,
            "at": attempt.at,
            "error": attempt.error,
        }
        for attempt in attempts
    ]
    if delivery.status == PENDING:
        log.append(
            {
                **common,
                "attempt": delivery.attempts + 1,
                "status": PENDING,
                "status_code": None,
                "latency_ms": None,
                "at": delivery.next_attempt_at,
                "error": None,
            }
        )
    return log


# --- live ----------------------------------------------------------------------------------


def announce(events: EventHub, change: Change) -> None:
    """Tells the live event streams of committed notifications whose rule has the in-app
    action (a `notification` notice), as `notification` events to the customer's streams."""
    if not events.subscribers:
        return
    for values in change.values:
        events.publish(notification_event(values), (values["provider_id"], values["customer_id"]))


def notification_event(values: Mapping[str, Any]) -> Event:
    """`{"type": "notification", "device_id", "notification": {...}}`: the notification as
    the list shows it, without its deliveries."""
    shown = ("id", "automation_id", "device_id", "type", "time", "data", "position")
    return {
        "type": "notification",
        "device_id": values["device_id"],
        "notification": {name: values[name] for name in shown},
    }


async def purge_before(
    session: AsyncSession, customer_id: str, _: Sequence[str], cutoff: datetime, limit: int
) -> int:
    """Retention (`messages.retention.Purge`): deletes up to `limit` of the customer's
    notifications from before `cutoff`, with their deliveries and attempts (foreign keys);
    how many."""
    oldest = (
        select(Notification.id)
        .where(Notification.customer_id == customer_id, Notification.time < cutoff)
        .limit(limit)
    )
    return await rows_changed(session, delete(Notification).where(Notification.id.in_(oldest)))
