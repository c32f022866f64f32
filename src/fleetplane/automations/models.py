from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class Automation(Base):
    """A customer's rule: when `trigger` happens on a device and `conditions` hold, do each of
    `actions`. `webhook_secret` signs the webhooks (HMAC-SHA256, API.md): it must be read back
    to sign, so it is kept as is, and shown only in the answer that created it."""

    __tablename__ = "automations"
    __table_args__ = (Index("ix_automations_customer_id_id", "customer_id", "id"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AutomationState(Base):
    """One rule's state on one device, kept so that a restart neither loses nor repeats a
    firing.

    - `active`: the trigger's condition holds now (speeding, inside, idling...);
    - `since`: the device time it began to hold (for `min_duration_s`);
    - `fired`: this spell of `active` has fired already (a spell fires once);
    - `last_fired_at`: the device time of the last firing (for `cooldown_s`);
    - `memory`: what the trigger type remembers between messages (an input's last level, the
      last driver key...).

    A row is written only when one of these changes; how far the rules evaluated the
    device's messages is the device's (`AutomationDevice`)."""

    __tablename__ = "automation_states"
    __table_args__ = (
        PrimaryKeyConstraint("automation_id", "device_id"),
        Index("ix_automation_states_device_id", "device_id"),
    )

    automation_id: Mapped[str] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fired: Mapped[bool] = mapped_column(Boolean, default=False)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    memory: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AutomationDevice(Base):
    """What the automations step keeps of a device beside its rules' states, written with them
    every round the device has new messages:

    - `evaluated_until`: the device time of the last message its rules evaluated; older
      messages (late data) are not evaluated again, and a rule created later (or whose trigger
      changed) starts from the messages after it;
    - `speed`: the last speed its messages told (idling: a message without one keeps it)."""

    __tablename__ = "automation_devices"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    evaluated_until: Mapped[datetime] = mapped_column(UTCDateTime())
    speed: Mapped[float | None] = mapped_column(Float)
