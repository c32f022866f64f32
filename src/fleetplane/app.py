"""create_app() assembles the platform: routers from the registry, the OpenAPI documents,
the error format, and the middleware."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from fleetplane import __version__
from fleetplane.automations import connection
from fleetplane.config import Settings
from fleetplane.core.auth import PermissionRoute, public
from fleetplane.core.db import warn_if_superuser
from fleetplane.core.errors import ApiError, install_error_handlers
from fleetplane.core.middleware import BodyLimitMiddleware, RateLimitHeadersMiddleware
from fleetplane.core.openapi import build_document
from fleetplane.messages import column_builder, retention
from fleetplane.registry import MODULES, RETENTION, STEPS, STUDIO_ROUTERS
from fleetplane.runtime import Runtime
from fleetplane.steps.contract import Step
from fleetplane.web import playground

log = logging.getLogger("fleetplane")

STUDIO_DESCRIPTION = """Provider-level operations: customers, devices, API keys, audit log.

Send your key in `x-platform-api-key`. Each operation lists the provider permissions it needs
under `x-permissions`. Errors are `application/problem+json` with a stable `code`."""


def create_app(
    settings: Settings | None = None,
    companions: Sequence[Callable[[], Coroutine[Any, Any, Any]]] = (),
    extra_steps: Sequence[Step] = (),
) -> FastAPI:
    """The platform. `companions` run alongside it for its lifetime (the demo's simulated
    fleet), started after the listeners and cancelled before they stop. `extra_steps` run
    after the registered pipeline steps (tests', benchmarks'), all in this process."""
    settings = settings or Settings()
    # Steps of a test's or a benchmark's own exist only in this process: then every step
    # runs here.
    runtime = Runtime.build(
        settings,
        [*STEPS, *extra_steps],
        steps_process=settings.steps_process and not extra_steps,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        await warn_if_superuser(runtime.engine)
        if settings.gateway:
            await runtime.gateway.start()
            runtime.step_runner.start()
            runtime.deliveries.start()
            purge = retention.purge_forever(
                runtime.system_sessions,
                settings.default_retention_days,
                settings.retention_interval_seconds,
                RETENTION,
            )
            tasks.append(asyncio.create_task(purge, name="retention"))
            pack = column_builder.build_forever(
                runtime.system_sessions, settings.column_build_interval_seconds
            )
            tasks.append(asyncio.create_task(pack, name="message-columns"))
            watch = connection.watch_forever(
                runtime.system_sessions, settings.connection_check_seconds
            )
            tasks.append(asyncio.create_task(watch, name="connection-watch"))
        tasks += [asyncio.create_task(companion()) for companion in companions]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if settings.gateway:
                await runtime.deliveries.stop()
                await runtime.step_runner.stop()
                await runtime.gateway.stop()
            await runtime.close()

    app = FastAPI(
        title="Fleetplane",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    runtime.install(app)

    install_error_handlers(app)
    # Documents first: `/module/devices/openapi.json` must not be taken for a device id.
    app.include_router(_documents_router(app))
    # Then the modules: the busiest calls, matched against the fewest routes before theirs.
    # No Studio path (/api/...) can be taken for a module's (/module/...), nor the reverse.
    for module in MODULES:
        app.include_router(module.router)
    for router in STUDIO_ROUTERS:
        app.include_router(router)
    app.include_router(_health_router(runtime))
    app.include_router(playground.router)

    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


def _documents_router(app: FastAPI) -> APIRouter:
    router = APIRouter(route_class=PermissionRoute, include_in_schema=False)
    cache: dict[str, dict[str, Any]] = {}
    studio_routes = [route for r in STUDIO_ROUTERS for route in r.routes]
    modules = {module.name: module for module in MODULES}

    @router.get("/api/openapi.json", dependencies=[public()])
    async def studio_document() -> dict[str, Any]:
        if "studio" not in cache:
            cache["studio"] = build_document(
                title="Fleetplane Studio API",
                version=__version__,
                description=STUDIO_DESCRIPTION,
                routes=studio_routes,
                module=False,
            )
        return cache["studio"]

    @router.get("/module/{name}/openapi.json", dependencies=[public()])
    async def module_document(name: str) -> dict[str, Any]:
        module = modules.get(name)
        if module is None:
            raise ApiError(404, "not_found", f"No module named {name!r}.")
        if name not in cache:
            cache[name] = build_document(
                title=f"Fleetplane {module.title} module API",
                version=__version__,
                description=f"{module.description}\n\nSend `x-platform-api-key` and "
                "`x-platform-cid` (the customer id) with every call. Each operation lists the "
                "customer permissions it needs under `x-permissions`.",
                routes=module.router.routes,
                module=True,
            )
        return cache[name]

    return router


def _health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(route_class=PermissionRoute, include_in_schema=False)

    @router.get("/healthz", dependencies=[public()])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", dependencies=[public()])
    async def readyz() -> JSONResponse:
        """The process can reach its database."""
        try:
            async with runtime.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:  # any failure to reach the database means "not ready"
            log.warning("readiness check failed: %s", error)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return router
