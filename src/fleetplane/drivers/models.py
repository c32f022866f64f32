from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, PrimaryKeyConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class Driver(Base):
    __tablename__ = "drivers"
    __table_args__ = (Index("ix_drivers_customer_id_id", "customer_id", "id"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(254))
    license_number: Mapped[str | None] = mapped_column(String(60))
    license_expires: Mapped[date | None] = mapped_column(Date)
    notes: Mapped[str | None] = mapped_column(String(2000))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DriverKeyCode(Base):
    """One key code of a driver (an iButton, an RFID card). The key makes a code unique per
    customer, compared without regard to case (`match_key`: the code in upper case), which is
    also how a reading finds its driver."""

    __tablename__ = "driver_key_codes"
    __table_args__ = (
        PrimaryKeyConstraint("customer_id", "match_key"),
        Index("ix_driver_key_codes_driver_id", "driver_id"),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    match_key: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    driver_id: Mapped[str] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))  # as the user wrote it
    position: Mapped[int] = mapped_column()  # its place in the driver's list


class DriverAssignment(Base):
    """A driver on a device from `started_at` until `ended_at` (null while current).

    A device's assignments (of one customer) never overlap: the later start ends the earlier
    one. `own_end` is where the assignment ends by itself (a manual one: the end its user
    gave; a key one: the next change of the key reading), `ended_at` the earlier of it and the
    start of a later assignment of the other source (`drivers.timeline`), so that both can be
    recomputed when late data or a deleted manual assignment changes what came after."""

    __tablename__ = "driver_assignments"
    __table_args__ = (
        Index("ix_driver_assignments_customer_id_started_at_id", "customer_id", "started_at", "id"),
        Index("ix_driver_assignments_device_id_started_at", "device_id", "started_at"),
        Index("ix_driver_assignments_driver_id_started_at", "driver_id", "started_at"),
        # At most one current assignment per device and customer (a device moved to another
        # customer starts a timeline of its own there).
        Index(
            "uq_driver_assignments_current",
            "device_id",
            "customer_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    driver_id: Mapped[str] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(10))  # key | manual
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    own_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
