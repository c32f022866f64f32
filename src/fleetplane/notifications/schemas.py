"""What the notifications list shows: each firing with how each of its deliveries went."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from fleetplane.core.schemas import ResponseBody


class DeliveryAttemptOut(ResponseBody):
    """One attempt at one action, or, for a delivery still pending, the next one (`status`
    `pending`, `at` when it is due)."""

    delivery_id: str
    action: Literal["webhook", "email", "command"]
    attempt: int = Field(description="1 for the first attempt")
    status: Literal["pending", "delivered", "failed"]
    status_code: int | None = Field(description="The webhook's HTTP status, if it answered")
    latency_ms: int | None
    at: datetime | None
    error: str | None
    delivery_status: Literal["pending", "delivered", "failed"] = Field(
        description="The delivery's own status: `failed` once given up"
    )


class NotificationOut(ResponseBody):
    id: str = Field(description="Also the webhook's event id (`x-platform-event-id`)")
    automation_id: str | None = Field(description="null once the automation is deleted")
    device_id: str | None
    type: str = Field(description="The trigger type, or `test`")
    time: datetime
    data: dict[str, Any] = Field(description="What triggered it")
    position: dict[str, Any] | None
    deliveries: list[DeliveryAttemptOut] = Field(
        description="The webhook, e-mail and command actions' attempts, oldest first"
    )


class TestFired(ResponseBody):
    notification_id: str
