"""Simulated trackers over real TCP against a listener built on the platform's Wialon session."""

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from simulated_fleet_server import DRIVER_MESSAGE, WialonTestServer

from fleetplane.ingest.protocols.wialon_ips import LoginResult
from fleetplane.simulator.route import Fix
from fleetplane.simulator.runner import (
    device_imeis,
    device_reports,
    run_simulation,
    schedule,
)
from fleetplane.simulator.stats import LatencyHistogram, SimulationStats
from fleetplane.telemetry import Message

START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
SEED = 11
DEVICES = 3
RATE = 30.0  # each device every 0.1 s
SPEEDUP = 100.0  # 10 simulated seconds per report


@pytest.fixture
async def server() -> AsyncIterator[WialonTestServer]:
    server = WialonTestServer()
    await server.start()
    yield server
    await server.close()


async def simulate(port: int, duration: float | None, **options: Any) -> SimulationStats:
    settings: dict[str, Any] = {
        "seed": SEED,
        "speedup": SPEEDUP,
        "start_time": START,
        "disconnect_probability": 0.0,
        "answer_timeout": 2.0,
        **options,
    }
    return await run_simulation("127.0.0.1", port, DEVICES, RATE, duration, **settings)


def sent_reports(index: int, count: int) -> list[Fix]:
    interval = schedule(DEVICES, RATE, SPEEDUP).simulated_interval
    return list(itertools.islice(device_reports(SEED, index, START, interval), count))


def assert_same_reports(received: list[Message], sent: list[Fix]) -> None:
    assert [message.device_time for message in received] == [fix.time for fix in sent]
    for message, fix in zip(received, sent, strict=True):
        assert message.params["odometer"] == fix.odometer
        assert message.params["fuel"] == fix.fuel
        assert message.driver_key == fix.driver_key
        if fix.lat is not None and message.lat is not None:
            assert message.lat == pytest.approx(fix.lat, abs=2e-6)


def assert_nothing_lost_or_repeated(server: WialonTestServer) -> int:
    """Each device's messages are the first n reports of its route, each exactly once."""
    total = 0
    for index, imei in enumerate(device_imeis("86000000000", DEVICES)):
        received = server.messages_of(imei)
        in_time_order = sorted(received, key=lambda message: message.device_time)
        assert len({message.device_time for message in received}) == len(received), "repeated"
        assert_same_reports(in_time_order, sent_reports(index, len(received)))
        total += len(received)
    return total


async def test_trackers_report_and_replay_their_black_box_after_a_disconnect(
    server: WialonTestServer,
) -> None:
    stats = await simulate(server.port, 2.0, disconnect_probability=0.15, offline_reports=(3, 6))

    assert stats.devices == DEVICES
    assert stats.disconnects >= 1 and 1 <= stats.reconnects <= stats.disconnects
    assert stats.acked == stats.sent == assert_nothing_lost_or_repeated(server)
    assert stats.acked >= 0.7 * RATE * 2.0
    assert stats.rejected == stats.errors == stats.login_refusals == stats.dropped == 0
    assert stats.latency_p50 is not None and stats.latency_p99 is not None
    assert 0 < stats.latency_p50 <= stats.latency_p99 < 1.0
    assert stats.connected == 0  # every connection is closed at the end

    black_boxes = [packet for packet in server.packets if packet.kind == "B"]
    assert len(black_boxes) == stats.black_boxes >= 1
    for packet in black_boxes:
        times = [message.device_time for message in packet.messages]
        assert times == sorted(times) and len(packet.messages) >= 2
        assert all(message.from_black_box for message in packet.messages)
    for packet in server.packets:
        if packet.kind == "D":
            assert len(packet.messages) == 1 and not packet.messages[0].from_black_box
    assert set(server.logins) == set(device_imeis("86000000000", DEVICES))


def test_the_default_imeis_are_the_demo_devices() -> None:
    assert device_imeis("86000000000", 10) == [f"86000000000{n:04d}" for n in range(10)]
    assert device_imeis("86000000000", 10)[0] == "860000000000000"
    assert device_imeis("1", 3) == ["100000000000000", "100000000000001", "100000000000002"]
    wide = device_imeis("8600000000000", 150)  # three digits left for 150 devices
    assert wide[0] == "8600000000000000" and len(set(wide)) == 150
    with pytest.raises(ValueError, match="digits"):
        device_imeis("86x", 1)


