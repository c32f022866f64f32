from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class Sensor(Base):
    """One sensor of one device. `provider_id` repeats the device's provider so that lists and
    row-level security need no join."""

    __tablename__ = "sensors"
    __table_args__ = (
        Index("ix_sensors_provider_id_id", "provider_id", "id"),
        Index("ix_sensors_device_id_id", "device_id", "id"),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    parameter: Mapped[str] = mapped_column(String(38))
    unit: Mapped[str] = mapped_column(String(20), default="")
    # [{"x": ..., "y": ...}, ...] with strictly increasing x, or None for no calibration.
    calibration: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    out_of_table: Mapped[str] = mapped_column(String(10), default="clamp")
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
