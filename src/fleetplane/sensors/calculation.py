"""A sensor's value from one message, with no database: live state and recomputation over
stored messages share this code, so they give the same answer.

The order is fixed: read the parameter, turn it into a number, calibrate it, check the valid
range, then (switch sensors only) turn it into on/off.
"""

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

ParamValue = int | float | str
SensorValue = bool | int | float | str


class SensorType(StrEnum):
    IGNITION = "ignition"
    DIGITAL_INPUT = "digital_input"
    FUEL_LEVEL = "fuel_level"
    MILEAGE = "mileage"
    ENGINE_HOURS = "engine_hours"
    TEMPERATURE = "temperature"
    VOLTAGE = "voltage"
    BATTERY_LEVEL = "battery_level"
    WEIGHT = "weight"
    RPM = "rpm"
    COUNTER = "counter"
    DRIVER_KEY = "driver_key"
    CUSTOM = "custom"


class OutOfTable(StrEnum):
    CLAMP = "clamp"
    REJECT = "reject"


SWITCH_TYPES = frozenset({SensorType.IGNITION, SensorType.DIGITAL_INPUT})

# Plain decimal notation only: Python's own int()/float() would also take "1_000", "inf", "nan".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_MASK_BIT = re.compile(r"(in|out)([1-9]\d?)", re.ASCII)
MASK_BITS = 64


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    """Points (x -> y) with strictly increasing x; linear between neighbouring points."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    @classmethod
    def of(cls, points: Iterable[Mapping[str, float]]) -> "CalibrationTable":
        pairs = [(float(point["x"]), float(point["y"])) for point in points]
        return cls(tuple(x for x, _ in pairs), tuple(y for _, y in pairs))

    def convert(self, value: float, out_of_table: OutOfTable) -> float | None:
        xs, ys = self.xs, self.ys
        if value < xs[0] or value > xs[-1]:
            if out_of_table == OutOfTable.REJECT:
                return None
            return ys[0] if value < xs[0] else ys[-1]
        right = bisect_right(xs, value)
        if right == len(xs):  # exactly the last x
            return ys[-1]
        left = right - 1
        # The share of the way along the segment is in [0, 1): no overflow on steep segments.
        share = (value - xs[left]) / (xs[right] - xs[left])
        return ys[left] + (ys[right] - ys[left]) * share


@dataclass(frozen=True, slots=True)
class SensorDefinition:
    """What the computation needs to know about one sensor (plus what shows it to people)."""

    id: str
    device_id: str
    name: str
    type: SensorType
    parameter: str
    unit: str = ""
    calibration: CalibrationTable | None = None
    out_of_table: OutOfTable = OutOfTable.CLAMP
    min: float | None = None
    max: float | None = None


def compute_value(
    sensor: SensorDefinition,
    params: Mapping[str, ParamValue],
    inputs: int | None,
    outputs: int | None = None,
) -> SensorValue | None:
    """The sensor's value in one message, or None when the message has no valid value for it."""
    raw = read_parameter(sensor.parameter, params, inputs, outputs)
    if raw is None:
        return None
    if sensor.type == SensorType.DRIVER_KEY:
        return _driver_key(raw)
    number = as_number(raw)
    if number is None:
        return _custom_text(sensor, raw)
    value = _calibrated(sensor, number)
    if value is None or not _in_valid_range(sensor, value):
        return None
    if sensor.type in SWITCH_TYPES:
        return value != 0
    return value


def read_parameter(
    parameter: str,
    params: Mapping[str, ParamValue],
    inputs: int | None,
    outputs: int | None = None,
) -> ParamValue | None:
    """The parameter as the device sent it; `inN` / `outN` fall back to bit N-1 of the
    message's input / output mask, where most trackers report their digital lines."""
    value = params.get(parameter)
    if value is not None:
        return value
    mask_bit = _mask_bit(parameter)
    if mask_bit is None:
        return None
    is_input, bit = mask_bit
    mask = inputs if is_input else outputs
    return None if mask is None else (mask >> bit) & 1


@lru_cache(maxsize=1024)
def _mask_bit(parameter: str) -> tuple[bool, int] | None:
    """(reads inputs rather than outputs, bit index) for `inN` / `outN`, else None."""
    match = _MASK_BIT.fullmatch(parameter)
    if match is None or int(match[2]) > MASK_BITS:
        return None
    return match[1] == "in", int(match[2]) - 1


def as_number(raw: ParamValue) -> int | float | None:
    """A number from a parameter value; numeric text counts, other text does not."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else None
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if text.lstrip("+-").isdigit():
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def _driver_key(raw: ParamValue) -> str | None:
    # A key is an identifier: its text as sent (leading zeros matter), never calibrated.
    # An empty key is what trackers send when no key is in the reader.
    text = raw if isinstance(raw, str) else str(raw)
    return text or None


def _custom_text(sensor: SensorDefinition, raw: ParamValue) -> str | None:
    # A custom sensor may carry text (a status word, a tag): it passes through as sent.
    if sensor.type == SensorType.CUSTOM and isinstance(raw, str) and raw:
        return raw
    return None


def _calibrated(sensor: SensorDefinition, number: int | float) -> int | float | None:
    if sensor.calibration is None:
        return number
    return sensor.calibration.convert(number, sensor.out_of_table)


def _in_valid_range(sensor: SensorDefinition, value: int | float) -> bool:
    if sensor.min is not None and value < sensor.min:
        return False
    return sensor.max is None or value <= sensor.max


def compute_values(
    sensor: SensorDefinition,
    raw: npt.NDArray[np.float64],
    inputs: npt.NDArray[np.int64],
    outputs: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """`compute_value` over many messages at once (messages as columns: `raw` is the sensor's
    parameter as a number per message, NaN where absent; `inputs`/`outputs` are the masks, -1
    where absent). NaN where a message has no valid value; switch sensors give 1.0 or 0.0.

    Numeric sensors only: text values (driver keys, custom text) are not numbers."""
    values = np.array(raw, dtype=np.float64, copy=True)
    mask_bit = _mask_bit(sensor.parameter)
    if mask_bit is not None:
        is_input, bit = mask_bit
        masks = inputs if is_input else outputs
        from_mask = np.isnan(values) & (masks >= 0)
        values[from_mask] = (masks[from_mask] >> bit) & 1
    if sensor.calibration is not None:
        xs = np.array(sensor.calibration.xs, dtype=np.float64)
        ys = np.array(sensor.calibration.ys, dtype=np.float64)
        outside = (values < xs[0]) | (values > xs[-1])
        values = np.interp(values, xs, ys)  # clamps outside the table; NaN stays NaN
        if sensor.out_of_table == OutOfTable.REJECT:
            values[outside] = np.nan
    if sensor.min is not None:
        values[values < sensor.min] = np.nan
    if sensor.max is not None:
        values[values > sensor.max] = np.nan
    if sensor.type in SWITCH_TYPES:
        known = ~np.isnan(values)
        values[known] = (values[known] != 0).astype(np.float64)
    return values
