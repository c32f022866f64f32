"""The rules of a device's driver assignments, with no database: the pipeline step, its
rewind and the manual changes of the API all apply these, so they agree.

- **Readings.** A message's driver key is read from the device's first `driver_key` sensor,
  or else from the `driver_key` parameter (the Wialon IPS `Ibutton` field). A message with a
  key reads that code; a message with sensor data but no key is an empty reading (no key in
  the reader); a message with no sensor data at all (a Wialon `#SD#` short packet, a bare
  position) is no reading and changes nothing.
- **Key assignments.** A reading whose code is a key code of one of the device's customer's
  drivers assigns that driver from the message's time, until the reading changes to another
  driver, an unknown code or empty (its `own_end`). Codes of the same driver continue one
  assignment; the same code again changes nothing.
- **One driver at a time.** A device's assignments never overlap: an assignment that starts
  while another is in effect ends that one at its start. A key assignment is ended by a manual
  one that starts at or after it (a manual one wins a tie); a manual one is ended by a key one
  that starts after it. So each assignment's `end` is the earlier of its `own_end` and the
  first start of the other source after its own start (`key_end`, `manual_end`), whatever
  order the two arrived in, which is what lets late data be recomputed.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from fleetplane.sensors.calculation import SensorDefinition, compute_value
from fleetplane.telemetry import Message

# Where `messages.service.add_stored_params` puts a message's driver key.
DRIVER_KEY_PARAMETER = "driver_key"
MAX_KEY_CODE = 64


class Source(StrEnum):
    KEY = "key"
    MANUAL = "manual"


class NoReading:
    """A message without sensor data: it neither assigns nor ends."""

    def __repr__(self) -> str:
        return "NO_READING"


NO_READING = NoReading()
Reading = str | None | NoReading


def match_key(code: str) -> str:
    """How a key code is compared: without surrounding spaces, in upper case (trackers print
    hexadecimal ids in either case)."""
    return code.strip().upper()


def key_reading(message: Message, sensor: SensorDefinition | None) -> Reading:
    """The message's driver key as a match key, None when the reader is empty, or NO_READING
    when the message carries no sensor data at all."""
    if not message.params and message.inputs is None and message.outputs is None:
        return NO_READING
    if sensor is not None:
        value = compute_value(sensor, message.params, message.inputs, message.outputs)
    else:
        value = message.params.get(DRIVER_KEY_PARAMETER)
    if value is None or isinstance(value, bool):
        return None
    code = match_key(str(value))
    return code[:MAX_KEY_CODE] if code else None


@dataclass(slots=True)
class Span:
    """An assignment as the rules see it; `stored`: already in the database."""

    id: str
    driver_id: str
    customer_id: str
    source: Source
    start: datetime
    end: datetime | None
    own_end: datetime | None
    stored: bool = True
    changed: bool = False

    def in_effect_at(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)

    def end_at(self, at: datetime) -> None:
        """Ends it at `at` unless it has ended already."""
        if self.end is None or at < self.end:
            self.end = at
            self.changed = True


def key_end(
    own_end: datetime | None, start: datetime, manual_starts: Iterable[datetime]
) -> datetime | None:
    """A key assignment's end: its own, or the first manual start at or after its start."""
    return _earliest(own_end, (s for s in manual_starts if s >= start))


def manual_end(
    own_end: datetime | None, start: datetime, key_starts: Iterable[datetime]
) -> datetime | None:
    """A manual assignment's end: its own, or the first key start after its start."""
    return _earliest(own_end, (s for s in key_starts if s > start))


def _earliest(own_end: datetime | None, starts: Iterable[datetime]) -> datetime | None:
    candidates = [*starts, *([own_end] if own_end is not None else [])]
    return min(candidates, default=None)


@dataclass(slots=True)
class DeviceTimeline:
    """What a run of one device's messages can change: the key assignment whose reading is
    still going (`current`, own_end null), and the manual assignments that end after the run's
    first message or never."""

    device_id: str
    current: Span | None
    manuals: list[Span]
    new: list[Span] = field(default_factory=list)
    stored: list[Span] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stored = [*self.manuals, *([self.current] if self.current else [])]

    def read(self, at: datetime, driver: tuple[str, str] | None, new_id: Callable[[], str]) -> None:
        """A reading at `at` that names `driver` (driver id, customer id) or no driver."""
        current = self.current
        if (None if current is None else current.driver_id) == (
            None if driver is None else driver[0]
        ):
            return
        if current is not None:
            current.own_end = at
            current.changed = True
            current.end_at(at)
            self.current = None
        if driver is None:
            return
        for manual in self.manuals:
            if manual.start < at and manual.in_effect_at(at):
                manual.end_at(at)
        started = Span(
            new_id(),
            driver[0],
            driver[1],
            Source.KEY,
            at,
            key_end(None, at, (m.start for m in self.manuals)),
            None,
            stored=False,
        )
        self.new.append(started)
        self.current = started

    def changed(self) -> list[Span]:
        """The stored assignments to write back."""
        return [span for span in self.stored if span.changed]
