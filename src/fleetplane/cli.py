"""The `fleetplane` command."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane import bootstrap
from fleetplane.config import Settings
from fleetplane.core.db import create_engine, migrate, session_factory, system_session

app = typer.Typer(help="Fleetplane: fleet telematics platform.", no_args_is_help=True)
provider_app = typer.Typer(help="Manage providers.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
console = Console()
Result = TypeVar("Result")

JsonOption = Annotated[bool, typer.Option("--json", help="One line of JSON, for scripts.")]


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _in_system_transaction(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[Result]]
) -> Result:
    """Migrates, then runs `work` in one platform-level transaction."""

    async def run() -> Result:
        await migrate(settings)
        engine = create_engine(settings)
        try:
            async with system_session(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@app.command()
def init(as_json: JsonOption = False) -> None:
    """Create the first provider and a key with every permission (once)."""
    result, created = _in_system_transaction(_settings(), bootstrap.init_platform)
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
    import uvicorn

    from fleetplane.app import create_app

    settings = _settings(host=host, port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if demo:
        result = _in_system_transaction(settings, bootstrap.seed_demo)
    else:
        asyncio.run(migrate(settings))
    base = f"http://{settings.host}:{settings.port}"
    if demo:
        _show_key(f"Fleetplane demo: playground at {base}/playground", result)
    else:
        console.print(f"Fleetplane on {base} (playground: {base}/playground)")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


def _show_key(title: str, result: bootstrap.ProviderWithKey) -> None:
    console.print(
        Panel.fit(
            f"provider id: [bold]{result.provider_id}[/]\n"
            f"API key:     [bold green]{result.api_key}[/]\n"
            "This key is shown once. Send it as the x-platform-api-key header.",
            title=title,
        )
    )
