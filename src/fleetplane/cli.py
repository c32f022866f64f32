"""The `fleetplane` command."""

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.channels.service import ChannelPolicy
from fleetplane.config import Settings
from fleetplane.core.db import migrate, run_platform_work

app = typer.Typer(help="Fleetplane: fleet telematics platform.", no_args_is_help=True)
provider_app = typer.Typer(help="Manage providers.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
console = Console()
Result = TypeVar("Result")

JsonOption = Annotated[bool, typer.Option("--json", help="One line of JSON, for scripts.")]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:  # a setting's name and what is wrong, not a traceback
        for problem in error.errors():
            name = "FLEETPLANE_" + "_".join(str(part) for part in problem["loc"]).upper()
            console.print(f"[bold red]{name}:[/] {problem['msg']}", soft_wrap=True)
        raise typer.Exit(2) from None


def _in_system_transaction(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[Result]]
) -> Result:
    """Migrates, then runs `work` in one platform-level transaction."""

    async def run() -> Result:
        await migrate(settings)
        return await run_platform_work(settings, work)

    return asyncio.run(run())


@app.command()
def init(as_json: JsonOption = False) -> None:
    """Create the first provider and a key with every permission (once)."""
    settings = _settings()
    policy = ChannelPolicy.of(settings)
    result, created = _in_system_transaction(
        settings, lambda session: bootstrap.init_platform(session, policy)
    )
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    elif created:
        _show_key("Fleetplane is initialised.", result)
    else:
        console.print(f"Already initialised (provider {result.provider_id}); no new key made.")


@provider_app.command("create")
def provider_create(
    name: Annotated[str, typer.Argument(help="The provider's name.")], as_json: JsonOption = False
) -> None:
    """Create another provider on this platform, with its first key."""
    result = _in_system_transaction(
        _settings(), lambda session: bootstrap.create_provider(session, name)
    )
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    else:
        _show_key(f"Provider {name!r} created.", result)


