"""Counters of simulated trackers and the totals of a simulation."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


class LatencyHistogram:
    """Latencies in buckets 2 % wide, so memory stays bounded however long a run lasts.

    A percentile is the upper edge of its bucket: at most 2 % above the exact value.
    """

    _FLOOR = 1e-5  # seconds; anything faster lands in the first bucket
    _GROWTH = 1.02

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        ratio = max(seconds, self._FLOOR) / self._FLOOR
        self._buckets[math.ceil(math.log(ratio, self._GROWTH))] += 1
        self.count += 1

    def merge(self, other: LatencyHistogram) -> None:
        self._buckets.update(other._buckets)
        self.count += other.count

    def percentile(self, share: float) -> float | None:
        """The latency that `share` (0..1) of the answers did not exceed; None without any."""
        if not self.count:
            return None
        rank = max(1, math.ceil(share * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return self._FLOOR * self._GROWTH**bucket
        raise AssertionError("the bucket counts add up to the total")


@dataclass(slots=True)
class TrackerCounters:
    """What one simulated tracker did. Counts are of messages unless they say otherwise."""

    sent: int = 0  # written to the server, including resends after a lost answer
    acked: int = 0  # confirmed as stored (`#AD#1`, or counted in `#AB#n`)
    rejected: int = 0  # answered with an error code, or left out of `#AB#n`
    errors: int = 0  # failed connects, lost connections, timeouts, unexpected answers
    login_refusals: int = 0  # `#AL#` other than 1
    logins: int = 0  # accepted logins: the first one and every reconnection
    disconnects: int = 0  # simulated losses of coverage
    black_boxes: int = 0  # `#B#` packets answered
    dropped: int = 0  # buffered messages discarded because the black box was full
    commands: int = 0  # server lines that were not the awaited answer
    buffered: int = 0  # messages waiting for the next send
    connected: bool = False
    last_error: str | None = None
    last_error_at: float = 0.0  # event loop time, to report the latest error of all trackers
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True, slots=True)
class SimulationStats:
    """Totals over every tracker; latencies in seconds, from a packet's write to its answer."""

    devices: int
    elapsed: float  # seconds of real time
    sent: int
    acked: int
    rejected: int
    errors: int
    login_refusals: int
    reconnects: int  # accepted logins after each device's first
    disconnects: int
    black_boxes: int
    dropped: int
    commands: int
    buffered: int
    connected: int  # devices online now
    latency_p50: float | None
    latency_p99: float | None
    last_error: str | None  # the most recent one, of any tracker

    @property
    def ack_rate(self) -> float:
        """Acknowledged messages per second of real time."""
        return self.acked / self.elapsed if self.elapsed > 0 else 0.0

    @classmethod
    def collect(cls, counters: Iterable[TrackerCounters], elapsed: float) -> SimulationStats:
        counters = list(counters)
        latency = LatencyHistogram()
        for tracker in counters:
            latency.merge(tracker.latency)
        failed = [tracker for tracker in counters if tracker.last_error]
        latest = max(failed, key=lambda tracker: tracker.last_error_at, default=None)
        return cls(
            devices=len(counters),
            elapsed=elapsed,
            sent=sum(tracker.sent for tracker in counters),
            acked=sum(tracker.acked for tracker in counters),
            rejected=sum(tracker.rejected for tracker in counters),
            errors=sum(tracker.errors for tracker in counters),
            login_refusals=sum(tracker.login_refusals for tracker in counters),
            reconnects=sum(max(0, tracker.logins - 1) for tracker in counters),
            disconnects=sum(tracker.disconnects for tracker in counters),
            black_boxes=sum(tracker.black_boxes for tracker in counters),
            dropped=sum(tracker.dropped for tracker in counters),
            commands=sum(tracker.commands for tracker in counters),
            buffered=sum(tracker.buffered for tracker in counters),
            connected=sum(tracker.connected for tracker in counters),
            latency_p50=latency.percentile(0.5),
            latency_p99=latency.percentile(0.99),
            last_error=latest.last_error if latest is not None else None,
        )
