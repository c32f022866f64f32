"""`fleetplane simulate` as an operator runs it: a real process against a real listener."""

import asyncio
import socket
import sys
from pathlib import Path

from simulated_fleet_server import WialonTestServer

FLEETPLANE = str(Path(sys.executable).parent / "fleetplane")


async def simulate(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        FLEETPLANE,
        "simulate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_simulate_reports_to_a_listener_and_prints_a_summary() -> None:
    server = WialonTestServer()
    await server.start()
    try:
        code, output = await simulate(
            "--port", str(server.port), "--devices", "3", "--rate", "15", "--duration", "1.5"
        )
    finally:
        await server.close()
    assert code == 0, output
    received = sum(len(packet.messages) for packet in server.packets)
    assert received > 0
    assert set(server.logins) == {"860000000000000", "860000000000001", "860000000000002"}
    assert "acknowledged" in output and f"{received:,}" in output


async def test_simulate_fails_when_nothing_is_acknowledged() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, output = await simulate("--port", str(port), "--devices", "1", "--duration", "0.5")
    assert code == 1
    assert "cannot connect" in output
