"""API key rules: at most 50 live keys per provider, secrets stored only as hashes, and no key
can hand out more than it holds itself."""

from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.api_keys.models import ApiKey
from fleetplane.api_keys.schemas import ApiKeyCreate, ApiKeyUpdate
from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.auth import KeyIdentity, hash_secret, new_secret
from fleetplane.core.db import count_under_lock
from fleetplane.core.errors import ApiError, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.permissions import Level, expand, validate
from fleetplane.core.timeutil import utcnow
from fleetplane.customers import service as customers
from fleetplane.providers import service as providers

MAX_LIVE_KEYS = 50


def _live() -> Any:
    return (ApiKey.revoked_at.is_(None)) & or_(
        ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()
    )


def list_query(provider_id: str, include_inactive: bool) -> Select[tuple[ApiKey]]:
    statement = select(ApiKey).where(ApiKey.provider_id == provider_id)
    return statement if include_inactive else statement.where(_live())


def live_count_query(provider_id: str) -> Select[tuple[int]]:
    return (
        select(func.count()).select_from(ApiKey).where(ApiKey.provider_id == provider_id, _live())
    )


async def get(session: AsyncSession, provider_id: str, key_id: str) -> ApiKey:
    key = None
    if looks_like_id(key_id):
        result = await session.execute(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.provider_id == provider_id)
        )
        key = result.scalar_one_or_none()
    if key is None:
        raise not_found("API key")
    return key


async def identity_by_secret_hash(session: AsyncSession, secret_hash: str) -> KeyIdentity | None:
    result = await session.execute(select(ApiKey).where(ApiKey.secret_hash == secret_hash))
    key = result.scalar_one_or_none()
    if key is None:
        return None
    return KeyIdentity(
        id=key.id,
        provider_id=key.provider_id,
        provider_permissions=frozenset(key.provider_permissions),
        customer_permissions=frozenset(key.customer_permissions),
        customer_ids=None if key.customer_ids is None else frozenset(key.customer_ids),
        expires_at=key.expires_at,
        revoked=key.revoked_at is not None,
    )


async def create(
    session: AsyncSession, actor: Actor, data: ApiKeyCreate, granter: KeyIdentity | None
) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret exists only in this return value."""
    values = await _checked_values(session, actor.provider_id, data.model_dump(), granter)
    provider_lock = providers.lock_row(actor.provider_id)
    live = await count_under_lock(session, provider_lock, live_count_query(actor.provider_id))
    if live >= MAX_LIVE_KEYS:
        raise ApiError(
            409,
            "api_key_limit_reached",
            f"A provider can have at most {MAX_LIVE_KEYS} live API keys; revoke one first.",
        )
    secret = new_secret()
    key = ApiKey(
        id=new_id("key"),
        provider_id=actor.provider_id,
        secret_hash=hash_secret(secret),
        secret_hint=secret[:10],
        created_by=actor.label,
        **values,
    )
    session.add(key)
    await audit.record(session, actor, "api_key.create", "api_key", key.id, values)
    await session.flush()
    return key, secret


async def update(
    session: AsyncSession,
    actor: Actor,
    key_id: str,
    data: ApiKeyUpdate,
    granter: KeyIdentity | None,
) -> ApiKey:
    key = await get(session, actor.provider_id, key_id)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "provider_permissions", "customer_permissions"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    changes = await _checked_values(session, actor.provider_id, changes, granter)
    for field, value in changes.items():
        setattr(key, field, value)
    await audit.record(session, actor, "api_key.update", "api_key", key.id, changes)
    await session.flush()
    return key


async def revoke(session: AsyncSession, actor: Actor, key_id: str) -> None:
    key = await get(session, actor.provider_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await audit.record(session, actor, "api_key.revoke", "api_key", key.id)
    await session.flush()


async def create_bootstrap_key(session: AsyncSession, provider_id: str, name: str) -> str:
    """The first key of a provider, with every permission (command line and demo)."""
    from fleetplane.core.permissions import full_set

    data = ApiKeyCreate(
        name=name,
        provider_permissions=full_set(Level.PROVIDER),
        customer_permissions=full_set(Level.CUSTOMER),
    )
    _, secret = await create(session, Actor(provider_id=provider_id), data, granter=None)
    return secret


async def _checked_values(
    session: AsyncSession, provider_id: str, values: dict[str, Any], granter: KeyIdentity | None
) -> dict[str, Any]:
    if "provider_permissions" in values:
        values["provider_permissions"] = validate(
            values["provider_permissions"], Level.PROVIDER, "provider_permissions"
        )
    if "customer_permissions" in values:
        values["customer_permissions"] = validate(
            values["customer_permissions"], Level.CUSTOMER, "customer_permissions"
        )
    if values.get("customer_ids") is not None:
        values["customer_ids"] = await _checked_customers(
            session, provider_id, values["customer_ids"]
        )
    if granter is not None:
        _refuse_escalation(values, granter)
    return values


async def _checked_customers(session: AsyncSession, provider_id: str, ids: list[str]) -> list[str]:
    unique = sorted(set(ids))
    for index, customer_id in enumerate(unique):
        if await customers.find(session, provider_id, customer_id) is None:
            raise validation_error(
                ["body", "customer_ids", index], f"No such customer {customer_id!r}."
            )
    return unique


def _refuse_escalation(values: dict[str, Any], granter: KeyIdentity) -> None:
    """A key may only give what it holds: its permissions and its customers, at most."""
    for field, held in (
        ("provider_permissions", granter.provider_permissions),
        ("customer_permissions", granter.customer_permissions),
    ):
        beyond = expand(values.get(field, ())) - expand(held)
        if beyond:
            raise ApiError(
                403,
                "permission_denied",
                f"A key cannot grant {field} it does not hold itself: {', '.join(sorted(beyond))}.",
            )
    if granter.customer_ids is not None and "customer_ids" in values:
        wanted = values["customer_ids"]
        if wanted is None or not set(wanted) <= granter.customer_ids:
            raise ApiError(
                403, "permission_denied", "A key restricted to some customers cannot grant others."
            )
