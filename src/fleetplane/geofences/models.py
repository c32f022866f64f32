from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
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
from fleetplane.core.timeutil import utcnow


class Geofence(Base):
    """A customer's geofence. `geometry` is the GeoJSON geometry as the client gave it (a
    `Point` with `radius_m`, a `LineString` with `width_m`, a `Polygon` or `MultiPolygon`);
    `area` is what positions are tested against (`geometry.build_area`), as WKB, made once
    when the geometry is written."""

    __tablename__ = "geofences"
    __table_args__ = (Index("ix_geofences_customer_id_id", "customer_id", "id"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    color: Mapped[str | None] = mapped_column(String(7))
    shape: Mapped[str] = mapped_column(String(10))  # circle | polygon | corridor
    geometry: Mapped[dict[str, Any]] = mapped_column(JSON)
    radius_m: Mapped[float | None] = mapped_column(Float)
    width_m: Mapped[float | None] = mapped_column(Float)
    is_address: Mapped[bool] = mapped_column(Boolean, default=False)
    speed_limit: Mapped[float | None] = mapped_column(Float)
    # The dwell delay: a visit counts once the device has been inside this long (seconds).
    dwell_s: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    area: Mapped[bytes] = mapped_column(LargeBinary)
    area_m2: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class GeofenceGroup(Base):
    __tablename__ = "geofence_groups"
    __table_args__ = (Index("ix_geofence_groups_customer_id_id", "customer_id", "id"),)

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    color: Mapped[str | None] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class GeofenceGroupMember(Base):
    """A geofence in a group (a geofence may be in several)."""

    __tablename__ = "geofence_group_members"
    __table_args__ = (
        PrimaryKeyConstraint("geofence_id", "group_id"),
        Index("ix_geofence_group_members_group_id", "group_id"),
    )

    geofence_id: Mapped[str] = mapped_column(ForeignKey("geofences.id", ondelete="CASCADE"))
    group_id: Mapped[str] = mapped_column(ForeignKey("geofence_groups.id", ondelete="CASCADE"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))


class GeofenceVisit(Base):
    """A device's stay inside a geofence, found by the visits step (`processor.VisitsStep`).

    `enter_time` is the time of the first message inside, `exit_time` that of the first message
    outside (null while inside); `distance_m` sums the geodesic segments between consecutive
    messages inside. The id is made from the device, the geofence and the enter time
    (`visits.visit_id`), so a re-computed visit replaces its earlier self, and ids sort by enter
    time. `counted` is false while a geofence's dwell delay has not passed yet: such a visit is
    the step's state only, never shown, and is deleted when the device leaves too early.
    `last_*`: the newest message inside (for an open visit, where its distance goes on from)."""

    __tablename__ = "geofence_visits"
    __table_args__ = (
        Index("ix_geofence_visits_device_id_enter_time", "device_id", "enter_time"),
        Index(
            "ix_geofence_visits_customer_id_geofence_id_enter_time",
            "customer_id",
            "geofence_id",
            "enter_time",
        ),
        # The few open ones, which the visits step reads back for a device it does not hold.
        Index(
            "ix_geofence_visits_open_device_id",
            "device_id",
            sqlite_where=text("exit_time IS NULL"),
            postgresql_where=text("exit_time IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(id_column_type(), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    geofence_id: Mapped[str] = mapped_column(ForeignKey("geofences.id", ondelete="CASCADE"))
    enter_time: Mapped[datetime] = mapped_column(UTCDateTime())
    exit_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float] = mapped_column(Float)
    distance_m: Mapped[float] = mapped_column(Float)
    enter_lat: Mapped[float] = mapped_column(Float)
    enter_lon: Mapped[float] = mapped_column(Float)
    exit_lat: Mapped[float | None] = mapped_column(Float)
    exit_lon: Mapped[float | None] = mapped_column(Float)
    last_time: Mapped[datetime] = mapped_column(UTCDateTime())
    last_lat: Mapped[float] = mapped_column(Float)
    last_lon: Mapped[float] = mapped_column(Float)
    counted: Mapped[bool] = mapped_column(Boolean)