@app.command("migrate")
def migrate_command() -> None:
    """Apply database migrations and exit."""
    settings = _settings()
    asyncio.run(migrate(settings))
    console.print("Database is up to date.")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    demo: Annotated[bool, typer.Option(help="Seed the demo provider once; print its key.")] = False,
) -> None:
    """Run the platform (migrations first)."""

    from fleetplane.app import create_app
    from fleetplane.core.http_server import server_config
    from fleetplane.ingest.gateway import cannot_bind

    settings = _settings(host=host, port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    # The HTTP port is taken first: device listeners start before the web server would bind,
    # and a channel on this port (or anything else) must not keep the API from starting.
    http_socket = _listen_http(settings)
    if demo:
        policy = ChannelPolicy.of(settings)

        def probe(port: int, transport: str) -> str | None:
            return cannot_bind(settings.device_host, port, transport)

        result = _in_system_transaction(
            settings, lambda session: bootstrap.seed_demo(session, policy, probe)
        )
    else:
        asyncio.run(migrate(settings))
    base = f"http://{settings.host}:{settings.port}"
    if demo:
        _show_key(f"Fleetplane demo: playground at {base}/playground", result)
        for moved in result.moved:
            console.print(
                f"[bold yellow]Port {moved.usual_port} is not free ({moved.reason}):[/] the "
                f"demo's {moved.name} channel listens on port [bold]{moved.port}[/] instead.",
                soft_wrap=True,  # one line, whatever the terminal's width
            )
    else:
        console.print(f"Fleetplane on {base} (playground: {base}/playground)")
    companions = []
    if demo and result.wialon_port is not None:
        companions.append(_demo_fleet(settings.host, result.wialon_port))
    application = create_app(settings, companions)
    _settle_garbage_collector()
    config = server_config(application, settings)
    server = _server_class()(config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        server.run(sockets=[http_socket])
    if not server.started:
        raise typer.Exit(3)


def _server_class() -> type:
    import uvicorn

    class ServerOnBoundSocket(uvicorn.Server):
        """uvicorn on a socket bound beforehand, saying when it serves as it does when it
        binds the socket itself."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                url = f"http://{self.config.host}:{self.config.port}"
                uvicorn_log = logging.getLogger("uvicorn.error")
                uvicorn_log.info("Uvicorn running on %s (Press CTRL+C to quit)", url)

    return ServerOnBoundSocket


def _listen_http(settings: Settings) -> socket.socket:
    """The HTTP API's socket, bound and listening (connections wait in its backlog until the
    server accepts them); a clear message and exit when the port cannot be had."""
    from fleetplane.ingest.gateway import address_family, why_unbound

    family = address_family(settings.host)
    try:
        return socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    except OSError as error:
        console.print(
            f"[bold red]Cannot listen on {settings.host}:{settings.port}:[/] {why_unbound(error)}. "
            "Choose another port with --port or FLEETPLANE_PORT.",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def _demo_fleet(host: str, port: int) -> Callable[[], Coroutine[Any, Any, object]]:
    """The demo's ten trackers, driving around Riga in real time over Wialon IPS."""

    async def drive() -> object:
        from fleetplane.simulator.runner import run_simulation

        device_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return await run_simulation(
            device_host, port, devices=10, rate=2.0, speedup=1.0, disconnect_probability=0.0
        )

    return drive


def _settle_garbage_collector() -> None:
    """Everything built so far lives as long as the process: keep it out of every future
    collection, and collect less often, so a busy server does not stall for full passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _show_key(title: str, result: bootstrap.ProviderWithKey) -> None:
    console.print(
        Panel.fit(
            f"provider id: [bold]{result.provider_id}[/]\n"
            f"API key:     [bold green]{result.api_key}[/]\n"
            "This key is shown once. Send it as the x-platform-api-key header.",
            title=title,
        )
    )


# --- benchmarks: the code lives in bench/ of a source checkout, not in the package ---------

bench_app = typer.Typer(help="Benchmarks (from a source checkout).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("api")
def bench_api(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per target.")] = 20,
    connections: Annotated[int, typer.Option(min=1, help="Open connections.")] = 64,
    devices: Annotated[int, typer.Option(min=1, help="Devices of the customer.")] = 1000,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Seed and serve this database (a new provider is added to it) instead "
            "of a fresh temporary SQLite file."
        ),
    ] = None,
) -> None:
    """HTTP API throughput and latency against a real server (see docs/benchmarks.md)."""
    bench = load_bench("api")
    code = bench.main(
        duration=duration,
        connections=connections,
        device_count=devices,
        database_url=database_url,
        console=console,
    )
    raise typer.Exit(code)


@bench_app.command("ingest")
def bench_ingest(
    devices: Annotated[int, typer.Option(min=1, help="Simulated trackers.")] = 200,
    duration: Annotated[int, typer.Option(min=1, help="Seconds of the flat-out phase.")] = 30,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Seed and serve this database (a new provider is added to it) instead "
            "of a fresh temporary SQLite file."
        ),
    ] = None,
    steps: Annotated[
        int,
        typer.Option(
            min=0, help="Also run this many pipeline steps that do nothing (their own cost)."
        ),
    ] = 0,
    without_step: Annotated[
        list[str] | None,
        typer.Option(help="Leave this registered pipeline step out (repeatable): its cost."),
    ] = None,
    geofences: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Make the devices a customer's with this many geofences (with --automations: "
            "the cost of the visits and automations steps; 0 and 0 for the figures without).",
        ),
    ] = None,
    automations: Annotated[
        int | None,
        typer.Option(min=0, help="The customer's automations (see --geofences)."),
    ] = None,
) -> None:
    """Wialon IPS ingest rate and ack latency against a real server (see docs/benchmarks.md)."""
    bench = load_bench("ingest")
    rules = None
    if geofences is not None or automations is not None:
        rules = bench.Rules(geofences or 0, automations or 0)
    code = bench.main(
        duration=duration,
        device_count=devices,
        database_url=database_url,
        steps=steps,
        without=without_step or [],
        rules=rules,
        console=console,
    )
    raise typer.Exit(code)


@bench_app.command("drivers-step")
def bench_drivers_step(
    devices: Annotated[int, typer.Option(min=1, help="Devices per round.")] = 200,
    messages: Annotated[int, typer.Option(min=1, help="Messages per device and round.")] = 50,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of each kind.")] = 20,
    database_url: Annotated[
        str | None, typer.Option(help="Seed and use this database instead of a SQLite file.")
    ] = None,
) -> None:
    """The drivers' pipeline step alone: CPU per message, statements per round."""
    bench = load_bench("drivers_step")
    raise typer.Exit(bench.main(devices, messages, rounds, database_url, console))


@bench_app.command("geofences")
def bench_geofences(
    geofences: Annotated[int, typer.Option(min=1, help="Geofences of mixed shapes.")] = 10_000,
    batch: Annotated[int, typer.Option(min=1, help="Positions tested at once.")] = 100_000,
    seconds: Annotated[float, typer.Option(min=0.1, help="How long to test.")] = 5.0,
) -> None:
    """Batched geofence point checks per second (the visits step's test), CPU only."""
    bench = load_bench("geofences")
    raise typer.Exit(bench.main(geofences, batch, seconds, console))


@bench_app.command("interval-details")
def bench_interval_details(
    devices: Annotated[int, typer.Option(min=1, help="Devices per round.")] = 200,
    messages: Annotated[int, typer.Option(min=1, help="Messages per device and round.")] = 6,
    rounds: Annotated[int, typer.Option(min=1, help="Timed rounds.")] = 30,
    database_url: Annotated[
        str | None, typer.Option(help="Seed and use this database instead of a SQLite file.")
    ] = None,
) -> None:
    """What intervals' odometers cost the trips step per round, and drivers a page."""
    bench = load_bench("interval_details")
    raise typer.Exit(bench.main(devices, messages, rounds, database_url, console))


@bench_app.command("steps")
def bench_steps(
    devices: Annotated[int, typer.Option(min=1, help="Devices per round.")] = 200,
    messages: Annotated[int, typer.Option(min=1, help="Messages per device and round.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds measured.")] = 20,
    step: Annotated[
        list[str] | None, typer.Option(help="Only this registered step (repeatable).")
    ] = None,
    geofences: Annotated[
        int | None,
        typer.Option(min=0, help="Make the devices a customer's with this many geofences."),
    ] = None,
    automations: Annotated[
        int | None, typer.Option(min=0, help="The customer's automations (see --geofences).")
    ] = None,
) -> None:
    """The registered pipeline steps' rounds alone: CPU per message and per round."""
    bench = load_bench("steps")
    rules = None
    if geofences is not None or automations is not None:
        rules = (geofences or 0, automations or 0)
    raise typer.Exit(bench.main(devices, messages, rounds, step or [], console, rules))


@bench_app.command("storage")
def bench_storage(
    messages: Annotated[int, typer.Option(min=1, help="Messages to store.")] = 1_000_000,
    devices: Annotated[int, typer.Option(min=1, help="Simulated trackers.")] = 200,
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL database to create for the run (it must not exist)."),
    ] = None,
    recreate: Annotated[
        bool, typer.Option(help="Drop that database first when it exists (a previous run's).")
    ] = False,
    sqlite: Annotated[
        bool, typer.Option(help="Store the same messages in a temporary SQLite file too.")
    ] = True,
) -> None:
    """Bytes on disk per stored message, PostgreSQL and SQLite (see docs/benchmarks.md)."""
    bench = load_bench("storage")
    code = bench.main(
        message_count=messages,
        device_count=devices,
        database_url=database_url,
        recreate=recreate,
        sqlite=sqlite,
        console=console,
    )
    raise typer.Exit(code)


