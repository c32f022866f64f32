from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from fleetplane.core.schemas import RequestBody, ResponseBody, line_field, name_field
from fleetplane.sensors.calculation import OutOfTable, SensorType

MAX_PARAMETER_NAME = 38  # what the tracker protocols keep, so a longer name never arrives
MAX_CALIBRATION_POINTS = 1000
# Parameter names are stored as devices send them; only control characters are never sent.
PARAMETER_PATTERN = r"^[^\x00-\x1f\x7f]+$"
PARAMETER_HELP = (
    "The message parameter to read (`adc1`, `fuel`, `pwr_ext`, ...). `inN` / `outN` read bit"
    " N-1 of the message's input / output mask when no parameter of that name was sent."
)
OUT_OF_TABLE_HELP = (
    "A raw value outside the calibration table: `clamp` gives the first or last point's y,"
    " `reject` gives no value."
)
CALIBRATION_HELP = (
    "Points (x: raw value, y: the value it means), x strictly increasing; linear between"
    " points. Null: the raw value as it is."
)
MIN_HELP = "Lowest valid value (after calibration); a lower one counts as no value."
MAX_HELP = "Highest valid value (after calibration); a higher one counts as no value."


class CalibrationPoint(RequestBody):
    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)


def _strictly_increasing_x(points: list[CalibrationPoint]) -> list[CalibrationPoint]:
    for index in range(1, len(points)):
        previous, point = points[index - 1], points[index]
        if point.x <= previous.x:
            # Raised as a nested error so the answer names the point: calibration.<index>.x
            raise ValidationError.from_exception_data(
                "calibration",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "calibration_not_increasing",
                            "x must be greater than the previous point's x ({previous})",
                            {"previous": previous.x},
                        ),
                        loc=(index, "x"),
                        input=point.x,
                    )
                ],
            )
    return points


Calibration = Annotated[
    list[CalibrationPoint],
    Field(min_length=2, max_length=MAX_CALIBRATION_POINTS, description=CALIBRATION_HELP),
    AfterValidator(_strictly_increasing_x),
]


class SensorCreate(RequestBody):
    device_id: str = Field(max_length=40, description="The device the sensor belongs to.")
    name: str = name_field()
    type: SensorType
    parameter: str = Field(
        min_length=1,
        max_length=MAX_PARAMETER_NAME,
        pattern=PARAMETER_PATTERN,
        description=PARAMETER_HELP,
    )
    unit: str = line_field(20, default="", description="Shown next to values: `l`, `V`.")
    calibration: Calibration | None = None
    out_of_table: OutOfTable = Field(default=OutOfTable.CLAMP, description=OUT_OF_TABLE_HELP)
    min: float | None = Field(default=None, allow_inf_nan=False, description=MIN_HELP)
    max: float | None = Field(default=None, allow_inf_nan=False, description=MAX_HELP)


class SensorUpdate(RequestBody):
    name: str | None = name_field(default=None)
    type: SensorType | None = None
    parameter: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PARAMETER_NAME,
        pattern=PARAMETER_PATTERN,
        description=PARAMETER_HELP,
    )
    unit: str | None = line_field(20, default=None)
    calibration: Calibration | None = Field(default=None, description="Null removes the table.")
    out_of_table: OutOfTable | None = Field(default=None, description=OUT_OF_TABLE_HELP)
    min: float | None = Field(default=None, allow_inf_nan=False, description=MIN_HELP)
    max: float | None = Field(default=None, allow_inf_nan=False, description=MAX_HELP)


class SensorOut(ResponseBody):
    """A sensor: which parameter it reads and how that becomes a value."""

    id: str
    device_id: str
    name: str
    type: SensorType
    parameter: str
    unit: str
    calibration: list[CalibrationPoint] | None
    out_of_table: OutOfTable
    min: float | None
    max: float | None
    created_at: datetime
    updated_at: datetime
