"""The fuel report: levels from a `fuel_level` sensor, fills, drains and consumption.

The level is first smoothed with a median filter (`smoothing` messages, centred), which
removes the spikes a float sensor sends when the vehicle brakes or tilts and keeps the steps
of a fill. On the smoothed levels:

- a **fill** is a rise of at least `fill_threshold` litres within `fuel_window_s` seconds:
  an unbroken rise of the smoothed level (flat stretches of up to `PAUSE_S` inside it
  allowed), from the last message at its lowest level to the first at its highest;
- a **drain** is a fall of at least `drain_threshold` litres within `fuel_window_s`, while
  the vehicle does not move (below 5 km/h at every message of the fall): fuel leaving a
  parked vehicle is not being burnt. Starting or stopping to move ends a rise or fall, so
  the driving before a drain is not part of it;
- **consumption** = level at the start + fills - level at the end, the levels at a period's
  edges read off the smoothed levels (linear between the messages around the edge), so the
  periods' consumption adds up to the whole range's.

A fill or drain belongs to the period where it starts. Drains are part of consumption (the
fuel is gone); `drained_l` says how much of it left while parked.
"""

import numpy as np
import numpy.typing as npt

from fleetplane.analytics.message_reports import MIN_MOVING_SPEED_KMH, known_speed
from fleetplane.analytics.messages_read import FloatArray, on_messages, sensor_values
from fleetplane.analytics.periods import Periods
from fleetplane.analytics.report import (
    Figure,
    PeriodFigures,
    Report,
    ReportParameters,
    Total,
    Unit,
    rounded,
)
from fleetplane.messages.columns import Columns
from fleetplane.sensors.calculation import SensorDefinition, SensorType

IntArray = npt.NDArray[np.int64]
LITRE_DECIMALS = 1
# A level that stays put longer than this ends a rise or fall: what follows is another one.
PAUSE_S = 300


def smoothed(levels: FloatArray, window: int) -> FloatArray:
    """The median of each level and its neighbours, `window` messages centred on it (an even
    window grows by one). Near the ends the window shrinks evenly on both sides, so it stays
    centred: the first and last levels are kept as they are."""
    half = max(window, 1) // 2
    count = len(levels)
    out = levels.copy()
    if half == 0 or count < 3:
        return out
    if count > 2 * half:
        windows = np.lib.stride_tricks.sliding_window_view(levels, 2 * half + 1)
        out[half : count - half] = np.median(windows, axis=1)
    for index in range(min(half, count)):
        out[index] = np.median(levels[: 2 * index + 1])
        end = count - 1 - index
        out[end] = np.median(levels[2 * end - count + 1 :])
    return out


def level_moves(
    levels: FloatArray, time_us: IntArray, parked: npt.NDArray[np.bool_]
) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.bool_]]:
    """The rises and falls of the levels: (direction +1/-1, index of the last message at the
    level a move starts from, index of the first at the level it reaches, whether it happened
    while parked).

    A move goes on through short flat stretches; it ends where the direction turns, where
    the level stays flat longer than `PAUSE_S`, and where the vehicle starts or stops
    moving (a drain while parked is told apart from the driving before it)."""
    change = np.diff(levels)
    moving = np.flatnonzero(change != 0)
    if len(moving) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=np.bool_)
    direction = np.sign(change[moving]).astype(np.int64)
    while_parked = parked[moving] & parked[moving + 1]
    new_move = np.ones(len(moving), dtype=np.bool_)
    flat_us = time_us[moving[1:]] - time_us[moving[:-1] + 1]
    new_move[1:] = (
        (direction[1:] != direction[:-1])
        | (while_parked[1:] != while_parked[:-1])
        | (flat_us > PAUSE_S * 1_000_000)
    )
    starts = np.flatnonzero(new_move)
    ends = np.append(starts[1:], len(moving)) - 1
    return direction[starts], moving[starts], moving[ends] + 1, while_parked[starts]


