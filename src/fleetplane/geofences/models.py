from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
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
