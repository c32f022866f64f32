from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type


class TachographFile(Base):
    """A downloaded `.ddd` file (driver card or vehicle unit); bytes in the file store."""

    __tablename__ = "tachograph_files"
    __table_args__ = (Index("ix_tachograph_files_device_id", "device_id", "downloaded_at"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    driver_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(400))
    downloaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
