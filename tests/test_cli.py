"""The command line as operators use it: real processes, real database files."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import free_port

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
        finally:
            process.terminate()
            process.wait(timeout=20)
            assert process.stdout is not None
            process.stdout.close()
    assert keys[0] != keys[1]


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
    process = subprocess.Popen(
        [FLEETPLANE, "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _read_until(process, "Uvicorn running", 60)
        headers = {f"x-many-{number}": "v" for number in range(25)}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            refused = client.get("/healthz", headers=headers)
        assert refused.status_code == 431, refused.text
        assert refused.json()["code"] == "request_header_fields_too_large"
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()


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
