from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from fleetplane.core.db import Base, UTCDateTime, id_column_type
from fleetplane.core.timeutil import utcnow


class TripSettings(Base):
    """A device's trip detection settings (`detector.DetectorSettings`); a device without a
    row has the defaults."""

    __tablename__ = "trip_settings"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    method: Mapped[str] = mapped_column(String(12))
    min_moving_speed: Mapped[float] = mapped_column(Float)
    min_parking_s: Mapped[int] = mapped_column(Integer)
    min_trip_s: Mapped[int] = mapped_column(Integer)
    min_trip_m: Mapped[float] = mapped_column(Float)
    min_satellites: Mapped[int] = mapped_column(Integer)
    max_gap_s: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TripInterval(Base):
    """A trip, parking or stop of a device. The id is made from the device, the kind and the
    start (`service.interval_id`), so a re-computed interval replaces its earlier self, and ids
    sort by start time. `open` while it is still going (its end is then the last message's
    time). A trip keeps `resume_state`: the detector's state just after its first message,
    where detection starts again when late data arrives after it. `odometer_start_m` and
    `odometer_end_m`: the device counters' odometer just after the start and end messages
    (null when the counters cannot tell)."""

    __tablename__ = "trip_intervals"
    __table_args__ = (
        Index("ix_trip_intervals_device_id_start_time", "device_id", "start_time"),
        Index("ix_trip_intervals_device_id_end_time", "device_id", "end_time"),
        # The few open ones, which the trips step reads back each round (`trips.odometers`).
        Index(
            "ix_trip_intervals_open_device_id",
            "device_id",
            sqlite_where=text("open = 1"),  # as SQLAlchemy says it there
            postgresql_where=text("open"),
        ),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime] = mapped_column(UTCDateTime())
    start_lat: Mapped[float] = mapped_column(Float)
    start_lon: Mapped[float] = mapped_column(Float)
    end_lat: Mapped[float] = mapped_column(Float)
    end_lon: Mapped[float] = mapped_column(Float)
    distance_m: Mapped[float] = mapped_column(Float)
    max_speed: Mapped[float | None] = mapped_column(Float)
    avg_speed: Mapped[float] = mapped_column(Float)
    open: Mapped[bool] = mapped_column(Boolean)
    odometer_start_m: Mapped[float | None] = mapped_column(Float)
    odometer_end_m: Mapped[float | None] = mapped_column(Float)
    resume_state: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class TripDetectorState(Base):
    """Where the trip step left a device (`detector.DetectorState` as JSON), committed with
    its intervals and its progress mark, so a restart, or another process, goes on exactly."""

    __tablename__ = "trip_detector_states"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