def test_time_is_compressed_by_whole_device_seconds() -> None:
    plan = schedule(devices=10, rate=10, speedup=10)
    assert (plan.real_interval, plan.simulated_interval, plan.speedup) == (1.0, 10, 10.0)
    fast = schedule(devices=1, rate=100, speedup=10)  # 0.01 s apart: still 1 s of device time
    assert (fast.simulated_interval, fast.speedup) == (1, 100.0)
    with pytest.raises(ValueError, match="positive"):
        schedule(devices=0, rate=1, speedup=1)


async def test_a_run_with_a_duration_ends_at_about_the_current_time(
    server: WialonTestServer,
) -> None:
    before = datetime.now(UTC)
    await run_simulation("127.0.0.1", server.port, 2, 20, 1.0, speedup=30)
    latest = max(message.device_time for packet in server.packets for message in packet.messages)
    assert abs((latest - before).total_seconds()) < 60


async def test_a_refused_login_is_counted_and_retried_with_back_off() -> None:
    server = WialonTestServer(verdict=LoginResult.REFUSED)
    await server.start()
    try:
        stats = await simulate(server.port, 1.2)
    finally:
        await server.close()
    assert stats.acked == stats.sent == 0 and not server.packets
    assert stats.login_refusals >= DEVICES
    # Back-off: about 0.5 s, then 1 s, between attempts, not one attempt per report.
    assert len(server.logins) <= 3 * DEVICES
    assert stats.last_error is not None and "login refused" in stats.last_error
    assert stats.buffered > 0  # the reports wait in the devices' memory


async def test_trackers_wait_for_a_server_that_is_down_and_send_their_backlog() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = WialonTestServer()
    simulation = asyncio.create_task(simulate(port, 2.5))
    await asyncio.sleep(0.8)
    await server.start(port)
    try:
        stats = await simulation
    finally:
        await server.close()
    assert stats.errors >= DEVICES and stats.last_error is not None
    assert "cannot connect" in stats.last_error
    assert stats.acked == stats.sent == assert_nothing_lost_or_repeated(server)
    for imei in device_imeis("86000000000", DEVICES):
        first = next(packet for packet in server.packets if packet.imei == imei)
        assert first.kind == "B"  # what was recorded while the server was down


async def test_server_commands_between_a_packet_and_its_answer_are_skipped() -> None:
    server = WialonTestServer(command_before_answers=DRIVER_MESSAGE)
    await server.start()
    try:
        stats = await simulate(server.port, 1.0)
    finally:
        await server.close()
    assert stats.acked == stats.sent > 0 and stats.errors == 0
    assert stats.commands == stats.acked


async def test_a_stop_event_ends_the_run_gracefully(server: WialonTestServer) -> None:
    stop = asyncio.Event()
    seen: list[SimulationStats] = []
    simulation = asyncio.create_task(
        simulate(server.port, None, stop=stop, progress=seen.append, progress_interval=0.1)
    )
    await asyncio.sleep(0.7)
    stop.set()
    stats = await simulation
    assert len(seen) >= 3 and seen[-1].acked <= stats.acked
    assert stats.acked == stats.sent == assert_nothing_lost_or_repeated(server)


async def test_cancelling_the_run_closes_every_connection(server: WialonTestServer) -> None:
    simulation = asyncio.create_task(simulate(server.port, None))
    await asyncio.sleep(0.5)
    simulation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await simulation
    for _ in range(50):
        if not server.open_connections:
            break
        await asyncio.sleep(0.02)
    assert server.open_connections == 0  # the server saw every tracker hang up


def test_latency_percentiles_are_within_two_percent() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(0.5) is None
    for millisecond in range(1, 1001):
        histogram.add(millisecond / 1000)
    assert histogram.count == 1000
    assert histogram.percentile(0.5) == pytest.approx(0.5, rel=0.02)
    assert histogram.percentile(0.99) == pytest.approx(0.99, rel=0.02)
    assert histogram.percentile(1.0) == pytest.approx(1.0, rel=0.02)
