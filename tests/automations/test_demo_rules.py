"""The demo: each demo customer has a depot, a corridor and two automations (speeding, leaving
the depot), and the simulated trucks make them fire."""

import asyncio
import time
from pathlib import Path
from typing import Any

from conftest import Api, fresh_database, make_settings, run_in_db, server_with
from fleetplane import bootstrap
from fleetplane.channels.service import ChannelPolicy
from fleetplane.core.db import migrate
from fleetplane.ingest.gateway import cannot_bind
from fleetplane.simulator.runner import run_simulation

WAIT_SECONDS = 30.0


def test_the_demo_rules_fire_on_the_simulated_trucks(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        settings = make_settings(url, tmp_path)
        asyncio.run(migrate(settings))
        policy = ChannelPolicy.of(settings)

        def probe(port: int, transport: str) -> str | None:
            return cannot_bind(settings.device_host, port, transport)

        run_in_db(settings, lambda session: bootstrap.seed_demo(session, policy, probe))
        # Seeding again (every start does) adds nothing, and gives a fresh key.
        demo = run_in_db(settings, lambda session: bootstrap.seed_demo(session, policy, probe))
        assert demo.api_key is not None and demo.wialon_port is not None
        with server_with(url, tmp_path, step_interval_seconds=0.05) as running:
            api = Api(running.base_url, demo.api_key)
            customers = [
                api.as_customer(c["id"]) for c in api.get("/api/customers").json()["items"]
            ]
            rules: dict[str, str] = {}
            for customer in customers:
                places = customer.get("/module/geofences").json()["items"]
                assert sorted(p["name"] for p in places) == ["City corridor", "Depot"]
                listed = customer.get("/module/automations").json()["items"]
                assert len(listed) == 2 and all(rule["enabled"] for rule in listed)
                rules |= {rule["id"]: rule["trigger"]["type"] for rule in listed}

            # Twenty simulated minutes of the fleet, in twenty seconds.
            asyncio.run(
                run_simulation(
                    "127.0.0.1", demo.wialon_port, devices=10, rate=100, speedup=60, duration=20,
                    disconnect_probability=0.0,
                )
            )  # fmt: skip
            fired: set[str] = set()
            visits: list[Any] = []
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline and (len(fired) < 2 or not visits):
                fired, visits = _fired_and_visits(customers)
                time.sleep(0.5)
            assert {rules[rule_id] for rule_id in fired} == {"speeding", "geofence_exit"}
            assert visits


def _fired_and_visits(customers: list[Api]) -> tuple[set[str], list[Any]]:
    fired: set[str] = set()
    visits: list[Any] = []
    for customer in customers:
        listed = customer.get("/module/automations/notifications", params={"limit": 1000})
        fired |= {n["automation_id"] for n in listed.json()["items"]}
        visits += customer.get("/module/geofences/visits", params={"limit": 1000}).json()["items"]
    return fired, visits
