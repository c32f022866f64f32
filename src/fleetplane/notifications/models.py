from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class Notification(Base):
    """One firing of an automation: what happened (`type`, `time`, `data`), on which device
    and where. Kept when its automation or device is deleted (the history stays)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_customer_id_time", "customer_id", "time"),
        Index("ix_notifications_automation_id_time", "automation_id", "time"),
        Index("ix_notifications_device_id_time", "device_id", "time"),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    automation_id: Mapped[str | None] = mapped_column(
        ForeignKey("automations.id", ondelete="SET NULL")
    )
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(40))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    position: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Delivery(Base):
    """The outbox: one action of one notification to carry out (a webhook to post, an e-mail
    to send, a command to queue), written in the transaction that records the notification,
    so that nothing fired is lost; the delivery worker takes the `pending` ones whose
    `next_attempt_at` has come. `action` is the action as it was when the rule fired."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_deliveries_notification_id", "notification_id"),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    notification_id: Mapped[str] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    action_index: Mapped[int] = mapped_column(Integer)
    action: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DeliveryAttempt(Base):
    """One try at a delivery: when, how it ended, how long it took."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery_id", "delivery_id", "attempt"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(10))  # delivered | failed
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
