from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

StepStatus = Literal["ok", "failing"]


class StepProgressOut(BaseModel):
    id: str
    step: str = Field(description="The pipeline step.")
    device_id: str
    mark: datetime | None = Field(
        description="Device time of the newest message the step has taken in (null: none yet)."
    )
    status: StepStatus = Field(
        description="`failing`: its last try for this device raised; it is tried again at "
        "`retry_at`, while the device's messages keep being stored and answered."
    )
    attempts: int = Field(description="Failures in a row.")
    last_error: str | None
    retry_at: datetime | None
    updated_at: datetime
