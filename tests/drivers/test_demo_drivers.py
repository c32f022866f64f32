"""The demo: its customers have the drivers module and drivers whose iButtons the simulated
trackers report, so the demo's trucks get their drivers assigned as they drive."""

import asyncio
import time
from pathlib import Path

from conftest import Api, fresh_database, make_settings, run_in_db, server_with
from fleetplane import bootstrap
from fleetplane.channels.service import ChannelPolicy
from fleetplane.core.db import migrate
from fleetplane.ingest.gateway import cannot_bind
from fleetplane.simulator.runner import DEFAULT_SEED, device_driver_keys, run_simulation

WAIT_SECONDS = 30.0


def test_the_demo_trucks_report_their_drivers_keys(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        settings = make_settings(url, tmp_path)
        asyncio.run(migrate(settings))
        policy = ChannelPolicy.of(settings)

        def probe(port: int, transport: str) -> str | None:
            return cannot_bind(settings.device_host, port, transport)

        demo = run_in_db(settings, lambda session: bootstrap.seed_demo(session, policy, probe))
        assert demo.api_key is not None and demo.wialon_port is not None
        with server_with(url, tmp_path, step_interval_seconds=0.05) as running:
            api = Api(running.base_url, demo.api_key)
            customers = api.get("/api/customers").json()["items"]
            trucks = api.get("/api/devices", params={"limit": 100}).json()["items"]
            number_of = {truck["id"]: int(truck["unique_id"][-4:]) for truck in trucks}
            keys_of = {
                number: set(device_driver_keys(DEFAULT_SEED, number)) for number in range(10)
            }
            driver_keys: dict[str, str] = {}
            for customer in customers:
                assert "drivers" in customer["modules"]
                drivers = api.as_customer(customer["id"]).get("/module/drivers").json()["items"]
                assert len(drivers) == 8
                driver_keys |= {d["id"]: d["key_codes"][0] for d in drivers}
                own_trucks = {
                    number_of[t["id"]] for t in trucks if t["customer_id"] == customer["id"]
                }
                expected = set().union(*(keys_of[number] for number in own_trucks))
                assert {d["key_codes"][0] for d in drivers} == expected

            # Six simulated minutes of the fleet, in a few seconds: engines start, keys go in.
            asyncio.run(
                run_simulation(
                    "127.0.0.1", demo.wialon_port, devices=10, rate=50, speedup=60, duration=6,
                    disconnect_probability=0.0,
                )
            )  # fmt: skip
            found: list[dict[str, str]] = []
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline and len(found) < 4:
                found = [
                    item
                    for customer in customers
                    for item in api.as_customer(customer["id"])
                    .get("/module/drivers/assignments", params={"limit": 1000})
                    .json()["items"]
                ]
                time.sleep(0.2)
            assert len(found) >= 4, found
            for item in found:
                assert item["source"] == "key"
                assert driver_keys[item["driver_id"]] in keys_of[number_of[item["device_id"]]]
