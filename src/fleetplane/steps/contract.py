"""The pipeline step contract: what a domain implements to derive data from stored messages.

A step runs after the messages are committed and their devices answered, so it can neither
delay nor block an acknowledgement. The runner (`steps.runner`) gives a step rounds of devices,
each device with its new messages in device-time order, and commits the step's output together
with its progress marks; when late data arrives (a black box older than a mark) it asks the
step to rewind that device and gives it the messages again from there. The same contract lets a
worker process run the steps: all the state is in the database.

A step is registered in `registry.STEPS`.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.telemetry import Message


@dataclass(frozen=True, slots=True)
class StepDevice:
    """The device a step works on: its ids, and whose it is (for the rows the step writes)."""

    id: str
    seq: int
    provider_id: str
    customer_id: str | None


@dataclass(frozen=True, slots=True)
class DeviceMessages:
    """One device's next messages in a round: newer than any the step was given before for
    it, oldest first, never empty.

    `follows_on`: this process gave the step the device's messages just before these, in a
    round whose transaction committed, and nothing has moved the step's progress on the
    device since (no rewind, no other process, no failure). What the step kept in memory of
    the device after that round is then still what the database holds, and need not be read
    again; when False, the database is the truth."""

    device: StepDevice
    messages: Sequence[Message]
    follows_on: bool = False


@dataclass(frozen=True, slots=True)
class NewMessages:
    """What the intake just committed for one device, handed to the runner so that steps need
    not read it back: the device's valid messages with `after` < device time <= `until`, as
    they read back from storage (`messages.service.stored_form`), oldest first. `after` is the
    device's newest valid message time before (None: it had none)."""

    after: datetime | None
    until: datetime
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class NewRows:
    """`NewMessages` as the rows the intake wrote (`messages.service.to_row`'s values, by
    column): what it hands to a steps runner in another process. They are cheaper for the
    intake to send than messages (its CPU is the one every device waits on), and the other
    side decodes them as it would decode them read back (`messages.service.from_stored_row`).
    The device's rows with `after` < device time <= `until`, one per time, oldest first, the
    ones the validity filter marked included (their flags say so once decoded)."""

    after: datetime | None
    until: datetime
    times_us: list[int]  # device time, microseconds since the epoch (`messages.columns`)
    lat_e7: list[int | None]
    lon_e7: list[int | None]
    packed: list[bytes]

    def extend(self, following: "NewRows") -> "NewRows":
        """These rows and the `following` ones (whose `after` is this `until`), in place."""
        self.times_us.extend(following.times_us)
        self.lat_e7.extend(following.lat_e7)
        self.lon_e7.extend(following.lon_e7)
        self.packed.extend(following.packed)
        return NewRows(
            self.after, following.until, self.times_us, self.lat_e7, self.lon_e7, self.packed
        )

    def __len__(self) -> int:
        return len(self.times_us)


# What a steps runner takes of the intake's new messages (`NewMessages`, `NewRows`), or
# nothing (it reads them back).
HandOver = Literal["messages", "rows", None]

Item = TypeVar("Item")

# What a step announces as live events (an enter, a trip's start) it announces only when it
# happened within this long before the device's newest message in hand: a re-computation after
# late data, or a black box of old data, finds such things again, and live streams (and what
# reacts to them) want what happens now.
ANNOUNCE_WITHIN = timedelta(minutes=10)

# Devices a step works through between two turns of the event loop (see `in_slices`).
DEVICES_PER_SLICE = 50


async def in_slices(
    items: Sequence[Item], size: int = DEVICES_PER_SLICE
) -> AsyncIterator[Sequence[Item]]:
    """A round's devices (or anything made of them) in slices, the event loop running between
    two: steps run in the intake's process and loop, so a round computed in one go would hold
    back every acknowledgement due meanwhile (tens of ms for a few hundred devices)."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]


class Step(Protocol):
    # Unique and stable: the step's progress is stored under it.
    name: str
    # What it reads: the messages the device's validity filter kept (False), or all (True).
    reads_filtered: bool

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        """Takes in a round: up to a few hundred devices, each with its next messages. Writes
        through `session` and never commits: the runner commits the output together with the
        step's new marks. Compute first and write last, a statement per table for the whole
        round (on SQLite the one writer lock is held from the first write to the commit, and
        the intake waits for it). What it keeps in memory between rounds it may use for the
        devices that follow on (`DeviceMessages.follows_on`). Raising fails the round; the
        runner then gives the step each device on its own, so only the devices it still fails
        on are held back and retried."""
        ...

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Late data: undoes what the step derived from the device's messages at or after
        `from_time`, and returns the time from which they are to be given again: `from_time`,
        or earlier when a piece of its output (a trip, a visit) began before it."""
        ...