@bench_app.command("trips")
def bench_trips(
    messages: Annotated[
        int, typer.Option(min=2, help="Messages of the device (a year of one every 10 s).")
    ] = 3_153_600,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Also a PostgreSQL database (migrated; a new provider and device are added)."
        ),
    ] = None,
) -> None:
    """Trip detection over one device-year of messages, read from the store (see
    docs/benchmarks.md)."""
    bench = load_bench("trips")
    raise typer.Exit(bench.main(message_count=messages, database_url=database_url, console=console))


@bench_app.command("columns")
def bench_columns(
    days: Annotated[int, typer.Option(min=1, help="Days of 10 s reports of the device.")] = 365,
    repeats: Annotated[int, typer.Option(min=1, help="Reads of the whole range.")] = 5,
    reference_days: Annotated[
        int, typer.Option(min=1, help="Days read from the rows alone, for comparison.")
    ] = 7,
    database_url: Annotated[
        str | None,
        typer.Option(help="Also on this PostgreSQL database, created for the run."),
    ] = None,
    recreate: Annotated[
        bool, typer.Option(help="Drop that database first when it exists (a previous run's).")
    ] = False,
) -> None:
    """A device-year read as numpy columns, SQLite and PostgreSQL (see docs/benchmarks.md)."""
    bench = load_bench("columns")
    code = bench.main(
        days=days,
        repeats=repeats,
        reference_days=reference_days,
        database_url=database_url,
        recreate=recreate,
        console=console,
    )
    raise typer.Exit(code)


