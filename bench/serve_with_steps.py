"""`fleetplane serve` with pipeline steps that do nothing, for `fleetplane bench ingest --steps N`:
what running steps costs by itself (taking each device's new messages from the intake, or
reading them back, claiming and moving every step's marks), with no work of a step's own on top.

Usage: python bench/serve_with_steps.py N [--without=NAME,...] serve [fleetplane serve's options]

`--without` leaves those registered steps out (what one step costs: with it against without).
"""

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import app as platform
from fleetplane import registry
from fleetplane.cli import app
from fleetplane.steps.contract import DeviceMessages, StepDevice


class DoNothingStep:
    reads_filtered = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        return None

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        return from_time


def main() -> None:
    count = int(sys.argv.pop(1))
    if sys.argv[1].startswith("--without="):
        without = {name for name in sys.argv.pop(1).split("=", 1)[1].split(",") if name}
        unknown = without - {step.name for step in registry.STEPS}
        if unknown:
            raise SystemExit(f"no registered pipeline step named {', '.join(sorted(unknown))}")
        # The app factory reads this list when the server starts.
        registry.STEPS[:] = [step for step in registry.STEPS if step.name not in without]
    steps = [DoNothingStep(f"do_nothing_{number}") for number in range(1, count + 1)]
    create_app = platform.create_app

    def create_app_with_steps(settings: Any = None, companions: Any = ()) -> Any:
        return create_app(settings, companions, extra_steps=steps)

    # `fleetplane serve` imports the factory when it runs, so it finds this one.
    platform.create_app = create_app_with_steps  # type: ignore[assignment]
    app()


if __name__ == "__main__":
    main()
