from datetime import datetime

from pydantic import Field

from fleetplane.core.schemas import ResponseBody


class MessageOut(ResponseBody):
    time: datetime = Field(description="Device time.")
    received_at: datetime
    lat: float | None
    lon: float | None
    altitude: float | None
    speed: float | None = Field(description="km/h.")
    course: float | None
    satellites: int | None
    hdop: float | None
    inputs: int | None
    outputs: int | None
    params: dict[str, int | float | str]
    black_box: bool = Field(description="Sent late, from the device's memory.")
    valid: bool = Field(description="False: the device's validity filter rejected it.")
    sensors: dict[str, bool | int | float | str | None] = Field(
        description=(
            "The value of each of the device's sensors in this message, by sensor id (the"
            " device's `sensors` give their names and units); null when the message has no"
            " valid value for it."
        )
    )
