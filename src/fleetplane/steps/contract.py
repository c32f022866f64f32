"""The pipeline step contract: what a domain implements to derive data from stored messages.

A step runs after the messages are committed and their devices answered, so it can neither
delay nor block an acknowledgement. The runner (`steps.runner`) feeds each step every device's
new messages in device-time order, in batches, and commits the step's output together with
its progress mark for the device; when late data arrives (a black box older than the mark) it
asks the step to rewind that device and feeds it again from there. The same contract lets a
worker process run the steps: all the state is in the database.

A step is registered in `registry.STEPS`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.telemetry import Message


@dataclass(frozen=True, slots=True)
class StepDevice:
    """The device a step works on: its ids, and whose it is (for the rows the step writes)."""

    id: str
    seq: int
    provider_id: str
    customer_id: str | None


class Step(Protocol):
    # Unique and stable: the step's progress is stored under it.
    name: str
    # What it reads: the messages the device's validity filter kept (False), or all (True).
    reads_filtered: bool

    async def process(
        self, session: AsyncSession, device: StepDevice, messages: Sequence[Message]
    ) -> None:
        """Takes in the device's next messages (newer than any it was given before, oldest
        first). Writes through `session` and never commits: the runner commits the output
        together with the step's new mark. Raising fails this batch of this device only; it
        is given again later."""
        ...

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        """Late data: undoes what the step derived from the device's messages at or after
        `from_time`, and returns the time from which they are to be given again: `from_time`,
        or earlier when a piece of its output (a trip, a visit) began before it."""
        ...
