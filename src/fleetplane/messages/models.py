from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type

FLAG_BLACK_BOX = 1  # sent late, from the device's memory
FLAG_TIME_MISSING = 2  # the device sent no time: device_time is the receive time
FLAG_FILTERED = 4  # the device's validity filter rejected it: derived data ignores it


class StoredMessage(Base):
    """One device report. The key is (device, device time): a second report with the same
    time is a duplicate and is not stored again.

    The row is laid out for size (docs/decisions.md, "Message row layout"): the device's
    integer `seq`, coordinates in 1e-7 degree, and every other value packed by
    `messages.codec`. Read rows through `messages.service`, which unpacks them."""

    __tablename__ = "messages"
    # The key leads with the device (its messages are read by time); the columns start with
    # the time so that no alignment padding sits between them.
    # On SQLite the table is WITHOUT ROWID: the rows live in the key's b-tree.
    __table_args__ = (
        PrimaryKeyConstraint("device_seq", "device_time"),
        {"sqlite_with_rowid": False},
    )

    device_time: Mapped[datetime] = mapped_column(UTCDateTime())
    device_seq: Mapped[int] = mapped_column(Integer, ForeignKey("devices.seq", ondelete="CASCADE"))
    lat_e7: Mapped[int | None] = mapped_column(Integer)
    lon_e7: Mapped[int | None] = mapped_column(Integer)
    packed: Mapped[bytes] = mapped_column(LargeBinary)


class DriverChatMessage(Base):
    """A text the driver typed on the device."""

    __tablename__ = "driver_chat_messages"

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        id_column_type(), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(String(1400))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