def fuel_of(
    columns: Columns, sensor: SensorDefinition | None, periods: Periods, params: ReportParameters
) -> PeriodFigures:
    assert sensor is not None
    count = len(periods)
    raw = sensor_values(columns, sensor)
    speed = known_speed(columns)
    with_level = ~np.isnan(raw)
    levels = smoothed(raw[with_level], params.smoothing)
    time_us = columns.time_us[with_level]
    speed = speed[with_level]
    if len(levels) == 0:
        nothing = np.full(count, np.nan)
        zero = np.zeros(count)
        return {
            "start_level_l": nothing,
            "end_level_l": nothing,
            "fills": zero,
            "filled_l": zero,
            "drains": zero,
            "drained_l": zero,
            "consumed_l": nothing,
        }
    parked = speed < MIN_MOVING_SPEED_KMH
    direction, low, high, while_parked = level_moves(levels, time_us, parked)
    amount = np.abs(levels[high] - levels[low])
    quick = (time_us[high] - time_us[low]) <= params.fuel_window_s * 1_000_000
    fills = (direction > 0) & quick & (amount >= params.fill_threshold)
    drains = (direction < 0) & quick & while_parked & (amount >= params.drain_threshold)
    period_of_start = periods.index_of(time_us[low])
    edges = np.interp(periods.boundaries_us.astype(np.float64), time_us, levels)
    start_level = _rounded(edges[:-1])
    end_level = _rounded(edges[1:])
    filled = _rounded(_sum_per_period(period_of_start[fills], amount[fills], count))
    return {
        "start_level_l": start_level,
        "end_level_l": end_level,
        "fills": _count_per_period(period_of_start[fills], count),
        "filled_l": filled,
        "drains": _count_per_period(period_of_start[drains], count),
        "drained_l": _sum_per_period(period_of_start[drains], amount[drains], count),
        # From the figures as shown, so a row's consumption is its other figures' sum.
        "consumed_l": start_level + filled - end_level,
    }


def _count_per_period(index: IntArray, count: int) -> FloatArray:
    inside = index[index >= 0]
    return np.bincount(inside, minlength=count).astype(np.float64)


def _sum_per_period(index: IntArray, amounts: FloatArray, count: int) -> FloatArray:
    inside = index >= 0
    return np.bincount(index[inside], weights=amounts[inside], minlength=count).astype(np.float64)


def _rounded(litres: FloatArray) -> FloatArray:
    return np.array([rounded(float(value), LITRE_DECIMALS) for value in litres], dtype=float)


FUEL = Report(
    "fuel",
    "Fuel",
    "From the device's fuel level sensor (null for a device without one). The level is "
    "smoothed with a median filter of `smoothing` messages (default 5). A fill is a rise of at "
    "least `fill_threshold` litres (default 10) within `fuel_window_s` (default 900 s); a "
    "drain a fall of at least `drain_threshold` litres (default 10) within `fuel_window_s` "
    "while the vehicle does not move (below 5 km/h). Consumption = the level at the start + "
    "fills - the level at the end. A fill or drain counts in the period where it starts.",
    figures=(
        Figure("start_level_l", "Level at start", Unit.LITRES, Total.NONE, LITRE_DECIMALS),
        Figure("end_level_l", "Level at end", Unit.LITRES, Total.NONE, LITRE_DECIMALS),
        Figure("fills", "Fills", Unit.COUNT),
        Figure("filled_l", "Filled", Unit.LITRES, decimals=LITRE_DECIMALS),
        Figure("drains", "Drains", Unit.COUNT),
        Figure("drained_l", "Drained", Unit.LITRES, decimals=LITRE_DECIMALS),
        Figure("consumed_l", "Consumed", Unit.LITRES, decimals=LITRE_DECIMALS),
    ),
    compute=on_messages(fuel_of, sensor_type=SensorType.FUEL_LEVEL),
    chart_figure="consumed_l",
    parameters=("fill_threshold", "drain_threshold", "fuel_window_s", "smoothing"),
)
