"""The validity filter of a device: which messages derived data (position, odometer, trips)
must ignore. Filtered messages are still stored, flagged, so nothing a device sent is lost."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleetplane.core.geo import distance_m
from fleetplane.telemetry import Message

DEFAULT_MAX_FUTURE_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class ValidityRules:
    min_satellites: int | None = None
    max_hdop: float | None = None
    max_speed_kmh: float | None = None  # jump filter: speed implied by the previous fix
    reject_zero_coordinates: bool = False
    max_future_seconds: int = DEFAULT_MAX_FUTURE_SECONDS

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> "ValidityRules":
        return cls(**(settings or {}))


def mark_filtered(
    rules: ValidityRules,
    messages: list[Message],
    previous_fix: tuple[datetime, float, float] | None,
    now: datetime,
) -> None:
    """Sets `filtered` on each message the rules reject; `previous_fix` is (time, lat, lon)
    of the device's last valid fix before these messages, for the jump filter."""
    for message in sorted(messages, key=lambda m: m.device_time):
        message.filtered = _rejected(rules, message, previous_fix, now)
        if not message.filtered and message.lat is not None and message.lon is not None:
            previous_fix = (message.device_time, message.lat, message.lon)


def _rejected(
    rules: ValidityRules,
    message: Message,
    previous_fix: tuple[datetime, float, float] | None,
    now: datetime,
) -> bool:
    if message.device_time - now > timedelta(seconds=rules.max_future_seconds):
        return True
    if not message.has_position:
        return False  # nothing to judge: a report without a fix is kept as it is
    if rules.reject_zero_coordinates and message.lat == 0 and message.lon == 0:
        return True
    if rules.min_satellites is not None and (message.satellites or 0) < rules.min_satellites:
        return True
    if rules.max_hdop is not None and message.hdop is not None and message.hdop > rules.max_hdop:
        return True
    return rules.max_speed_kmh is not None and _jumps(rules.max_speed_kmh, message, previous_fix)


def _jumps(
    max_speed_kmh: float, message: Message, previous: tuple[datetime, float, float] | None
) -> bool:
    if previous is None:
        return False
    seconds = abs((message.device_time - previous[0]).total_seconds())
    metres = distance_m(previous[1], previous[2], message.lat or 0.0, message.lon or 0.0)
    if seconds == 0:
        return metres > 1_000  # the same second, kilometres apart
    return metres / seconds * 3.6 > max_speed_kmh