@bench_app.command("reports")
def bench_reports(
    messages: Annotated[int, typer.Option(min=2, help="Messages of the one device.")] = 3_153_600,
    devices: Annotated[int, typer.Option(min=1, help="Devices in the big answer.")] = 130,
) -> None:
    """The reports' computation and answer formats, without the database (docs/benchmarks.md)."""
    code = load_bench("reports").main(messages=messages, devices=devices, console=console)
    raise typer.Exit(code)


@bench_app.command("mileage-report")
def bench_mileage_report(
    devices: Annotated[int, typer.Option(min=1, help="Devices of the customer.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of intervals, the range.")] = 30,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Also a PostgreSQL database (migrated; a new provider and customer are added)."
        ),
    ] = None,
) -> None:
    """A fleet's monthly mileage report through the real server, SQLite and PostgreSQL (see
    docs/benchmarks.md)."""
    bench = load_bench("mileage_report")
    raise typer.Exit(bench.main(devices, days, database_url, console))


def load_bench(name: str) -> ModuleType:
    """Imports bench/NAME.py by path, once: bench/ is beside src/ in a checkout, absent from a
    wheel. The benchmarks load their shared helpers (bench/support.py) through it too."""
    import fleetplane

    loaded = sys.modules.get(f"fleetplane_bench_{name}")
    if loaded is not None:
        return loaded
    path = Path(fleetplane.__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fleetplane_bench_{name}", path)
    if not path.is_file() or spec is None or spec.loader is None:
        console.print(
            f"[red]No benchmark at {path}.[/] Benchmarks run from a source checkout "
            "(pip install -e .), not from an installed wheel."
        )
        raise typer.Exit(2)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# --- tracker simulator ----------------------------------------------------------------------


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Wialon IPS listener address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Its TCP port.")] = 20332,
    devices: Annotated[int, typer.Option(min=1, help="Simulated trackers.")] = 10,
    rate: Annotated[float, typer.Option(min=0.001, help="Messages per second, all devices.")] = 10,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    imei_prefix: Annotated[
        str, typer.Option(help="IMEI = prefix + device number, 15 digits (the demo's devices).")
    ] = "86000000000",
    speedup: Annotated[float, typer.Option(min=0.001, help="Simulated time per real time.")] = 10,
    password: Annotated[str | None, typer.Option(help="Login password of every device.")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same routes.")] = 1,
    disconnects: Annotated[
        float, typer.Option(min=0, max=1, help="Chance of a coverage loss after each answer.")
    ] = 0.002,
) -> None:
    """Drive simulated trackers over Wialon IPS 2.0 TCP: trips, parkings, fuel, black boxes."""
    from fleetplane.simulator.display import simulate_in_terminal

    stats = simulate_in_terminal(
        console,
        host,
        port,
        devices,
        rate,
        duration,
        imei_prefix=imei_prefix,
        password=password,
        speedup=speedup,
        seed=seed,
        disconnect_probability=disconnects,
    )
    if stats.acked == 0:
        raise typer.Exit(1)
