"""API keys, the request context and the permission dependencies.

Each endpoint declares what it needs once, e.g. `ctx: StudioContext = provider_permission(
"read:customers")`. That one dependency authenticates the key, applies the rate limit, runs the
tenant checks in the contract's order, and is what `PermissionRoute` publishes as
`x-permissions` in the OpenAPI document.
"""

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send

from fleetplane.core.changes import Change, ChangeHub
from fleetplane.core.db import set_tenant_scope
from fleetplane.core.errors import ApiError
from fleetplane.core.permissions import expand, missing
from fleetplane.core.ratelimit import RateLimiter
from fleetplane.core.timeutil import utcnow

API_KEY_HEADER = "x-platform-api-key"
CUSTOMER_HEADER = "x-platform-cid"
SECRET_PREFIX = "fpk_"
RATELIMIT_SCOPE_KEY = "fleetplane.ratelimit"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="An API key of your provider account (shown once, when it was created).",
    auto_error=False,
)
customer_header = APIKeyHeader(
    name=CUSTOMER_HEADER,
    scheme_name="CustomerId",
    description="The id of the customer whose data this request reads or changes.",
    auto_error=False,
)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits, so a fast hash is as safe as a slow one and keeps auth cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    id: str
    provider_id: str
    provider_permissions: frozenset[str]
    customer_permissions: frozenset[str]
    customer_ids: frozenset[str] | None
    expires_at: datetime | None
    revoked: bool


def beyond_reach(holder: KeyIdentity, key: Mapping[str, Any]) -> dict[str, str]:
    """What of `key` (its `provider_permissions`, `customer_permissions`, `customer_ids` and
    `expires_at`) reaches further than the `holder` key: field -> why. Empty when the key is
    within the holder's reach: no permission the holder lacks, only customers the holder
    reaches (all only if the holder reaches all), and no later expiry (none only if the
    holder has none). A key sees and changes only keys within its reach."""
    beyond: dict[str, str] = {}
    for field, held in (
        ("provider_permissions", holder.provider_permissions),
        ("customer_permissions", holder.customer_permissions),
    ):
        extra = expand(key[field]) - expand(held)
        if extra:
            beyond[field] = f"Beyond this key's own {field}: {', '.join(sorted(extra))}."
    wanted = key["customer_ids"]
    if holder.customer_ids is not None:
        if wanted is None:
            beyond["customer_ids"] = "This key reaches only some customers, so cannot give all."
        elif not set(wanted) <= holder.customer_ids:
            others = ", ".join(sorted(set(wanted) - holder.customer_ids))
            beyond["customer_ids"] = f"Customers this key does not reach: {others}."
    expires_at = key["expires_at"]
    if holder.expires_at is not None and (expires_at is None or expires_at > holder.expires_at):
        beyond["expires_at"] = (
            f"This key expires at {holder.expires_at:%Y-%m-%dT%H:%M:%SZ}; "
            "it cannot give a later expiry or none."
        )
    return beyond


@dataclass(frozen=True, slots=True)
class CustomerIdentity:
    id: str
    provider_id: str
    status: str
    modules: frozenset[str]


class AuthBackend(Protocol):
    """How core reads keys and customers without knowing the domains that own them."""

    async def key_by_secret_hash(
        self, session: AsyncSession, secret_hash: str
    ) -> KeyIdentity | None: ...

    async def customer(
        self, session: AsyncSession, provider_id: str, customer_id: str
    ) -> CustomerIdentity | None: ...


_READ_FAILED = object()


