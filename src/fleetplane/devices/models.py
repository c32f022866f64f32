from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("channel_id", "unique_id"),
        Index("ix_devices_customer_id_id", "customer_id", "id"),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    # A compact key for the messages table (4 bytes instead of the 30-character id), assigned
    # by the database and never reused: an identity on PostgreSQL, a trigger on SQLite.
    # Read it with `devices.service.seqs_of`; it is not loaded back after an insert.
    seq: Mapped[int] = mapped_column(Integer, Identity(), unique=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    channel_id: Mapped[str | None] = mapped_column(ForeignKey("channels.id"))
    unique_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    validity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Added by its channel when it first logged in (counted against the channel's limit).
    auto_registered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @hybrid_property
    def has_password(self) -> bool:
        return self.password_hash is not None

    @has_password.inplace.expression
    @classmethod
    def _has_password_expression(cls) -> ColumnElement[bool]:
        return cls.password_hash.is_not(None).label("has_password")


class DeviceAssignment(Base):
    """A period in which a device belonged to a customer: open (no `ended_at`) while it still
    does. Written by `devices.service` whenever a device is assigned, moved or released. The
    customer of the open period sees the device's history from `history_from` on: the
    period's start, or the beginning (null) when it is the device's first period, since no
    other customer's history precedes it."""

    __tablename__ = "device_assignments"
    __table_args__ = (
        Index("ix_device_assignments_device_id_started_at", "device_id", "started_at"),
        # At most one open period per device; also what finds it.
        Index(
            "uq_device_assignments_open",
            "device_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    # No foreign key: the periods of a deleted customer stay, as its audit entries do.
    customer_id: Mapped[str] = mapped_column(id_column_type())
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    history_from: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceState(Base):
    """A device's live state: its newest message and what has been summed up from all of them.
    Advanced by the telemetry pipeline, one row per device."""

    __tablename__ = "device_states"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    position_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[float | None] = mapped_column(Float)
    speed: Mapped[float | None] = mapped_column(Float)
    course: Mapped[float | None] = mapped_column(Float)
    satellites: Mapped[int | None] = mapped_column(Integer)
    hdop: Mapped[float | None] = mapped_column(Float)
    inputs: Mapped[int | None] = mapped_column(BigInteger)
    outputs: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The counters, written by the device counters step (`devices.counters`), never by the
    # intake: as far as `counted_at`, the device time of the newest message they took in.
    odometer_m: Mapped[float] = mapped_column(Float, default=0.0)
    ignition: Mapped[bool | None] = mapped_column(Boolean)
    engine_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    counted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceCounterCheckpoint(Base):
    """A device's counters as they were after its last message of one hour (`hour`: that
    hour's start): what the counters step goes back to when late data arrives. The row of the
    newest hour is the running one."""

    __tablename__ = "device_counter_checkpoints"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    odometer_m: Mapped[float] = mapped_column(Float)
    engine_seconds: Mapped[float] = mapped_column(Float)
    ignition: Mapped[bool | None] = mapped_column(Boolean)
    # The last valid fix counted, where the next distance starts.
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
