from datetime import datetime
from typing import Any

from pydantic import Field

from fleetplane.core.schemas import RequestBody, ResponseBody, line_field, name_field

UNIQUE_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
UNIQUE_ID_HELP = "The identifier the tracker sends (IMEI for most devices)."
PHONE_PATTERN = r"^\+?[0-9 ()-]{3,40}$"


class ValidityFilter(RequestBody):
    """Which messages derived data (position, odometer, trips) ignores. Filtered messages
    are stored anyway, flagged `valid: false`."""

    min_satellites: int | None = Field(default=None, ge=0, le=255)
    max_hdop: float | None = Field(default=None, gt=0, le=100)
    max_speed_kmh: float | None = Field(
        default=None, gt=0, le=2000, description="Jump filter: speed implied by the last fix."
    )
    reject_zero_coordinates: bool = Field(default=False, description="Drop 0,0 fixes.")
    max_future_seconds: int = Field(
        default=86_400, ge=0, le=31 * 86_400, description="Drop device times this far ahead."
    )


class DeviceCreate(RequestBody):
    channel_id: str = Field(description="The channel (listener) the tracker connects to.")
    unique_id: str = Field(
        min_length=1, max_length=64, pattern=UNIQUE_ID_PATTERN, description=UNIQUE_ID_HELP
    )
    name: str = name_field()
    phone: str | None = Field(default=None, max_length=40, pattern=PHONE_PATTERN)
    password: str | None = name_field(
        64, default=None, description="Device login password (write-only)."
    )
    customer_id: str | None = Field(default=None, description="Assign to this customer at once.")
    validity: ValidityFilter | None = None


class DeviceUpdate(RequestBody):
    channel_id: str | None = Field(default=None, description="Move the device to this channel.")
    unique_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=UNIQUE_ID_PATTERN,
        description=UNIQUE_ID_HELP,
    )
    name: str | None = name_field(default=None)
    phone: str | None = Field(default=None, max_length=40, pattern=PHONE_PATTERN)
    password: str | None = line_field(
        64, default=None, description="New login password; null or empty removes it."
    )
    customer_id: str | None = Field(
        default=None,
        description="Assign (or move) to this customer; null returns the device to inventory.",
    )
    validity: ValidityFilter | None = Field(default=None, description="Null: the defaults.")


class DeviceOut(ResponseBody):
    """A device as the provider sees it."""

    id: str
    channel_id: str | None
    unique_id: str
    name: str
    phone: str | None
    customer_id: str | None
    has_password: bool
    validity: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class Position(ResponseBody):
    """The device's last valid fix."""

    time: datetime
    lat: float
    lon: float
    altitude: float | None = Field(description="Metres above sea level.")
    speed: float | None = Field(description="km/h.")
    course: float | None = Field(description="Degrees clockwise from north.")
    satellites: int | None
    hdop: float | None


class SensorReading(ResponseBody):
    id: str
    name: str
    type: str
    unit: str | None
    value: bool | int | float | str | None = Field(
        description="From the newest message; null when the parameter is missing or invalid."
    )


class CustomerDeviceOut(ResponseBody):
    """A device as its customer sees it, with its live state. The event stream's `state`
    events carry the same live state, shaped the same way."""

    id: str
    unique_id: str
    name: str
    phone: str | None
    created_at: datetime
    last_message_at: datetime | None = Field(description="Device time of the newest message.")
    online: bool = Field(description="A message arrived within the channel's online timeout.")
    position: Position | None
    odometer_km: float | None = Field(
        description="The mileage sensor's value (km) if the device has one, otherwise the sum "
        "of distances between valid fixes."
    )
    engine_hours_counted: float | None = Field(
        description="Hours the platform counted with the ignition on (by the device's "
        "ignition sensor), since the device first reported: 0 without an ignition sensor, "
        "null before any message. Not the vehicle's hour meter: see `engine_hours_sensor`."
    )
    engine_hours_sensor: float | None = Field(
        description="The vehicle's own hour meter (h): the value of the device's first "
        "`engine_hours` sensor in its newest reading; null without such a sensor or reading."
    )
    inputs: int | None = Field(description="Digital inputs bit mask; bit 0 is input 1.")
    outputs: int | None
    params: dict[str, int | float | str] = Field(
        description="The last value of every parameter the device sent."
    )
    ignition: bool | None = Field(description="From the device's ignition sensor, if it has one.")
    sensors: list[SensorReading]
