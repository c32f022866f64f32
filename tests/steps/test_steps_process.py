"""The pipeline steps in a process of their own: the server starts it, it does the registered
steps' work on what the intake stored, its change notices reach the server's live state, and
when it dies it is started again and catches up, while devices go on being answered."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    RunningServer,
    Tenant,
    create_channel,
    fresh_database,
    make_tenant,
    send_wialon,
    server_with,
)
from fleetplane.runtime import runtime_of
from fleetplane.steps.process import StepProcess

FAST = {"step_interval_seconds": 0.05, "step_poll_seconds": 0.5}


@pytest.fixture
def platform(backend: str, tmp_path: Path) -> Iterator[tuple[RunningServer, Tenant]]:
    with fresh_database(backend, tmp_path) as url, server_with(url, tmp_path, **FAST) as running:
        yield running, make_tenant(running, "Steps process provider", customers=1)


def steps_process(running: RunningServer) -> StepProcess:
    process = runtime_of(running.app).step_runner
    assert isinstance(process, StepProcess), "the server runs its steps in its own process"
    return process


def wait_for(condition: Any, seconds: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def add_device(tenant: Tenant, channel: dict[str, Any]) -> tuple[str, str]:
    unique_id = f"35433011{channel['port']:07d}"
    body = tenant.device_body(
        channel_id=channel["id"], unique_id=unique_id, customer_id=tenant.customers[0]["id"]
    )
    device = tenant.api.post("/api/devices", json=body).json()
    sensor = {"device_id": device["id"], "name": "Engine", "type": "ignition", "parameter": "in1"}
    assert tenant.api.post("/api/sensors", json=sensor).status_code == 201
    return device["id"], unique_id


def minute(n: int) -> str:
    """A position n minutes after 10:00 on 2026-11-25, ignition on (input 1)."""
    return f"251126;10{n:02d}00;5656.9760;N;024{6 + n:02d}.3120;E;40;90;12;9;0.9;1;0;NA;NA;"


def counted_hours(tenant: Tenant, device_id: str) -> float:
    read = tenant.module_api(0).get(f"/module/devices/{device_id}").json()
    return float(read["engine_hours_counted"])


def test_the_steps_run_in_a_child_and_their_notices_reach_the_server(
    platform: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = platform
    process = steps_process(running)
    wait_for(lambda: process.pid, what="the steps' process started")
    assert process.pid != os.getpid()
    channel = create_channel(tenant.api, enabled=True)
    device_id, unique_id = add_device(tenant, channel)
    send_wialon(channel["port"], unique_id, [minute(0), minute(30)])
    # Engine time is counted by the device counters step only: from the child, its notice
    # reaches the server's live state.
    wait_for(lambda: counted_hours(tenant, device_id) == pytest.approx(0.5), what="30 minutes")


def test_a_killed_child_is_started_again_and_catches_up(
    platform: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = platform
    process = steps_process(running)
    channel = create_channel(tenant.api, enabled=True)
    device_id, unique_id = add_device(tenant, channel)
    send_wialon(channel["port"], unique_id, [minute(0), minute(6)])
    wait_for(lambda: counted_hours(tenant, device_id) == pytest.approx(0.1), what="6 minutes")
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: process.pid is None, what="the server saw its child go")
    # Devices are answered while no child runs (send_wialon checks every answer).
    send_wialon(channel["port"], unique_id, [minute(12), minute(18)])
    wait_for(lambda: process.pid not in (None, first), what="a new child")
    assert process.starts == 2
    wait_for(lambda: counted_hours(tenant, device_id) == pytest.approx(0.3), what="18 minutes")
