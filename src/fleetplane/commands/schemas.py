from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from fleetplane.core.schemas import RequestBody, ResponseBody, name_field


class CommandType(StrEnum):
    DRIVER_MESSAGE = "driver_message"  # text shown to the driver
    SNAPSHOT_REQUEST = "snapshot_request"  # the device takes and sends a photo
    TACHOGRAPH_REQUEST = "tachograph_request"  # the device downloads a driver card file
    RAW = "raw"  # a device-specific command line, passed as it is


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ANSWERED = "answered"
    FAILED = "failed"
    EXPIRED = "expired"


class CommandCreate(RequestBody):
    type: CommandType
    text: str | None = name_field(
        1344,
        default=None,
        description="The message (driver_message), the driver id (tachograph_request) or the "
        "command line (raw).",
    )
    expires_in_seconds: int = Field(
        default=86_400, ge=10, le=30 * 86_400, description="Undelivered after this: expired."
    )

    @model_validator(mode="after")
    def _text_fits_type(self) -> Self:
        needs_text = self.type is not CommandType.SNAPSHOT_REQUEST
        if needs_text and not self.text:
            raise ValueError(f"text is required for a {self.type.value} command")
        if not needs_text and self.text:
            raise ValueError("a snapshot_request takes no text")
        if self.text and ("\r" in self.text or "\n" in self.text):
            raise ValueError("text must be one line")
        return self


class CommandOut(ResponseBody):
    id: str
    device_id: str
    type: CommandType
    text: str | None
    status: CommandStatus
    error: str | None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    answered_at: datetime | None
