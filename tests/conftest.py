"""Test fixtures: a real server (uvicorn on a real port) over a real database.

Every test runs on SQLite; when FLEETPLANE_TEST_DATABASE_URL is set, every test runs on
PostgreSQL too, in a database the suite creates next to the one named and drops at the end.
"""

import asyncio
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fleetplane import bootstrap
from fleetplane.app import create_app
from fleetplane.config import Settings, normalise_database_url
from fleetplane.core.db import migrate, run_platform_work
from fleetplane.core.http_server import Parser, server_config
from fleetplane.core.permissions import Level, full_set
from fleetplane.ingest.gateway import cannot_bind
from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.module_catalog import module_names
from fleetplane.runtime import Runtime, runtime_of
from fleetplane.steps.contract import Step

PG_URL_ENV = "FLEETPLANE_TEST_DATABASE_URL"
Result = TypeVar("Result")


def _backends() -> list[Any]:
    postgres = pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not os.environ.get(PG_URL_ENV),
            reason=f"PostgreSQL run skipped: set {PG_URL_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)",
        ),
    )
    return ["sqlite", postgres]


@pytest.fixture(scope="session", params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty database of the backend: a new SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'fleetplane-{uuid.uuid4().hex[:8]}.db'}"
        return
    admin_url = normalise_database_url(os.environ[PG_URL_ENV])
    name = f"fleetplane_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database the shared test server runs on, for the whole session."""
    with fresh_database(backend, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for a test that needs an empty platform."""
    with fresh_database(backend, tmp_path) as url:
        yield url


async def _admin(url: str, statement: str) -> None:
    from sqlalchemy import text

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def connect_when_listening(port: int, seconds: float = 5.0) -> socket.socket:
    """A TCP connection to a device listener, which starts just after its channel is saved."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wialon_data(body: str) -> bytes:
    covered = (body + ";").encode()
    return f"#D#{covered.decode()}{crc_text(covered)}\r\n".encode()


def send_wialon(port: int, unique_id: str, bodies: list[str]) -> None:
    """Logs in and sends each data packet, waiting for its answer (sent after the commit)."""
    with connect_when_listening(port) as sock, sock.makefile("rwb") as link:
        link.write(f"#L#2.0;{unique_id};NA;".encode())
        link.write(crc_text(f"2.0;{unique_id};NA;".encode()).encode() + b"\r\n")
        link.flush()
        assert link.readline() == b"#AL#1\r\n"
        for body in bodies:
            link.write(wialon_data(body))
            link.flush()
            assert link.readline() == b"#AD#1\r\n"


# Channels take ports from the platform's default device ports (FLEETPLANE_DEVICE_PORTS), so
# the test servers run with the default. Each port is picked at random (so concurrent runs
# rarely try the same one), checked free on this machine as a listener would bind it (TCP and
# UDP on every address), and given once per run (so no two channels of a run share one).
CHANNEL_PORTS = (20_001, 29_998)  # the range's two ends are left to the test of the range
_USUAL_PORTS = {20332, 5055}  # a running demo or `fleetplane init` server may hold them
_given_ports: set[int] = set()
_port_picker = random.Random()


def channel_port() -> int:
    """A device port for a channel: free on this machine now, and new to this run."""
    while True:
        port = _port_picker.randint(*CHANNEL_PORTS)
        if port in _given_ports or port in _USUAL_PORTS:
            continue
        _given_ports.add(port)
        if cannot_bind("0.0.0.0", port, "tcp_udp") is None:
            return port


def free_port() -> int:
    """A port for a test's HTTP server (from the kernel, outside the device ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    settings: Settings
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    app: FastAPI

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.settings.gateway and not self.thread.is_alive():
            _gateway_databases.discard(self.settings.resolved_database_url)


_gateway_databases: set[str] = set()


def _claim_gateway_database(url: str) -> None:
    if url in _gateway_databases:
        raise RuntimeError(
            f"a running test server already listens for the devices of {url}: give this one "
            "a database of its own (fresh_database) or gateway=False"
        )
    _gateway_databases.add(url)


def start_server(
    settings: Settings, parser: Parser = "auto", steps: Sequence[Step] = ()
) -> RunningServer:
    """Migrates, then runs the app under uvicorn in a thread, on a real port, configured as
    `fleetplane serve` configures it; `steps` are pipeline steps of the test's own.

    Two servers of this run with device listeners never share a database: each would listen on
    the other's channels, and a device's data would land on whichever bound the port first."""
    if settings.gateway:
        _claim_gateway_database(settings.resolved_database_url)
    asyncio.run(migrate(settings))
    port = free_port()
    settings = settings.model_copy(update={"port": port})  # what channels may not take
    app = create_app(settings, extra_steps=steps)
    config = server_config(
        app,
        settings,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        parser=parser,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        threading.Event().wait(0.01)
    return RunningServer(settings, f"http://127.0.0.1:{port}", server, thread, app)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "rate_limit": 100_000,
        "api_key_cache_seconds": 0,
        "webhook_private_addresses": True,  # the tests' receivers listen on loopback
    }
    return Settings(**{**values, **overrides})


@contextmanager
def server_with(
    database_url: str, data_dir: Path, steps: Sequence[Step] = (), **overrides: Any
) -> Iterator[RunningServer]:
    """A server of its own, with `make_settings`' settings changed by `overrides`."""
    running = start_server(make_settings(database_url, data_dir, **overrides), steps=steps)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with server_with(database_url, tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.fixture(scope="session")
def caching_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server trusting the keys and customers it read for ten minutes: calls are answered
    without the dependency chain, and what it does at once after a change can only come from
    seeing the change itself. It has a database of its own: its device listeners would
    otherwise compete with the shared server's for the ports of the same channels."""
    path = tmp_path_factory.mktemp("caching")
    with (
        fresh_database(backend, path) as url,
        server_with(url, path, api_key_cache_seconds=600) as running,
    ):
        yield running


def run_in_db(settings: Settings, work: Callable[[AsyncSession], Awaitable[Result]]) -> Result:
    """Runs platform-level database work (as the command line does) outside the server."""
    return asyncio.run(run_platform_work(settings, work))


def run_in_server(
    running: RunningServer, work: Callable[[Runtime], Awaitable[Result]], seconds: float = 30
) -> Result:
    """Runs `work(runtime)` inside the server: on its event loop, with its runtime, as a
    background job of the server process would (no HTTP)."""
    loop = running.server.servers[0].get_loop()
    work_done = asyncio.run_coroutine_threadsafe(work(runtime_of(running.app)), loop)
    return work_done.result(timeout=seconds)


_clients: dict[str, httpx.Client] = {}


def shared_client(base_url: str) -> httpx.Client:
    """One connection pool per server for the whole run (closed at the end of the session)."""
    if base_url not in _clients:
        _clients[base_url] = httpx.Client(base_url=base_url, timeout=30)
    return _clients[base_url]


@pytest.fixture(scope="session", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _clients.values():
        client.close()


class Api:
    """An HTTP client holding one key (and optionally a customer id)."""

    def __init__(self, base_url: str, key: str | None, customer_id: str | None = None) -> None:
        self.base_url = base_url
        self.key = key
        self.customer_id = customer_id
        self.http = shared_client(base_url)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {}
        if self.key is not None:
            headers["x-platform-api-key"] = self.key
        if self.customer_id is not None:
            headers["x-platform-cid"] = self.customer_id
        return {**headers, **(extra or {})}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers(kwargs.pop("headers", None))
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def as_customer(self, customer_id: str | None) -> "Api":
        return Api(self.base_url, self.key, customer_id)

    def with_key(self, key: str | None) -> "Api":
        return Api(self.base_url, key, self.customer_id)

    def new_key(self, **body: Any) -> tuple[str, dict[str, Any]]:
        """Creates a key with this key; returns (secret, key object)."""
        response = self.post("/api/api-keys", json={"name": "test key", **body})
        assert response.status_code == 201, response.text
        created = response.json()
        return created["secret"], created


def create_channel(api: Api, *, enabled: bool = False, **fields: Any) -> dict[str, Any]:
    """A Wialon IPS channel on a port no other channel has (disabled unless asked: most tests
    need a channel for their devices, not a listener)."""
    body = {"name": "Trackers", "protocol": "wialon_ips", "port": channel_port()}
    response = api.post("/api/channels", json={**body, "enabled": enabled, **fields})
    assert response.status_code == 201, response.text
    return response.json()


@dataclass
class Tenant:
    """A provider with an all-powerful key, a channel, two customers (all modules) and their
    devices."""

    provider_id: str
    api: Api
    channel_id: str = ""
    customers: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    settings: Settings | None = None  # its server's, for work in the database (`run_in_db`)

    def device_body(self, **fields: Any) -> dict[str, Any]:
        """A body for POST /api/devices on this tenant's channel."""
        return {
            "channel_id": self.channel_id,
            "unique_id": uuid.uuid4().hex[:15],
            "name": "Van",
        } | fields

    def module_api(self, customer_index: int = 0) -> Api:
        return self.api.as_customer(self.customers[customer_index]["id"])


def make_tenant(server: RunningServer, name: str = "Test provider", customers: int = 2) -> Tenant:
    created = run_in_db(server.settings, lambda s: bootstrap.create_provider(s, name))
    assert created.api_key is not None
    tenant = Tenant(created.provider_id, Api(server.base_url, created.api_key))
    tenant.settings = server.settings
    tenant.channel_id = create_channel(tenant.api)["id"]
    for index in range(customers):
        response = tenant.api.post(
            "/api/customers",
            json={"name": f"{name} customer {index}", "modules": all_module_names()},
        )
        assert response.status_code == 201, response.text
        customer = response.json()
        tenant.customers.append(customer)
        tenant.devices[customer["id"]] = []
        for number in range(2):
            device = tenant.api.post(
                "/api/devices",
                json={
                    "channel_id": tenant.channel_id,
                    "unique_id": uuid.uuid4().hex[:15],
                    "name": f"Vehicle {index}-{number}",
                    "customer_id": customer["id"],
                },
            )
            assert device.status_code == 201, device.text
            tenant.devices[customer["id"]].append(device.json())
    return tenant


def all_module_names() -> list[str]:
    return sorted(module_names())


@pytest.fixture
def tenant(server: RunningServer) -> Tenant:
    return make_tenant(server)


@pytest.fixture
def other_tenant(server: RunningServer) -> Tenant:
    return make_tenant(server, "Other provider")


FULL_PROVIDER = full_set(Level.PROVIDER)
FULL_CUSTOMER = full_set(Level.CUSTOMER)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per reason a group of tests was skipped, so a missing service is plain to see."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"SKIPPED {count} tests: {reason}", yellow=True)
