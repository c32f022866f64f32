from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class StepProgress(Base):
    """How far one pipeline step has got through one device's stored messages.

    `mark` is the device time of the newest message the step has taken in (a device's
    messages are keyed by their device time, so it is also their order); null before the
    first. The step's output and its new mark are committed together, so after a restart the
    step goes on from exactly where its last commit left it. `rewind_from` is late data older
    than the mark: the step recomputes from there before it goes on."""

    __tablename__ = "step_progress"
    __table_args__ = (
        UniqueConstraint("step", "device_id"),
        Index("ix_step_progress_provider_id_id", "provider_id", "id"),
        Index("ix_step_progress_device_id", "device_id"),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    # The device's provider, so the provider's list and row-level security need no join.
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    mark: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rewind_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(10), default="ok")  # ok | failing
    # Failures in a row; the next try waits longer after each (up to a ceiling).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StepRewind(Base):
    """Late data: messages of a device stored with a device time at or before the newest one
    it had sent before. Written by the intake in the transaction that stores them (only then:
    it is rare), taken by the step runner, which rewinds each step whose mark is past it."""

    __tablename__ = "step_rewinds"
    __table_args__ = (Index("ix_step_rewinds_device_id", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    from_time: Mapped[datetime] = mapped_column(UTCDateTime())
