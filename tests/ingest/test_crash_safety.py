"""Crash safety: the server process is killed (SIGKILL) while devices are sending, restarted on
the same database and port, and the devices resend what was not acknowledged, as real trackers
do. Every acknowledged message must then be stored exactly once, and nothing never sent may be.
"""

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from conftest import channel_port, free_port, make_settings, run_in_db
from fleetplane import bootstrap
from fleetplane.devices.models import Device as DeviceRow
from fleetplane.messages.models import StoredMessage
from fleetplane.simulator.encoding import encode_black_box, encode_data, encode_login
from fleetplane.simulator.route import Fix
from fleetplane.simulator.runner import device_imeis, device_reports

FLEETPLANE = str(Path(sys.executable).parent / "fleetplane")
DEVICE_COUNT = 5
KILLS = 2
MAX_BLACK_BOX = 50  # small black boxes: many packets in flight, so a kill lands between some
# Recent enough that no retention rule applies to it; whole seconds, as devices send.
START = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
ANSWER_TIMEOUT = 10.0
RECONNECT_PAUSE = 0.05
DEVICE_DEADLINE = 60.0  # a device still holding messages after this long is a failure


class ServerProcess:
    """`fleetplane serve` as operators run it, on a fixed port so it can come back there."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [FLEETPLANE, "serve", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_until_healthy(60)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power cut or the OOM killer."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_until_healthy(self, seconds: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"the server did not start:\n{self.log()}")


class Device(threading.Thread):
    """A tracker that keeps its reports in memory until the server acknowledges them.

    Each step records one to three new reports; while connected it sends the oldest waiting
    reports (one as `#D#`, several as `#B#`) and waits for the answer. A lost connection keeps
    everything unacknowledged for the next connection.
    """

    def __init__(self, imei: str, port: int, reports: Iterator[Fix], seed: int) -> None:
        super().__init__(name=f"device {imei}", daemon=True)
        self.imei = imei
        self.port = port
        self.reports = reports
        self.rng = random.Random(seed)
        self.memory: deque[Fix] = deque()
        self.sent: set[datetime] = set()
        self.acked: list[datetime] = []
        self.unanswered = 0  # packets whose answer never came (the server died first)
        self.problems: list[str] = []  # answers no device should ever get
        self.stop_recording = threading.Event()
        self.halt = threading.Event()  # the test is over (or failed): stop at once
        self._sock: socket.socket | None = None
        self._buffer = b""

    def run(self) -> None:
        deadline = time.monotonic() + DEVICE_DEADLINE
        try:
            while not self._done():
                if time.monotonic() > deadline:
                    self.problems.append(f"{len(self.memory)} reports never acknowledged")
                    return
                if not self.stop_recording.is_set():
                    self._record(self.rng.randint(1, 3))
                self._step()
        finally:
            self._hang_up()

    def _done(self) -> bool:
        emptied = self.stop_recording.is_set() and not self.memory
        return emptied or bool(self.problems) or self.halt.is_set()

    def _record(self, count: int) -> None:
        for _ in range(count):
            self.memory.append(next(self.reports))

    def _step(self) -> None:
        try:
            if self._sock is None:
                self._connect()
            if not self.problems:
                self._send_oldest()
        except OSError:  # refused, reset or closed: the server is down or restarting
            self._hang_up()
            time.sleep(RECONNECT_PAUSE)

    def _connect(self) -> None:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_TIMEOUT)
        self._buffer = b""
        answer = self._ask(encode_login(self.imei))
        if answer != "#AL#1":
            self.problems.append(f"login answered {answer!r}")

    def _send_oldest(self) -> None:
        batch = list(self.memory)[:MAX_BLACK_BOX]
        packet = encode_data(batch[0]) if len(batch) == 1 else encode_black_box(batch)
        self.sent.update(fix.time for fix in batch)
        try:
            answer = self._ask(packet)
        except OSError:
            self.unanswered += 1
            raise
        self._acknowledge(batch, answer)

    def _acknowledge(self, batch: list[Fix], answer: str) -> None:
        expected = "#AD#1" if len(batch) == 1 else f"#AB#{len(batch)}"
        if answer != expected:
            self.problems.append(f"{len(batch)} reports answered {answer!r}")
            return
        for fix in batch:
            self.memory.popleft()
            self.acked.append(fix.time)

    def _ask(self, packet: bytes) -> str:
        assert self._sock is not None
        self._sock.sendall(packet)
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode()

    def _hang_up(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def test_acknowledged_messages_survive_kills_and_none_is_invented(
    empty_database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(server_env(empty_database_url, tmp_path), tmp_path / "server.log")
    server.start()
    fleet: list[Device] = []
    kill_delays: list[float] = []
    try:
        device_ids, port = seed_channel_and_devices(server, empty_database_url, tmp_path)
        fleet = start_fleet(device_ids, port)
        for _ in range(KILLS):
            wait_for_new_acks(fleet, server)
            kill_delays.append(round(random.uniform(0.1, 0.8), 2))
            time.sleep(kill_delays[-1])  # let the fleet be in the middle of its exchanges
            server.kill()
            server.start()
        wait_for_new_acks(fleet, server)
        finish(fleet)
    finally:
        halt(fleet)
        server.stop()
    context = f"kills after {kill_delays} s; server log:\n{server.log()}"
    assert not [d.problems for d in fleet if d.problems], context
    assert sum(d.unanswered for d in fleet) > 0, f"no packet was in flight at a kill; {context}"
    check_database(empty_database_url, tmp_path, device_ids, fleet)


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLEETPLANE_DATA_DIR": str(data_dir),
        "FLEETPLANE_DATABASE_URL": database_url,
        "FLEETPLANE_RATE_LIMIT": "0",
        "FLEETPLANE_DEVICE_HOST": "127.0.0.1",
        "FLEETPLANE_LOG_LEVEL": "warning",
    }


def seed_channel_and_devices(
    server: ServerProcess, database_url: str, data_dir: Path
) -> tuple[dict[str, str], int]:
    """A provider (as `fleetplane provider create` makes it), an enabled Wialon IPS channel and
    its devices; returns ({imei: device id}, channel port)."""
    settings = make_settings(database_url, data_dir)
    created = run_in_db(settings, lambda s: bootstrap.create_provider(s, "Crash test provider"))
    assert created.api_key is not None
    headers = {"x-platform-api-key": created.api_key}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
        port = channel_port()
        channel = api.post(
            "/api/channels",
            json={"name": "Trackers", "protocol": "wialon_ips", "transport": "tcp", "port": port},
        )
        assert channel.status_code == 201, channel.text
        device_ids = {}
        for imei in device_imeis("35000000000", DEVICE_COUNT):
            body = {"channel_id": channel.json()["id"], "unique_id": imei, "name": imei}
            device = api.post("/api/devices", json=body)
            assert device.status_code == 201, device.text
            device_ids[imei] = device.json()["id"]
    return device_ids, port


def start_fleet(device_ids: dict[str, str], port: int) -> list[Device]:
    fleet = [
        Device(imei, port, device_reports("crash", index, START, 1), seed=index)
        for index, imei in enumerate(device_ids)
    ]
    for device in fleet:
        device.start()
    return fleet


def wait_for_new_acks(fleet: list[Device], server: ServerProcess, seconds: float = 20) -> None:
    """Until every device has had a packet acknowledged by the server running now."""
    counts = [len(device.acked) for device in fleet]
    deadline = time.monotonic() + seconds
    while any(len(d.acked) <= count for d, count in zip(fleet, counts, strict=True)):
        problems = [d.problems for d in fleet if d.problems]
        if problems or time.monotonic() > deadline:
            raise AssertionError(f"devices stalled: {problems}\n{server.log()}")
        time.sleep(0.02)


def finish(fleet: list[Device]) -> None:
    """Devices stop recording and empty their memory (or give up at their deadline)."""
    for device in fleet:
        device.stop_recording.set()
    for device in fleet:
        device.join(timeout=DEVICE_DEADLINE + ANSWER_TIMEOUT)
        assert not device.is_alive(), f"{device.name} hung"


def halt(fleet: list[Device]) -> None:
    for device in fleet:
        device.halt.set()
    for device in fleet:
        device.join(timeout=ANSWER_TIMEOUT + 1)


def check_database(
    database_url: str, data_dir: Path, device_ids: dict[str, str], fleet: list[Device]
) -> None:
    rows = stored_keys(database_url, data_dir)
    for device in fleet:
        device_id = device_ids[device.imei]
        stored = [moment for stored_id, moment in rows if stored_id == device_id]
        acked = set(device.acked)
        assert len(acked) == len(device.acked), "a report was acknowledged twice"
        assert len(stored) == len(set(stored)), "a report is stored twice"
        missing = acked - set(stored)
        assert not missing, f"{device.imei}: acknowledged but lost: {sorted(missing)[:5]}"
        invented = set(stored) - device.sent
        assert not invented, f"{device.imei}: stored but never sent: {sorted(invented)[:5]}"
        # The devices emptied their memory, so everything they sent was acknowledged in the end.
        assert set(stored) == acked
    assert {device_id for device_id, _ in rows} <= set(device_ids.values())


def stored_keys(database_url: str, data_dir: Path) -> list[tuple[str, datetime]]:
    async def read(session: Any) -> list[tuple[str, datetime]]:
        statement = select(DeviceRow.id, StoredMessage.device_time).join(
            DeviceRow, DeviceRow.seq == StoredMessage.device_seq
        )
        return [(row.id, row.device_time) for row in await session.execute(statement)]

    return run_in_db(make_settings(database_url, data_dir), read)
