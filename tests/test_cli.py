"""The command line as operators use it: real processes, real database files."""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import channel_port, free_port, make_settings, run_in_db
from fleetplane import bootstrap
from fleetplane.channels.models import Channel
from fleetplane.core.db import migrate
from fleetplane.core.ids import new_id

FLEETPLANE = str(Path(sys.executable).parent / "fleetplane")


def run(args: list[str], data_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLEETPLANE_DATA_DIR": str(data_dir),
        "FLEETPLANE_DATABASE_URL": database_url,
    }
    return subprocess.run(
        [FLEETPLANE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_init_creates_once_and_prints_the_secret_once(
    tmp_path: Path, empty_database_url: str
) -> None:
    first = run(["init", "--json"], tmp_path, empty_database_url)
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout.strip().splitlines()[-1])
    assert created["provider_id"].startswith("prv_")
    assert created["api_key"].startswith("fpk_")
    again = run(["init", "--json"], tmp_path, empty_database_url)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second == {"provider_id": created["provider_id"], "api_key": None}
    assert created["api_key"] not in again.stdout + again.stderr
    key = {"x-platform-api-key": created["api_key"]}
    human = run(["init"], tmp_path, empty_database_url)
    assert "Already initialised" in human.stdout
    assert key["x-platform-api-key"] not in human.stdout


def test_provider_create_makes_a_working_key(tmp_path: Path, database_url: str) -> None:
    result = run(["provider", "create", "Acme Telematics", "--json"], tmp_path, database_url)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(line) == {"provider_id", "api_key"}
    assert line["api_key"].startswith("fpk_")


def test_migrate(tmp_path: Path, database_url: str) -> None:
    result = run(["migrate"], tmp_path, database_url)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_a_malformed_setting_is_named(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FLEETPLANE_DATA_DIR": str(tmp_path),
        "FLEETPLANE_DEVICE_PORTS": "20000-29999,50x5",
    }
    result = subprocess.run(
        [FLEETPLANE, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "FLEETPLANE_DEVICE_PORTS: Value error, '50x5' is neither a port nor a range" in (
        result.stdout
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_demo_prints_a_key_that_works(tmp_path: Path) -> None:
    """What scripts/serve runs, on its embedded default (a SQLite file in the data dir)."""
    port = free_port()
    env = {**os.environ, "FLEETPLANE_DATA_DIR": str(tmp_path)}
    env.pop("FLEETPLANE_DATABASE_URL", None)
    keys = []
    for _ in range(2):  # a second start seeds nothing new and prints a fresh working key
        process = subprocess.Popen(
            [FLEETPLANE, "serve", "--demo", "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            output = _read_until(process, "Uvicorn running", 60)
            assert f"http://127.0.0.1:{port}/playground" in output
            key = re.search(r"fpk_[A-Za-z0-9_-]+", output).group(0)
            keys.append(key)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                customers = client.get("/api/customers", headers={"x-platform-api-key": key})
                assert customers.status_code == 200, customers.text
                items = customers.json()["items"]
                assert len(items) == 2
                devices = client.get(
                    "/module/devices",
                    headers={"x-platform-api-key": key, "x-platform-cid": items[0]["id"]},
                )
                assert devices.status_code == 200 and devices.json()["items"]
                inventory = client.get("/api/devices", headers={"x-platform-api-key": key})
                assert len(inventory.json()["items"]) == 10
                headers = {"x-platform-api-key": key, "x-platform-cid": items[0]["id"]}
                reporting = _a_reporting_device(client, headers)
                assert reporting is not None, "the demo fleet is not driving"
                values = {sensor["name"]: sensor["value"] for sensor in reporting["sensors"]}
                assert values["Fuel level"] is not None and values["Odometer"] is not None
                assert reporting["ignition"] is not None
                assert reporting["odometer_km"] == values["Odometer"]
                assert values["Engine hours"] is not None
                assert reporting["engine_hours_sensor"] == values["Engine hours"]
                # The trips module is on, and the fleet's messages go through the trip step.
                assert all("trips" in customer["modules"] for customer in items)
                listed = client.get("/module/trips/intervals", headers=headers)
                assert listed.status_code == 200, listed.text
        finally:
            process.terminate()
            process.wait(timeout=20)
            assert process.stdout is not None
            process.stdout.close()
    assert keys[0] != keys[1]


@contextmanager
def serving(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`fleetplane serve ...` until it serves; (the process, what it printed so far)."""
    process = subprocess.Popen(
        [FLEETPLANE, "serve", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        yield process, _read_until(process, "Uvicorn running", 60)
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()


def test_serve_limits_request_headers(tmp_path: Path, database_url: str) -> None:
    """`fleetplane serve` runs the server configuration the tests run, limits from settings."""
    port = free_port()
    env = {
        **os.environ,
        "FLEETPLANE_DATA_DIR": str(tmp_path),
        "FLEETPLANE_DATABASE_URL": database_url,
        "FLEETPLANE_GATEWAY": "false",
        "FLEETPLANE_MAX_HEADERS": "20",
    }
    with serving(["--port", str(port)], env):
        headers = {f"x-many-{number}": "v" for number in range(25)}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            refused = client.get("/healthz", headers=headers)
        assert refused.status_code == 431, refused.text
        assert refused.json()["code"] == "request_header_fields_too_large"


@contextmanager
def held_port(port: int) -> Iterator[None]:
    """Another program listening on `port` (if one already does, it is just as taken)."""
    try:
        holder = socket.create_server(("0.0.0.0", port))
    except OSError:
        yield
        return
    with holder:
        yield


def test_a_channel_that_cannot_listen_never_stops_the_platform(
    tmp_path: Path, empty_database_url: str
) -> None:
    """Channels saved before the port rules existed, on the API's own port, on a port another
    program holds and outside the device ports: the platform starts, and says which channel
    does not listen, why, and how to move it."""
    http_port, busy_port = free_port(), channel_port()
    settings = make_settings(empty_database_url, tmp_path)
    asyncio.run(migrate(settings))
    ports = {"api": http_port, "busy": busy_port, "outside": 30_000}

    async def seed(session: AsyncSession) -> tuple[str, dict[str, str]]:
        created = await bootstrap.create_provider(session, "Provider from before")
        ids = {}
        for name, port in ports.items():
            ids[name] = new_id("chn")
            session.add(
                Channel(
                    id=ids[name],
                    provider_id=created.provider_id,
                    name=name,
                    protocol="wialon_ips",
                    transport="tcp",
                    port=port,
                )
            )
        assert created.api_key is not None
        return created.api_key, ids

    key, ids = run_in_db(settings, seed)
    env = {
        **os.environ,
        "FLEETPLANE_DATA_DIR": str(tmp_path),
        "FLEETPLANE_DATABASE_URL": empty_database_url,
    }
    with held_port(busy_port), serving(["--port", str(http_port)], env) as (_, output):
        headers = {"x-platform-api-key": key}
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", headers=headers) as api:
            assert api.get("/healthz").status_code == 200
            listeners = {
                name: api.get(f"/api/channels/{channel_id}").json()["listener"]
                for name, channel_id in ids.items()
            }
    assert listeners == {
        "api": {
            "state": "failed",
            "reason": f"port {http_port} is the HTTP API's own port (FLEETPLANE_PORT)",
        },
        "busy": {
            "state": "failed",
            "reason": f"cannot listen on port {busy_port}: Address already in use",
        },
        "outside": {
            "state": "failed",
            "reason": "port 30000 is outside FLEETPLANE_DEVICE_PORTS (20000-29999, 5055)",
        },
    }
    for name, channel_id in ids.items():
        said = [line for line in output.splitlines() if channel_id in line]
        assert said and "ERROR" in said[0] and listeners[name]["reason"] in said[0], output
        assert f"PATCH /api/channels/{channel_id}" in said[0]


def test_serve_says_when_its_http_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = run(["serve", "--port", str(port)], tmp_path, f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}: Address already in use." in result.stdout
    assert "--port or FLEETPLANE_PORT" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_demo_moves_off_taken_device_ports(tmp_path: Path) -> None:
    """With the demo's usual Wialon IPS port held by another program, the demo says so,
    listens on a free port, and its simulated trackers drive there."""
    port = free_port()
    env = {**os.environ, "FLEETPLANE_DATA_DIR": str(tmp_path)}
    env.pop("FLEETPLANE_DATABASE_URL", None)
    with held_port(20332), serving(["--demo", "--port", str(port)], env) as (_, output):
        moved = re.search(r"Wialon IPS channel listens on port (\d+) instead", output)
        assert moved is not None and "Port 20332 is not free" in output, output
        key = re.search(r"fpk_[A-Za-z0-9_-]+", output).group(0)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            headers = {"x-platform-api-key": key}
            channels = client.get("/api/channels", headers=headers).json()["items"]
            wialon = next(c for c in channels if c["protocol"] == "wialon_ips")
            assert wialon["port"] == int(moved.group(1)) != 20332
            assert wialon["listener"] == {"state": "listening", "reason": None}
            customer = client.get("/api/customers", headers=headers).json()["items"][0]
            headers["x-platform-cid"] = customer["id"]
            assert _a_reporting_device(client, headers) is not None, "the demo is not driving"


def _a_reporting_device(client: httpx.Client, headers: dict[str, str]) -> dict | None:
    """The demo's simulated trackers report over Wialon IPS within seconds of the start."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        devices = client.get("/module/devices", headers=headers).json()["items"]
        reporting = [device for device in devices if device["position"]]
        if reporting:
            return reporting[0]
        time.sleep(0.5)
    return None


def _read_until(process: subprocess.Popen[str], marker: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    output = ""
    assert process.stdout is not None
    while marker not in output:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"server did not start:\n{output}")
        output += process.stdout.readline()
    return output
