"""Request and response bodies of the trips module."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from fleetplane.core.schemas import RequestBody, ResponseBody
from fleetplane.trips.detector import DetectorSettings, Kind, Method

_DEFAULTS = DetectorSettings()
_WEEK_S = 7 * 86_400


class TripSettingsBody(RequestBody):
    """A device's trip detection settings; a field left out takes its default."""

    method: Method = Field(
        _DEFAULTS.method,
        description="What says the vehicle moves: GPS `speed`, successive `coordinates`, the "
        "`ignition` sensor (and speed), or the `mileage` sensor's increments.",
    )
    min_moving_speed: float = Field(
        _DEFAULTS.min_moving_speed, gt=0, le=500, allow_inf_nan=False, description="km/h."
    )
    min_parking_s: int = Field(
        _DEFAULTS.min_parking_s,
        ge=1,
        le=_WEEK_S,
        description="A pause at least this long is a parking and ends the trip; a shorter one "
        "is a stop inside it.",
    )
    min_trip_s: int = Field(_DEFAULTS.min_trip_s, ge=0, le=_WEEK_S)
    min_trip_m: float = Field(_DEFAULTS.min_trip_m, ge=0, le=1_000_000, allow_inf_nan=False)
    min_satellites: int = Field(
        _DEFAULTS.min_satellites, ge=0, le=64, description="Fixes from fewer are not used."
    )
    max_gap_s: int = Field(
        _DEFAULTS.max_gap_s,
        ge=1,
        le=30 * 86_400,
        description="A longer silence ends a trip at the last message before it.",
    )

    def detector_settings(self) -> DetectorSettings:
        return DetectorSettings(**self.model_dump())


class TripSettingsOut(ResponseBody):
    device_id: str
    method: Method
    min_moving_speed: float
    min_parking_s: int
    min_trip_s: int
    min_trip_m: float
    min_satellites: int
    max_gap_s: int
    updated_at: datetime | None = Field(description="Null while the device has the defaults.")


class IntervalPoint(BaseModel):
    time: datetime
    lat: float
    lon: float


class IntervalOut(BaseModel):
    id: str
    device_id: str
    kind: Kind
    start: IntervalPoint
    end: IntervalPoint = Field(description="While `open`, the last message so far.")
    duration_s: float
    distance_m: float
    max_speed: float | None = Field(description="km/h; null when no message had a speed.")
    avg_speed: float = Field(description="km/h: the distance over the duration.")
    odometer_start_m: float | None = Field(
        description="The device's odometer (its counters) just after the first message, in "
        "metres; null when it is not known (history from before the counters counted)."
    )
    odometer_end_m: float | None = Field(
        description="Just after the last message, in metres (where the next interval starts)."
    )
    driver_id: str | None = Field(
        description="The driver assigned to the device at the start (by key or by hand)."
    )
    driver_name: str | None
    geofence_start: str | None
    geofence_end: str | None
    open: bool = Field(description="Still going.")
    clipped: bool = Field(description="`from` or `to` cut it: it is still returned whole.")


class LineString(BaseModel):
    type: Literal["LineString"] = "LineString"
    coordinates: list[Annotated[list[float], Field(min_length=2, max_length=2)]]


class TrackProperties(BaseModel):
    interval_id: str
    device_id: str
    kind: Kind
    times: list[datetime] = Field(description="The time of each point of the line.")


class TrackOut(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: LineString | None = Field(
        description="[lon, lat] of each message used; null with fewer than two."
    )
    properties: TrackProperties
