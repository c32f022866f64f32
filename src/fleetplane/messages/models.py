from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type

FLAG_BLACK_BOX = 1  # sent late, from the device's memory
FLAG_TIME_MISSING = 2  # the device sent no time: device_time is the receive time
FLAG_FILTERED = 4  # the device's validity filter rejected it: derived data ignores it


class StoredMessage(Base):
    """One device report. The key is (device, device time): a second report with the same
    time is a duplicate and is not stored again."""

    __tablename__ = "messages"

    device_id: Mapped[str] = mapped_column(
        id_column_type(), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    device_time: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[float | None] = mapped_column(Float)
    speed: Mapped[float | None] = mapped_column(Float)
    course: Mapped[float | None] = mapped_column(Float)
    satellites: Mapped[int | None] = mapped_column(SmallInteger)
    hdop: Mapped[float | None] = mapped_column(Float)
    inputs: Mapped[int | None] = mapped_column(BigInteger)
    outputs: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    flags: Mapped[int] = mapped_column(Integer, default=0)


class DriverChatMessage(Base):
    """A text the driver typed on the device."""

    __tablename__ = "driver_chat_messages"

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        id_column_type(), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(String(1400))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
