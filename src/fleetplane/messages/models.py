from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    text,
)
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


class MessageColumnsChunk(Base):
    """One device-day of messages as packed columns (`messages.column_chunks`), for reads of
    many messages at once (`messages.columns.read`). Derived from the `messages` rows, and
    used only while not `stale`: whatever changes the day's rows marks it stale in the same
    transaction (`messages.column_store` says who). See docs/decisions.md, "A column store for
    analytics"."""

    __tablename__ = "message_columns"
    __table_args__ = (
        PrimaryKeyConstraint("device_seq", "period_start"),
        # The builder's work list: the few days waiting to be (re)packed.
        Index(
            "ix_message_columns_stale",
            "period_start",
            sqlite_where=text("stale"),
            postgresql_where=text("stale"),
        ),
    )

    device_seq: Mapped[int] = mapped_column(Integer, ForeignKey("devices.seq", ondelete="CASCADE"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set while the chunk may not hold the day's rows (none packed yet, late data, retention):
    # the builder counts the day's rows again and packs it anew if they differ.
    stale: Mapped[bool] = mapped_column(Boolean)
    # Raised by every change of `stale` or the chunk, so that a builder that read the day
    # before a change does not store what it packed from the rows it read then.
    version: Mapped[int] = mapped_column(Integer)
    message_count: Mapped[int | None] = mapped_column(Integer)  # rows packed
    packed: Mapped[bytes | None] = mapped_column(LargeBinary)
