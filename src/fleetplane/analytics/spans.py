"""Time between messages, split into a report's periods.

A span runs from one message to the next. What a span carries (its length, the distance
driven in it) belongs to the periods it covers, shared by time when it crosses a boundary. A
silence longer than `MAX_GAP_SECONDS` counts only up to that (the engine may have stopped, the
device may have been off), as the device counters count engine hours.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetplane.devices.service import MAX_GAP_SECONDS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_GAP_US = int(MAX_GAP_SECONDS * 1_000_000)
MICROSECONDS = 1_000_000


@dataclass(frozen=True, slots=True)
class Spans:
    """The spans after each message but the last: [start, end) in epoch microseconds, the end
    capped at `MAX_GAP_US` after the start; `whole` is false where the cap cut one short."""

    start: IntArray
    end: IntArray
    whole: BoolArray

    @classmethod
    def between(cls, time_us: IntArray) -> "Spans":
        start = time_us[:-1]
        following = time_us[1:]
        end = np.minimum(following, start + MAX_GAP_US)
        return cls(start, end, following - start <= MAX_GAP_US)

    @property
    def length_us(self) -> IntArray:
        return self.end - self.start


def spread(start: IntArray, end: IntArray, amount: FloatArray, boundaries: IntArray) -> FloatArray:
    """How much of `amount` falls in each period between `boundaries`, each interval's amount
    spread evenly over [start, end). The intervals are in time order and do not overlap
    (spans of successive messages), which makes this one pass: the amount before each
    boundary is a cumulative sum less the part of the interval the boundary cuts."""
    if len(start) == 0:
        return np.zeros(len(boundaries) - 1, dtype=np.float64)
    running = np.cumsum(amount)
    before = np.searchsorted(start, boundaries, side="left")  # intervals starting before
    last = np.maximum(before - 1, 0)
    total_before = np.where(before > 0, running[last], 0.0)
    length = (end[last] - start[last]).astype(np.float64)
    beyond = np.clip(end[last] - boundaries, 0, None).astype(np.float64)
    cut = np.divide(
        amount[last] * beyond, length, out=np.zeros_like(length), where=(before > 0) & (beyond > 0)
    )
    return np.diff(total_before - cut)


def time_in_periods(start: IntArray, end: IntArray, boundaries: IntArray) -> FloatArray:
    """Seconds of the intervals [start, end) in each period."""
    lengths = (end - start).astype(np.float64)
    return spread(start, end, lengths, boundaries) / MICROSECONDS


def seconds_in(spans: Spans, state: BoolArray, boundaries: IntArray) -> FloatArray:
    """Seconds in each period of the spans after the messages in `state` (a span's time
    follows the state at its first message)."""
    counted = state[:-1]
    return time_in_periods(spans.start[counted], spans.end[counted], boundaries)


@dataclass(frozen=True, slots=True)
class Runs:
    """Runs of successive messages in a state (idle, speeding): each run's first message, its
    last, and where its time ends (the end of its last span)."""

    first: IntArray
    last: IntArray
    end_us: IntArray

    def __len__(self) -> int:
        return len(self.first)


def runs(state: BoolArray, spans: Spans, time_us: IntArray) -> Runs:
    """The runs of messages with `state` true. A silence longer than `MAX_GAP_SECONDS` ends a
    run (nothing is known of the time after the cap)."""
    n = len(state)
    # A message continues the run of the one before when both are in the state and the span
    # between them was whole.
    joined = np.zeros(n, dtype=np.bool_)
    joined[1:] = state[1:] & state[:-1] & spans.whole
    first = np.flatnonzero(state & ~joined)
    if len(first) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Runs(empty, empty, empty)
    next_first = np.append(first[1:], n)
    # Each run's last message: the last in the state before the next run's first one.
    in_state = np.flatnonzero(state)
    last = in_state[np.searchsorted(in_state, next_first, side="left") - 1]
    # Runs end where their last span ends (a silence: at the cap); the very last message
    # has no span after it, so a run ending there ends at it.
    span_end = np.append(spans.end, time_us[-1]) if n > 1 else time_us.copy()
    ends_at = np.where(spans_of(last, n), span_end[last], time_us[last])
    return Runs(first.astype(np.int64), last.astype(np.int64), ends_at.astype(np.int64))


def spans_of(last: IntArray, n: int) -> BoolArray:
    """Whether each message has a span after it (all but the last message)."""
    return last < n - 1
