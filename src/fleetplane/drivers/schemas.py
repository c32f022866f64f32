from datetime import date, datetime
from typing import Annotated

from pydantic import EmailStr, Field, ValidationInfo, field_validator

from fleetplane.core.schemas import (
    NON_BLANK_LINE_PATTERN,
    RequestBody,
    ResponseBody,
    UtcDateTime,
    line_field,
    name_field,
)
from fleetplane.devices.schemas import PHONE_PATTERN
from fleetplane.drivers.timeline import MAX_KEY_CODE, Source

MAX_KEY_CODES = 20
MAX_CUSTOM_FIELDS = 50
MAX_CUSTOM_TEXT = 1000
MAX_NOTES = 2000
# Text that may span lines, but holds no NUL (PostgreSQL stores none, in text or JSON).
NO_NUL_PATTERN = r"^[^\x00]*$"
# Integers a JSON reader in any language takes exactly.
MAX_SAFE_INTEGER = 2**53 - 1

KeyCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_CODE,
        pattern=NON_BLANK_LINE_PATTERN,
        description="As the key reader reports it (an iButton id, an RFID card number).",
    ),
]
KEY_CODES_HELP = (
    "The driver's key codes: a device's key reader reporting one assigns the driver to the "
    "device. Unique within the customer; compared without regard to case."
)
CustomFieldName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=NON_BLANK_LINE_PATTERN)
]
CustomFieldValue = (
    Annotated[str, Field(max_length=MAX_CUSTOM_TEXT, pattern=NO_NUL_PATTERN)]
    | Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
CUSTOM_FIELDS_HELP = (
    f"The fleet's own fields (employee number, depot, ...): up to {MAX_CUSTOM_FIELDS} names, "
    "each with text, a number, true/false or null."
)
CustomFields = Annotated[
    dict[CustomFieldName, CustomFieldValue],
    Field(
        max_length=MAX_CUSTOM_FIELDS,
        description=CUSTOM_FIELDS_HELP,
        # Names outside the pattern are refused: the document says so too.
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {
                "minLength": 1,
                "maxLength": 100,
                "pattern": NON_BLANK_LINE_PATTERN,
            },
        },
    ),
]


class DriverCreate(RequestBody):
    name: str = name_field()
    key_codes: list[KeyCode] = Field(
        default_factory=list, max_length=MAX_KEY_CODES, description=KEY_CODES_HELP
    )
    phone: str | None = Field(default=None, max_length=40, pattern=PHONE_PATTERN)
    email: EmailStr | None = None
    license_number: str | None = line_field(60, default=None)
    license_expires: date | None = Field(default=None, description="The driving licence's expiry.")
    notes: str | None = Field(default=None, max_length=MAX_NOTES, pattern=NO_NUL_PATTERN)
    custom_fields: CustomFields = Field(default_factory=dict)


class DriverUpdate(RequestBody):
    name: str | None = name_field(default=None)
    key_codes: list[KeyCode] | None = Field(
        default=None, max_length=MAX_KEY_CODES, description=KEY_CODES_HELP + " Replaces the list."
    )
    phone: str | None = Field(default=None, max_length=40, pattern=PHONE_PATTERN)
    email: EmailStr | None = None
    license_number: str | None = line_field(60, default=None)
    license_expires: date | None = None
    notes: str | None = Field(default=None, max_length=MAX_NOTES, pattern=NO_NUL_PATTERN)
    custom_fields: CustomFields | None = Field(default=None, description="Replaces the object.")


class CurrentAssignment(ResponseBody):
    """The device the driver is on now."""

    id: str
    device_id: str
    start: datetime
    end: datetime | None
    source: Source


class DriverOut(ResponseBody):
    id: str
    name: str
    key_codes: list[str]
    phone: str | None
    email: str | None
    license_number: str | None
    license_expires: date | None
    notes: str | None
    custom_fields: dict[str, str | int | float | bool | None]
    current_assignment: CurrentAssignment | None = Field(
        description="The assignment in effect now (the latest started, if several devices)."
    )
    created_at: datetime
    updated_at: datetime


class AssignmentCreate(RequestBody):
    driver_id: str = Field(max_length=40)
    device_id: str = Field(max_length=40)
    start: UtcDateTime
    end: UtcDateTime | None = Field(default=None, description="Null: until further notice.")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if end is not None and start is not None and end <= start:
            raise ValueError("must be after start")
        return end


class AssignmentUpdate(RequestBody):
    end: UtcDateTime | None = Field(
        default=None, description="A new end; null: until further notice."
    )


class AssignmentOut(ResponseBody):
    id: str
    driver_id: str
    driver_name: str
    device_id: str
    start: datetime
    end: datetime | None = Field(description="Null while current.")
    source: Source = Field(description="`key`: from the device's key reader; `manual`.")
    created_at: datetime
