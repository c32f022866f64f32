"""Reports on time between messages: engine hours, idling, speeding.

Each is a pure function of one device's columns and the periods (tested without a database),
which `messages_read.on_messages` runs for every device. The time of a span between two
messages follows the state at its first message, as the device counters count engine hours
(`seconds_in`); a span that crosses a period boundary is split at it, and a message on a
boundary belongs to the period it starts.
"""

import numpy as np

from fleetplane.analytics.messages_read import (
    FloatArray,
    carried_forward,
    on_messages,
    sensor_values,
)
from fleetplane.analytics.periods import Periods
from fleetplane.analytics.report import (
    Figure,
    PeriodFigures,
    Report,
    ReportParameters,
    Total,
    Unit,
)
from fleetplane.analytics.spans import Runs, Spans, runs, seconds_in, spread, time_in_periods
from fleetplane.core.geo import distances_m
from fleetplane.messages.columns import Columns
from fleetplane.sensors.calculation import SensorDefinition, SensorType

# A device moves at this speed or faster (the trips module's default minimum moving speed).
MIN_MOVING_SPEED_KMH = 5.0


def ignition_on(columns: Columns, ignition: SensorDefinition) -> np.ndarray:
    """Whether the engine ran at each message: the ignition sensor's value, a message without
    one keeping the state before it (off before any)."""
    return carried_forward(sensor_values(columns, ignition), 0.0) > 0


def known_speed(columns: Columns) -> FloatArray:
    """The speed at each message, a message without one keeping the speed before it."""
    return carried_forward(columns.speed, 0.0)


def idle_at(columns: Columns, ignition: SensorDefinition) -> np.ndarray:
    """Whether the engine ran without the vehicle moving at each message."""
    return ignition_on(columns, ignition) & (known_speed(columns) < MIN_MOVING_SPEED_KMH)


# ---- engine hours ------------------------------------------------------------------------


def engine_hours_of(
    columns: Columns, ignition: SensorDefinition | None, periods: Periods, _: ReportParameters
) -> PeriodFigures:
    assert ignition is not None
    spans = Spans.between(columns.time_us)
    running = ignition_on(columns, ignition)
    return {"engine_seconds": seconds_in(spans, running, periods.boundaries_us)}


ENGINE_HOURS = Report(
    "engine_hours",
    "Engine hours",
    "Time with the ignition on, from the device's ignition sensor: the time from a message "
    "with the ignition on to the next one, a silence counted up to 3,600 s (as the device's "
    "engine hours counter counts). Null for a device without an ignition sensor.",
    figures=(Figure("engine_seconds", "Engine time", Unit.SECONDS),),
    compute=on_messages(engine_hours_of, sensor_type=SensorType.IGNITION),
    chart_figure="engine_seconds",
)


# ---- idling ------------------------------------------------------------------------------


def idling_of(
    columns: Columns, ignition: SensorDefinition | None, periods: Periods, params: ReportParameters
) -> PeriodFigures:
    assert ignition is not None
    time_us, boundaries = columns.time_us, periods.boundaries_us
    spans = Spans.between(time_us)
    idle = idle_at(columns, ignition)
    found = runs(idle, spans, time_us)
    starts = time_us[found.first]
    long = (found.end_us - starts) >= params.min_idle_s * 1_000_000
    return {
        "idle_seconds": seconds_in(spans, idle, boundaries),
        "idle_periods": _starts_per_period(starts[long], periods),
        "long_idle_seconds": time_in_periods(starts[long], found.end_us[long], boundaries),
    }


IDLING = Report(
    "idling",
    "Idling",
    "Time with the ignition on and the speed below the minimum moving speed (5 km/h), from "
    "the device's ignition sensor and GPS speed (a message without a speed keeps the one "
    "before it). `idle_periods` counts the unbroken idle periods of at least `min_idle_s` "
    "(default 300 s), in the period where each starts; `long_idle_seconds` is their time. "
    "Null for a device without an ignition sensor.",
    figures=(
        Figure("idle_seconds", "Idle time", Unit.SECONDS),
        Figure("idle_periods", "Idle periods", Unit.COUNT),
        Figure("long_idle_seconds", "Time in idle periods", Unit.SECONDS),
    ),
    compute=on_messages(idling_of, sensor_type=SensorType.IGNITION),
    chart_figure="idle_seconds",
    parameters=("min_idle_s",),
)