class IdentityCache:
    """Keys and customers already checked, trusted for a few seconds, so a busy client costs
    no key or customer query per call. A change committed in this process forgets it at once
    (`follow`); other processes notice within the time to live."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[object, tuple[Any, float]] = {}
        self._reading: dict[object, asyncio.Future[Any]] = {}
        self._watchers: set[Callable[[str], None]] = set()

    async def get_or_read(
        self,
        key: object,
        read: Callable[[], Awaitable[Any | None]],
        max_age: float | None = None,
    ) -> Any:
        """The entry (if no older than `max_age`, when given), or what `read()` gives (kept
        unless None). Callers missing the same entry at the same time share one read: when a
        busy client's key expires, the calls waiting on it cost one query, not one each."""
        if self.ttl <= 0:
            return await read()
        value = self.get(key, max_age)
        if value is not None:
            return value
        pending = self._reading.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            return shared if shared is not _READ_FAILED else await read()
        future = self._reading[key] = asyncio.get_running_loop().create_future()
        outcome: Any = _READ_FAILED
        try:
            outcome = await read()
            if outcome is not None:
                self.put(key, outcome)
            return outcome
        finally:
            del self._reading[key]
            future.set_result(outcome)  # on failure, each waiting caller reads for itself

    def get(self, key: object, max_age: float | None = None) -> Any | None:
        entry = self._entries.get(key)
        oldest = self.ttl if max_age is None else min(self.ttl, max_age)
        if entry is None or time.monotonic() - entry[1] > oldest:
            return None
        return entry[0]

    def put(self, key: object, value: Any) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic())

    def forget(self, object_id: str) -> None:
        """Forgets every entry holding the object with this id, and tells the watchers (open
        event streams) that it changed."""
        self._entries = {k: e for k, e in self._entries.items() if e[0].id != object_id}
        for on_change in list(self._watchers):
            on_change(object_id)

    def follow(self, changes: ChangeHub, kinds: Iterable[str]) -> Callable[[], None]:
        """Forgets the objects of every committed change of these kinds (keys, customers, and
        devices, whose customer an open stream's access depends on) as it is delivered: after
        the commit, as forgotten earlier the old object could be read again and kept."""
        return changes.subscribe(kinds, self._on_change)

    def _on_change(self, change: Change) -> None:
        for object_id in change.ids:
            self.forget(object_id)

    def watch(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Calls `on_change(object_id)` for every object forgotten from now on; returns the
        function that stops it."""
        self._watchers.add(on_change)
        return lambda: self._watchers.discard(on_change)


# The attribute of `app.state` holding the process's runtime (`fleetplane.runtime.Runtime`).
RUNTIME_STATE_KEY = "runtime"


class AuthRuntime(Protocol):
    """What core's dependencies need of the process's runtime."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def auth_backend(self) -> AuthBackend: ...

    @property
    def identity_cache(self) -> IdentityCache: ...

    @property
    def rate_limiter(self) -> RateLimiter: ...


def auth_runtime(request: Request) -> AuthRuntime:
    runtime: AuthRuntime = getattr(request.app.state, RUNTIME_STATE_KEY)
    return runtime


@dataclass(frozen=True, slots=True)
class ModuleAccess:
    """A call that passed the module checks: whose key, for which customer."""

    key: KeyIdentity
    customer: CustomerIdentity

    @property
    def provider_id(self) -> str:
        return self.key.provider_id

    @property
    def customer_id(self) -> str:
        return self.customer.id


@dataclass(slots=True)
class StudioContext:
    """A provider-level request: whose key it is and the transaction to work in."""

    session: AsyncSession
    key: KeyIdentity
    request: Request

    @property
    def provider_id(self) -> str:
        return self.key.provider_id


@dataclass(slots=True)
class CustomerContext(StudioContext):
    """A customer-level (module) request: also the customer picked by x-platform-cid."""

    customer: CustomerIdentity

    @property
    def customer_id(self) -> str:
        return self.customer.id


READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the endpoint returns without error.

    Reads have nothing to commit, so they skip the explicit transaction and its commit round
    trip; the database still runs their statements in one (auto-begun) transaction."""
    async with auth_runtime(request).sessions() as session:
        if request.method in READ_METHODS:
            yield session
        else:
            async with session.begin():
                yield session


SessionDep = Depends(get_session, scope="function")


async def _authenticate(request: Request, session: AsyncSession, secret: str | None) -> KeyIdentity:
    if not secret:
        raise ApiError(401, "api_key_missing", f"Send your API key in the {API_KEY_HEADER} header.")
    runtime = auth_runtime(request)
    secret_hash = hash_secret(secret)
    key = await runtime.identity_cache.get_or_read(
        secret_hash, lambda: _read_key(runtime.auth_backend, session, secret_hash)
    )
    _check_live(key)
    _apply_rate_limit(request, key)
    return key


def _check_live(key: KeyIdentity | None) -> KeyIdentity:
    if key is None:
        raise ApiError(401, "api_key_invalid", "This API key is not known.")
    if key.revoked:
        raise ApiError(401, "api_key_revoked", "This API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise ApiError(
            401, "api_key_expired", f"This API key expired at {key.expires_at:%Y-%m-%dT%H:%M:%SZ}."
        )
    return key


async def _read_key(
    backend: AuthBackend, session: AsyncSession, secret_hash: str
) -> KeyIdentity | None:
    # Nobody knows whose key it is yet: the transaction may see the one key it names.
    await set_tenant_scope(session, key_hash=secret_hash)
    return await backend.key_by_secret_hash(session, secret_hash)


def _apply_rate_limit(request: Request, key: KeyIdentity) -> None:
    limiter = auth_runtime(request).rate_limiter
    if not limiter.enabled:
        return
    verdict = limiter.take(key.id)
    headers = verdict.headers()
    request.scope[RATELIMIT_SCOPE_KEY] = headers
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests for this key; retry in {verdict.retry_after} s.",
            headers={**headers, "Retry-After": str(verdict.retry_after)},
        )


def _deny_missing(held: frozenset[str], needed: tuple[str, ...]) -> None:
    lacking = missing(held, needed)
    if lacking:
        raise ApiError(
            403, "permission_denied", f"This API key lacks the permission {', '.join(lacking)}."
        )


def _declare(dependency: Callable[..., Any], permissions: tuple[str, ...], **extra: Any) -> Any:
    # A function takes any attribute; `Callable` declares none. The attribute names what the
    # dependency checks (`declared_permissions` reads it).
    dependency.__permissions__ = permissions  # type: ignore[attr-defined]
    for name, value in extra.items():
        setattr(dependency, name, value)
    return Depends(dependency)


def provider_permission(*needed: str) -> Any:
    """Dependency for a Studio endpoint needing these provider permissions."""

    async def studio_access(
        request: Request,
        session: AsyncSession = SessionDep,
        secret: str | None = Security(api_key_header),
    ) -> StudioContext:
        key = await _authenticate(request, session, secret)
        _deny_missing(key.provider_permissions, needed)
        await set_tenant_scope(session, provider_id=key.provider_id)
        return StudioContext(session=session, key=key, request=request)

    return _declare(studio_access, needed)


def customer_permission(module_name: str, *needed: str) -> Any:
    """Dependency for a Module endpoint: the four checks of the contract, in its order."""

    async def module_access(
        request: Request,
        session: AsyncSession = SessionDep,
        secret: str | None = Security(api_key_header),
        customer_id: str | None = Security(customer_header),
    ) -> CustomerContext:
        key = await _authenticate(request, session, secret)
        if not customer_id:
            raise ApiError(
                400, "customer_header_missing", f"Module calls need the {CUSTOMER_HEADER} header."
            )
        customer = await _customer_of_key(auth_runtime(request), session, key, customer_id)
        _check_module(key, customer, module_name, needed)
        return CustomerContext(session=session, key=key, request=request, customer=customer)

    return _declare(module_access, needed, __module_name__=module_name)


async def _customer_of_key(
    runtime: AuthRuntime,
    session: AsyncSession,
    key: KeyIdentity,
    customer_id: str,
    max_age: float | None = None,
    *,
    scope_now: bool = True,
) -> CustomerIdentity:
    """The customer, checked for the key. The session's tenant scope is set to it at once (a
    call's transaction works in it), or, with `scope_now=False`, only when the customer must be
    read (a stream's check, answered from the cache most times, then costs no statement)."""
    not_found = ApiError(404, "customer_not_found", "No such customer.")
    if key.customer_ids is not None and customer_id not in key.customer_ids:
        raise not_found
    scope = {"provider_id": key.provider_id, "customer_id": customer_id}
    if scope_now:
        await set_tenant_scope(session, **scope)

    async def read() -> CustomerIdentity | None:
        if not scope_now:
            await set_tenant_scope(session, **scope)
        customer: CustomerIdentity | None = await runtime.auth_backend.customer(
            session, key.provider_id, customer_id
        )
        return customer

    customer = await runtime.identity_cache.get_or_read(
        (key.provider_id, customer_id), read, max_age
    )
    if customer is None:
        raise not_found
    if customer.status != "active":
        raise ApiError(403, "customer_suspended", "This customer is suspended.")
    return customer


def _check_module(
    key: KeyIdentity, customer: CustomerIdentity, module_name: str, needed: tuple[str, ...]
) -> None:
    if module_name not in customer.modules:
        raise ApiError(
            403, "module_disabled", f"The {module_name} module is not enabled for this customer."
        )
    _deny_missing(key.customer_permissions, needed)


# Streams check their access at least this often when keys are not cached (a time to live of
# 0), and twice per time to live otherwise, so a change made in another process ends a stream
# within the time to live, as it does calls.
STREAM_CHECK_MIN_SECONDS = 0.5


class ModuleAccessWatch:
    """The module checks of an open stream (`customer_permission`'s, in the same order),
    made again: at once after a change of its key or customer in this process, and
    periodically for changes made in other processes."""

    def __init__(self, ctx: "CustomerContext", module_name: str, needed: tuple[str, ...]) -> None:
        self._runtime = auth_runtime(ctx.request)
        self._secret_hash = hash_secret(ctx.request.headers.get(API_KEY_HEADER, ""))
        self.key = ctx.key
        self.customer = ctx.customer
        self.module_name = module_name
        self.needed = needed
        self.interval = max(self._runtime.identity_cache.ttl / 2, STREAM_CHECK_MIN_SECONDS)

    @property
    def provider_id(self) -> str:
        return self.key.provider_id

    @property
    def customer_id(self) -> str:
        return self.customer.id

    def watch(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Calls `on_change(object_id)` after every change committed in this process to a
        key, customer or device (see `IdentityCache.follow`)."""
        return self._runtime.identity_cache.watch(on_change)

    def seconds_to_next_check(self) -> float:
        """The check interval, shorter when the key expires sooner."""
        if self.key.expires_at is None:
            return self.interval
        return min(self.interval, (self.key.expires_at - utcnow()).total_seconds())

    async def refusal(self) -> ApiError | None:
        """The error a new call with the key, for the customer, would get now; None if none."""
        runtime = self._runtime
        async with runtime.sessions() as session:
            try:
                self.key = _check_live(
                    await runtime.identity_cache.get_or_read(
                        self._secret_hash,
                        lambda: _read_key(runtime.auth_backend, session, self._secret_hash),
                        self.interval,
                    )
                )
                self.customer = await _customer_of_key(
                    runtime, session, self.key, self.customer.id, self.interval, scope_now=False
                )
                _check_module(self.key, self.customer, self.module_name, self.needed)
            except ApiError as refused:
                return refused
        return None


def cached_module_access(
    request: Request, module_name: str, needed: tuple[str, ...]
) -> ModuleAccess | None:
    """The module checks of `customer_permission`, answered from the key and customer caches
    alone, for a call that passes every one of them; None for any other call, whose answer
    (an error, or a database read of the key or customer) the full checks then give. Applies
    no rate limit: that is for whoever answers the call."""
    secret = request.headers.get(API_KEY_HEADER)
    customer_id = request.headers.get(CUSTOMER_HEADER)
    if not secret or not customer_id:
        return None
    cache = auth_runtime(request).identity_cache
    key: KeyIdentity | None = cache.get(hash_secret(secret))
    if key is None or key.revoked or (key.expires_at is not None and key.expires_at <= utcnow()):
        return None
    if key.customer_ids is not None and customer_id not in key.customer_ids:
        return None
    customer: CustomerIdentity | None = cache.get((key.provider_id, customer_id))
    if customer is None or customer.status != "active" or module_name not in customer.modules:
        return None
    if missing(key.customer_permissions, needed):
        return None
    return ModuleAccess(key, customer)


MemoryAnswer = Callable[[Request, ModuleAccess], Awaitable[Response | None]]


def answers_from_memory(answer: MemoryAnswer) -> Callable[[Callable[..., Any]], Any]:
    """Marks a module endpoint whose answer can often come from process memory: for a call
    the caches show passes the module checks, `answer(request, access)` gives the response, or
    None to run the endpoint as usual. The endpoint stays what the document describes and what
    answers every other call (errors included); this only skips FastAPI's dependency solving,
    the largest fixed cost of a call."""

    def mark(endpoint: Callable[..., Any]) -> Any:
        # A function takes any attribute; `Callable` declares none.
        endpoint.__answer_from_memory__ = answer  # type: ignore[attr-defined]
        return endpoint

    return mark


def public() -> Any:
    """Marks an endpoint as needing no key (it is published with empty x-permissions)."""

    async def public_access() -> None:
        return None

    return _declare(public_access, ())


def declared_module(route: APIRoute) -> str | None:
    """The module whose checks a route's dependencies run, if any."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        module_name = getattr(dependant.call, "__module_name__", None)
        if module_name is not None:
            return str(module_name)
        pending.extend(dependant.dependencies)
    return None


def declared_permissions(route: APIRoute) -> tuple[str, ...] | None:
    """The permissions a route's dependencies declare, or None when it declares nothing."""
    found: tuple[str, ...] | None = None
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        permissions = getattr(dependant.call, "__permissions__", None)
        if permissions is not None:
            found = (found or ()) + tuple(permissions)
        pending.extend(dependant.dependencies)
    return found


class PermissionRoute(APIRoute):
    """Publishes the permissions a route's dependency enforces as `x-permissions`, and lets a
    module endpoint marked `answers_from_memory` answer without the dependency chain."""

    _from_memory: "_MemoryRead | None" = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        permissions = declared_permissions(self)
        if permissions is None:
            return
        answer = getattr(self.endpoint, "__answer_from_memory__", None)
        module_name = declared_module(self)
        if answer is not None and module_name is not None and self.methods == {"GET"}:
            self._from_memory = _MemoryRead(answer, module_name, permissions)
        self.openapi_extra = {**(self.openapi_extra or {}), "x-permissions": list(permissions)}
        needs = ", ".join(f"`{p}`" for p in permissions) if permissions else "none (public)"
        self.description = f"{self.description or ''}\n\n**Permissions:** {needs}".strip()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._from_memory is None or scope["method"] != "GET":
            await super().handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        answer, module_name, needed = self._from_memory
        access = cached_module_access(request, module_name, needed)
        response = None if access is None else await answer(request, access)
        if access is None or response is None:
            await super().handle(scope, receive, send)
            return
        _apply_rate_limit(request, access.key)
        await response(scope, receive, send)


class _MemoryRead(NamedTuple):
    answer: MemoryAnswer
    module_name: str
    permissions: tuple[str, ...]
