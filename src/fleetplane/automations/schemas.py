from datetime import datetime
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import EmailStr, Field, field_validator, model_validator

from fleetplane.core.schemas import (
    NON_BLANK_LINE_PATTERN,
    RequestBody,
    ResponseBody,
    name_field,
)

Id = Annotated[str, Field(max_length=40, pattern=NON_BLANK_LINE_PATTERN)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "HH:MM", 00:00 to 23:59; a window's end may also be 24:00 (the end of the day).
TIME_PATTERN = r"^(?:[01]\d|2[0-3]):[0-5]\d$"
END_PATTERN = r"^(?:(?:[01]\d|2[0-3]):[0-5]\d|24:00)$"
MAX_SECONDS = 30 * 86_400
MAX_IDS = 1000
MAX_ACTIONS = 10

# Trigger types accepted by the schema that wait for a module not built yet: refused with a
# 422 naming `trigger.type` (automations.service).
WAITING_TRIGGERS = {
    "maintenance_due": "maintenance",
    "maintenance_overdue": "maintenance",
    "checklist_failed": "checklists",
    "fuel_fill": "fuel",
    "fuel_drain": "fuel",
}

GEOFENCES_HELP = "Ids of the customer's geofences; empty: any of them."


def _geofence_ids() -> Any:
    return Field(default_factory=list, max_length=MAX_IDS, description=GEOFENCES_HELP)


def _seconds(description: str, **field: Any) -> Any:
    return Field(ge=1, le=MAX_SECONDS, description=description, **field)


class GeofenceEnter(RequestBody):
    """A device enters one of the geofences."""

    type: Literal["geofence_enter"]
    geofence_ids: list[Id] = _geofence_ids()


class GeofenceExit(RequestBody):
    """A device leaves one of the geofences."""

    type: Literal["geofence_exit"]
    geofence_ids: list[Id] = _geofence_ids()


class GeofenceDwell(RequestBody):
    """A device stays inside one of the geofences for `min_inside_s`."""

    type: Literal["geofence_dwell"]
    geofence_ids: list[Id] = _geofence_ids()
    min_inside_s: int = _seconds("Seconds inside before it fires.")


class Speeding(RequestBody):
    """A device's speed is above `speed` (the speed itself does not fire), inside one of the
    geofences when `geofence_ids` are given."""

    type: Literal["speeding"]
    speed: float = Field(gt=0, le=1000, allow_inf_nan=False, description="km/h.")
    geofence_ids: list[Id] = Field(
        default_factory=list,
        max_length=MAX_IDS,
        description="Only inside one of these of the customer's geofences; empty: anywhere.",
    )


class IgnitionOn(RequestBody):
    """The ignition (the device's ignition sensor) turns on."""

    type: Literal["ignition_on"]


class IgnitionOff(RequestBody):
    """The ignition (the device's ignition sensor) turns off."""

    type: Literal["ignition_off"]


class SensorRange(RequestBody):
    """A sensor's value (as the sensors compute it) is inside `[min, max]` (`inside`) or
    outside it; one of `min` and `max` may be left out. The rule watches the sensor's device."""

    type: Literal["sensor_range"]
    sensor_id: Id = Field(description="One of the customer's devices' sensors.")
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    inside: bool = Field(default=True, description="Fire inside the range (else outside).")

    @model_validator(mode="after")
    def _a_range(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Parameter(RequestBody):
    """A message parameter compared with `value`: `eq`, `ne` (numbers or text), `gt`, `lt`
    (numbers). A message without the parameter changes nothing."""

    type: Literal["parameter"]
    name: str = name_field(38, description="The parameter's name, as the device sends it.")
    op: Literal["eq", "ne", "gt", "lt"]
    value: float | str = Field(description="A number, or text for `eq` and `ne`.")

    @model_validator(mode="after")
    def _numbers_compare(self) -> Self:
        if self.op in ("gt", "lt") and isinstance(self.value, str):
            raise ValueError(f"{self.op} compares numbers: value must be a number")
        if isinstance(self.value, float) and self.value != self.value:
            raise ValueError("value must be a number or text")
        return self


class InputChange(RequestBody):
    """A digital input (bit `input - 1` of the message's input mask) changes."""

    type: Literal["input_change"]
    input: int = Field(ge=1, le=64, description="1-based.")
    to: Literal["on", "off", "any"] = "any"


class Alarm(RequestBody):
    """The device reports an alarm (SOS): a message whose `SOS` or `alarm` parameter is not 0,
    after one without."""

    type: Literal["alarm"]


class Idling(RequestBody):
    """The ignition is on and the speed below 5 km/h (the trips' minimum moving speed) for
    `min_s`."""

    type: Literal["idling"]
    min_s: int = _seconds("Seconds of idling before it fires.")


class ConnectionLost(RequestBody):
    """No message has been received from the device for `after_s` (server time)."""

    type: Literal["connection_lost"]
    after_s: int = Field(ge=1, le=MAX_SECONDS, description="Seconds without a message.")


class ConnectionRestored(RequestBody):
    """A message arrives from a device that a `connection_lost` rule found lost."""

    type: Literal["connection_restored"]


class DriverChanged(RequestBody):
    """The driver key the device reads changes (a key put in, taken out or replaced)."""

    type: Literal["driver_changed"]


class MaintenanceDue(RequestBody):
    """Not available yet (waits for the maintenance module): refused."""

    type: Literal["maintenance_due"]
    plan_ids: list[Id] = Field(default_factory=list, max_length=MAX_IDS)


class MaintenanceOverdue(RequestBody):
    """Not available yet (waits for the maintenance module): refused."""

    type: Literal["maintenance_overdue"]
    plan_ids: list[Id] = Field(default_factory=list, max_length=MAX_IDS)


class ChecklistFailed(RequestBody):
    """Not available yet (waits for the checklists module): refused."""

    type: Literal["checklist_failed"]
    template_ids: list[Id] = Field(default_factory=list, max_length=MAX_IDS)


class FuelFill(RequestBody):
    """Not available yet (waits for the fuel module): refused."""

    type: Literal["fuel_fill"]
    min_litres: float | None = Field(default=None, gt=0, le=100_000, allow_inf_nan=False)


class FuelDrain(RequestBody):
    """Not available yet (waits for the fuel module): refused."""

    type: Literal["fuel_drain"]
    min_litres: float | None = Field(default=None, gt=0, le=100_000, allow_inf_nan=False)


Trigger = Annotated[
    GeofenceEnter
    | GeofenceExit
    | GeofenceDwell
    | Speeding
    | IgnitionOn
    | IgnitionOff
    | SensorRange
    | Parameter
    | InputChange
    | Alarm
    | Idling
    | ConnectionLost
    | ConnectionRestored
    | DriverChanged
    | MaintenanceDue
    | MaintenanceOverdue
    | ChecklistFailed
    | FuelFill
    | FuelDrain,
    Field(discriminator="type"),
]


class Window(RequestBody):
    """A time of the week: on each of `days`, from `from` (inclusive) to `to` (exclusive),
    local times in the customer's time zone. `to` before `from` crosses midnight: the window
    ends on the next day."""

    days: list[Day] = Field(min_length=1, max_length=7)
    from_: str = Field(alias="from", pattern=TIME_PATTERN, description="HH:MM.")
    to: str = Field(pattern=END_PATTERN, description="HH:MM (24:00: the end of the day).")

    @model_validator(mode="after")
    def _a_window(self) -> Self:
        if self.from_ == self.to:
            raise ValueError("from and to are the same time")
        if len(set(self.days)) != len(self.days):
            raise ValueError("a day is repeated")
        return self


class Conditions(RequestBody):
    device_ids: list[Id] = Field(
        default_factory=list,
        max_length=MAX_IDS,
        description="The customer's devices the rule watches; empty: all of them.",
    )
    schedule: list[Window] = Field(
        default_factory=list,
        max_length=50,
        description="When the rule may fire (the message's time in the customer's time zone); "
        "empty: always.",
    )
    min_duration_s: int = Field(
        default=0,
        ge=0,
        le=MAX_SECONDS,
        description="How long the trigger's condition must hold (device time) before it fires; "
        "instantaneous triggers ignore it.",
    )
    cooldown_s: int = Field(
        default=0,
        ge=0,
        le=MAX_SECONDS,
        description="No firing within this long after the previous one on the same device.",
    )


class WebhookAction(RequestBody):
    """POST the event, signed with the rule's `webhook_secret`, retried until delivered."""

    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2000, description="An http or https URL.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a malformed port raises)
        except ValueError as error:
            raise ValueError(f"not a URL: {error}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("only http and https URLs")
        if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("not a URL with a host")
        return value


class NotificationAction(RequestBody):
    """An in-app notification: listed by the API and sent on the live event stream."""

    type: Literal["notification"]


class CommandAction(RequestBody):
    """Send the device a command line, as the commands API sends a `raw` command."""

    type: Literal["command"]
    command: str = name_field(1344, description="The command line.")


class EmailAction(RequestBody):
    """Send an e-mail through the configured SMTP server."""

    type: Literal["email"]
    to: list[EmailStr] = Field(min_length=1, max_length=50, description="One address or several.")

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


Action = Annotated[
    WebhookAction | NotificationAction | CommandAction | EmailAction,
    Field(discriminator="type"),
]


class AutomationCreate(RequestBody):
    name: str = name_field()
    enabled: bool = True
    trigger: Trigger
    conditions: Conditions = Field(default_factory=Conditions)
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)


class AutomationUpdate(RequestBody):
    """Only the fields sent change; `trigger`, `conditions` and `actions` are replaced whole.
    A new trigger starts the rule's state on every device afresh."""

    name: str | None = name_field(default=None)
    enabled: bool | None = None
    trigger: Trigger | None = None
    conditions: Conditions | None = None
    actions: list[Action] | None = Field(default=None, min_length=1, max_length=MAX_ACTIONS)


class WindowOut(ResponseBody):
    days: list[Day]
    from_: str = Field(alias="from")
    to: str


class ConditionsOut(ResponseBody):
    device_ids: list[str]
    schedule: list[WindowOut]
    min_duration_s: int
    cooldown_s: int


class AutomationOut(ResponseBody):
    id: str
    name: str
    enabled: bool
    trigger: dict[str, Any] = Field(description="`type` and the type's parameters.")
    conditions: ConditionsOut
    actions: list[dict[str, Any]] = Field(description="Each `type` and its parameters.")
    created_at: datetime
    updated_at: datetime


class AutomationCreated(AutomationOut):
    webhook_secret: str = Field(
        description="Signs the webhooks (HMAC-SHA256); shown only here and when rotated."
    )


class SecretOut(ResponseBody):
    webhook_secret: str = Field(description="The new secret; the old one no longer signs.")
