"""The pipeline steps' process, started by the server (`steps.process.StepProcess`):
`python -m fleetplane.step_worker FD`, where FD is its end of the socket pair to the server."""

import asyncio
import gc
import os
import signal
import sys

from fleetplane.registry import STEPS
from fleetplane.steps.process import run_child

# How much lower than the server its CPU share is when both want the CPU (see `nice`).
NICENESS = 10


def main() -> None:
    fd = int(sys.argv[1])
    # Ctrl-C reaches the whole process group: the server decides, and its going ends the link.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The steps are work that may wait: when the machine is busy, the intake, which devices
    # wait on, gets the CPU first (measured: docs/benchmarks.md).
    os.nice(NICENESS)
    # What was imported lives as long as the process: left out of every garbage collection.
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # uvloop is optional (uvicorn[standard] brings it)
        asyncio.run(run_child(fd, STEPS))
        return
    uvloop.run(run_child(fd, STEPS))


if __name__ == "__main__":
    main()
