"""The message row codec's speed: microseconds per message to make a row and to read it back.

The messages are the ones `fleetplane bench storage` stores: simulated trackers' fixes
(fleetplane.simulator) encoded as Wialon IPS `#D#` packets, or `#B#` black boxes after a
coverage loss, and decoded by the protocol decoder. Each step runs over all of them, several
times; the median run is reported, on one core, without a database:

- to_row: `messages.service.to_row`, what the ingest pipeline's writer does per message;
- pack: `codec.pack` alone, with the fields and parameters to_row would give it;
- unpack: `codec.unpack`, what every read (API pages, trips) does per stored row.

    python bench/codec.py [--messages N] [--devices N] [--repeats N]
"""

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from fleetplane.cli import load_bench
from fleetplane.messages import codec, service
from fleetplane.messages.models import FLAG_BLACK_BOX, FLAG_FILTERED, FLAG_TIME_MISSING
from fleetplane.telemetry import Message

# The messages `fleetplane bench storage` stores: the same trackers, packets and decoder.
storage = load_bench("storage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=9)
    arguments = parser.parse_args()

    messages = realistic_messages(arguments.messages, arguments.devices)
    rows = [service.to_row(1, message) for message in messages]
    pack_arguments = [_pack_arguments(message) for message in messages]
    stored = [(row["device_time"], row["packed"]) for row in rows]
    packed_bytes = sum(len(packed) for _, packed in stored) / len(stored)

    steps: dict[str, Callable[[], object]] = {
        "to_row": lambda: [service.to_row(1, message) for message in messages],
        "pack": lambda: [codec.pack(*values) for values in pack_arguments],
        "unpack": lambda: [codec.unpack(moment, packed) for moment, packed in stored],
    }
    print(
        f"{len(messages):,} messages of {arguments.devices} simulated trackers, "
        f"{packed_bytes:.1f} packed bytes each on average; "
        f"Python {platform.python_version()}, median of {arguments.repeats} runs"
    )
    for name, step in steps.items():
        runs = [_seconds(step) for _ in range(arguments.repeats)]
        per_message = statistics.median(runs) / len(messages) * 1e6
        spread = f"{min(runs) / len(messages) * 1e6:.2f}-{max(runs) / len(messages) * 1e6:.2f}"
        print(f"  {name:<7} {per_message:6.2f} us/message  (runs {spread})")
    return 0


def realistic_messages(count: int, devices: int) -> list[Message]:
    """`count` decoded messages, taken from the trackers in turn as their packets come."""
    trackers = [storage.tracker_packets(number) for number in range(devices)]
    messages: list[Message] = []
    while len(messages) < count:
        for packets in trackers:
            messages.extend(next(packets))
    return messages[:count]


def _pack_arguments(message: Message) -> tuple[Any, ...]:
    """What to_row hands to codec.pack for this message."""
    params: dict[str, Any] = dict(message.params)
    params.update(
        (f"adc{number}", value)
        for number, value in enumerate(message.adc, start=1)
        if value is not None
    )
    if message.driver_key is not None:
        params["driver_key"] = message.driver_key
    fields = {
        "altitude": message.altitude,
        "speed": message.speed,
        "course": message.course,
        "satellites": None if message.satellites is None else int(message.satellites),
        "hdop": message.hdop,
        "inputs": message.inputs,
        "outputs": message.outputs,
    }
    flags = (
        (FLAG_BLACK_BOX if message.from_black_box else 0)
        | (FLAG_TIME_MISSING if message.device_time_missing else 0)
        | (FLAG_FILTERED if message.filtered else 0)
    )
    return message.device_time, message.received_at, fields, params, flags


def _seconds(step: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