def engine_and_idle_of(
    columns: Columns, ignition: SensorDefinition | None, periods: Periods, _: ReportParameters
) -> PeriodFigures:
    """Engine time and idle time, as `engine_hours` and `idling` count them."""
    assert ignition is not None
    spans = Spans.between(columns.time_us)
    boundaries = periods.boundaries_us
    return {
        "engine_seconds": seconds_in(spans, ignition_on(columns, ignition), boundaries),
        "idle_seconds": seconds_in(spans, idle_at(columns, ignition), boundaries),
    }


# ---- speeding ----------------------------------------------------------------------------


def speeding_of(
    columns: Columns, _: SensorDefinition | None, periods: Periods, params: ReportParameters
) -> PeriodFigures:
    time_us, boundaries = columns.time_us, periods.boundaries_us
    spans = Spans.between(time_us)
    speed = columns.speed
    fast = np.nan_to_num(speed, nan=0.0) > params.threshold
    episodes: Runs = runs(fast, spans, time_us)
    return {
        "episodes": _starts_per_period(time_us[episodes.first], periods),
        "speeding_seconds": seconds_in(spans, fast, boundaries),
        "max_speed": _max_per_period(time_us, speed, periods),
        "speeding_distance_m": _distance_in_spans(columns, spans, fast[:-1], boundaries),
    }


SPEEDING = Report(
    "speeding",
    "Speeding",
    "Driving above `threshold` km/h (default 90), from GPS speed: `episodes` are unbroken runs "
    "of messages above it (counted in the period where each starts), `speeding_seconds` the "
    "time from each such message to the next, `speeding_distance_m` the distance between "
    "their fixes, `max_speed` the highest speed of any message in the period.",
    figures=(
        Figure("episodes", "Episodes", Unit.COUNT),
        Figure("speeding_seconds", "Time speeding", Unit.SECONDS),
        Figure("max_speed", "Max speed", Unit.KMH, Total.MAX, decimals=1),
        Figure("speeding_distance_m", "Distance speeding", Unit.METRES),
    ),
    compute=on_messages(speeding_of, sensor_type=None),
    chart_figure="speeding_seconds",
    parameters=("threshold",),
)


# ---- shared ------------------------------------------------------------------------------


def _starts_per_period(starts_us: np.ndarray, periods: Periods) -> FloatArray:
    """How many of the things starting at these instants start in each period."""
    index = periods.index_of(starts_us)
    return np.bincount(index[index >= 0], minlength=len(periods)).astype(np.float64)


def _max_per_period(time_us: np.ndarray, values: FloatArray, periods: Periods) -> FloatArray:
    """The highest value of the messages in each period (NaN: none has one)."""
    highest = np.full(len(periods), np.nan)
    index = periods.index_of(time_us)
    inside = (index >= 0) & ~np.isnan(values)
    np.fmax.at(highest, index[inside], values[inside])
    return highest


def _distance_in_spans(
    columns: Columns, spans: Spans, counted: np.ndarray, boundaries: np.ndarray
) -> FloatArray:
    """The distance between successive fixes over the counted spans, per period; a span cut
    short by the silence cap carries the same share of its distance."""
    lat, lon = columns.lat, columns.lon
    distance = np.nan_to_num(distances_m(lat[:-1], lon[:-1], lat[1:], lon[1:]), nan=0.0)
    full_length = (columns.time_us[1:] - columns.time_us[:-1]).astype(np.float64)
    share = np.divide(
        spans.length_us.astype(np.float64),
        full_length,
        out=np.ones_like(full_length),
        where=full_length > 0,
    )
    amount = (distance * share)[counted]
    return spread(spans.start[counted], spans.end[counted], amount, boundaries)
