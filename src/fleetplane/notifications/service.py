"""What the automations fired, recorded with the deliveries of their actions.

A firing becomes one notification and, in the same transaction, one outbox row per action that
goes somewhere (a webhook, an e-mail, a device command): what commits is delivered at least
once by the delivery worker, and nothing the rule did is lost to a crash in between. The in-app
`notification` action is the notification itself, announced on the live event stream."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.bulk import write_rows
from fleetplane.core.changes import Change, note
from fleetplane.core.ids import new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.notifications.models import Delivery, Notification

# A committed notification whose rule has the in-app action (values: `announced`).
NOTIFICATION_CHANGE = "notification"
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
