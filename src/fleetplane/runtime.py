"""The parts of the platform that live as long as the process (engines, session factories,
caches, the change-notice hub, the gateway), built once by `create_app` and reached by
endpoints through one typed dependency: `runtime: Runtime = RuntimeDep`.

Core's own dependencies (authentication, the request's session) reach the same object through
`core.auth.auth_runtime`, typed by what core needs of it, since core knows no domain."""

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleetplane.api_keys import service as api_keys
from fleetplane.channels.service import ChannelPolicy
from fleetplane.config import Settings
from fleetplane.core.auth import (
    RUNTIME_STATE_KEY,
    AuthBackend,
    AuthRuntime,
    CustomerIdentity,
    IdentityCache,
    KeyIdentity,
)
from fleetplane.core.changes import ChangeHub
from fleetplane.core.db import (
    create_engine,
    create_system_engine,
    session_factory,
    writer_turns,
)
from fleetplane.core.events import EventHub
from fleetplane.core.files import FileStore
from fleetplane.core.ratelimit import RateLimiter
from fleetplane.customers import service as customers
from fleetplane.devices import counters as device_counters
from fleetplane.devices.live_cache import LiveDeviceCache
from fleetplane.devices.processor import DeviceRulesCache
from fleetplane.devices.service import DEVICE_CHANGE, DEVICE_COUNTERS_CHANGE
from fleetplane.geofences import service as geofences
from fleetplane.ingest.gateway import Gateway
from fleetplane.ingest.limits import DeviceLimits
from fleetplane.steps.contract import Step
from fleetplane.steps.process import StepProcess
from fleetplane.steps.runner import StepRunner
from fleetplane.trips import service as trips

# Connections kept for reading customers' devices into memory (one read per customer at a time).
LIVE_READ_CONNECTIONS = 2
# The changes after which a checked key or customer is read again, and open event streams
# check their access: the key's, the customer's, and a device's (it may have left the customer).
IDENTITY_CHANGES = (api_keys.API_KEY_CHANGE, customers.CUSTOMER_CHANGE, DEVICE_CHANGE)


class DomainAuthBackend:
    """Reads keys and customers for core's auth through the domains that own them."""

    async def key_by_secret_hash(
        self, session: AsyncSession, secret_hash: str
    ) -> KeyIdentity | None:
        return await api_keys.identity_by_secret_hash(session, secret_hash)

    async def customer(
        self, session: AsyncSession, provider_id: str, customer_id: str
    ) -> CustomerIdentity | None:
        return await customers.identity(session, provider_id, customer_id)


@dataclass(frozen=True, eq=False)
class Runtime:
    settings: Settings
    # Requests' transactions: on PostgreSQL the app role, which sees one tenant's rows.
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Cross-tenant work (device listeners, the pipeline, retention, jobs): the system role.
    system_engine: AsyncEngine
    system_sessions: async_sessionmaker[AsyncSession]
    # Where every session above delivers its committed change notices.
    changes: ChangeHub
    auth_backend: AuthBackend
    identity_cache: IdentityCache
    rate_limiter: RateLimiter
    # Its own connections: callers waiting for a customer's devices hold theirs, and a read
    # from the shared pool could wait behind them for good.
    live_engine: AsyncEngine
    live_devices: LiveDeviceCache
    events: EventHub
    files: FileStore
    device_rules: DeviceRulesCache
    channel_policy: ChannelPolicy
    # Derived work on stored messages, after their devices were answered: in a process of its
    # own (`StepProcess`) or in this one.
    step_runner: StepRunner | StepProcess
    gateway: Gateway

    @classmethod
    def build(
        cls, settings: Settings, steps: Sequence[Step] = (), *, steps_process: bool = False
    ) -> "Runtime":
        """`steps`: the pipeline steps the step runner runs, in order; `steps_process`: in a
        process of their own (then `steps` must be registered ones: the process finds them by
        name in the registry)."""
        changes = ChangeHub()
        engine = create_engine(settings)
        system_engine = create_system_engine(settings, shared=engine)
        system_sessions = session_factory(system_engine, changes)
        live_engine = create_engine(settings, pool_size=LIVE_READ_CONNECTIONS)
        identity_cache = IdentityCache(settings.api_key_cache_seconds)
        identity_cache.follow(changes, IDENTITY_CHANGES)
        live_devices = LiveDeviceCache(session_factory(live_engine), settings.live_cache_seconds)
        live_devices.follow(changes)
        events = EventHub()
        changes.subscribe(
            (DEVICE_COUNTERS_CHANGE,), lambda change: device_counters.announce(events, change)
        )
        # What the visits and trips steps announce: `geofence_enter`/`_exit`, `trip_start`/`_end`.
        changes.subscribe(
            (geofences.VISIT_CHANGE,), lambda change: geofences.announce_visits(events, change)
        )
        changes.subscribe(
            (trips.TRIP_EVENT_CHANGE,), lambda change: trips.announce_trip_events(events, change)
        )
        files = FileStore(settings.data_dir / "files")
        device_rules = DeviceRulesCache(changes=changes)
        channel_policy = ChannelPolicy.of(settings)
        step_runner: StepRunner | StepProcess
        if steps_process:
            turns = None if settings.is_postgres else writer_turns(system_engine)
            step_runner = StepProcess(settings, [step.name for step in steps], changes, turns)
        else:
            step_runner = StepRunner(
                system_sessions,
                list(steps),
                retry_seconds=settings.step_retry_seconds,
                retry_max_seconds=settings.step_retry_max_seconds,
                poll_seconds=settings.step_poll_seconds,
                interval_seconds=settings.step_interval_seconds,
            )
        gateway = Gateway(
            system_sessions,
            events,
            files,
            channel_policy,
            host=settings.device_host,
            rules=device_rules,
            limits=DeviceLimits.from_settings(settings),
            step_runner=step_runner,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine, changes),
            system_engine=system_engine,
            system_sessions=system_sessions,
            changes=changes,
            auth_backend=DomainAuthBackend(),
            identity_cache=identity_cache,
            rate_limiter=RateLimiter(settings.rate_limit),
            live_engine=live_engine,
            live_devices=live_devices,
            events=events,
            files=files,
            device_rules=device_rules,
            channel_policy=channel_policy,
            step_runner=step_runner,
            gateway=gateway,
        )

    def install(self, app: FastAPI) -> None:
        setattr(app.state, RUNTIME_STATE_KEY, self)

    async def close(self) -> None:
        await self.live_engine.dispose()
        await self.system_engine.dispose()
        await self.engine.dispose()


def get_runtime(request: Request) -> Runtime:
    """The process's runtime (a FastAPI dependency: `RuntimeDep`)."""
    runtime: Runtime = getattr(request.app.state, RUNTIME_STATE_KEY)
    return runtime


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = getattr(app.state, RUNTIME_STATE_KEY)
    return runtime


RuntimeDep = Depends(get_runtime)

# Core's dependencies read the runtime as what they need of it; this is that.
_: type[AuthRuntime] = Runtime
