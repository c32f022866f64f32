"""API key rules: at most 50 live keys per provider, secrets stored only as hashes, and a key
sees, changes and creates only keys within its own reach (`core.auth.beyond_reach`)."""

from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.api_keys.models import ApiKey
from fleetplane.api_keys.schemas import ApiKeyCreate, ApiKeyUpdate
from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.auth import KeyIdentity, beyond_reach, hash_secret, new_secret
from fleetplane.core.changes import Change, note
from fleetplane.core.db import count_under_lock
from fleetplane.core.errors import ApiError, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.pagination import PageParams, encode_cursor
from fleetplane.core.permissions import Level, full_set, validate
from fleetplane.core.timeutil import utcnow
from fleetplane.customers import service as customers
from fleetplane.providers import service as providers

MAX_LIVE_KEYS = 50
# What a key's reach is made of (see core.auth.beyond_reach).
REACH_FIELDS = ("provider_permissions", "customer_permissions", "customer_ids", "expires_at")
# Keys read at a time while listing those within a key's reach.
KEYS_PER_READ = 200
# The kind of change notice (core.changes) raised when a key changes.
API_KEY_CHANGE = "api_key"


def _note_changed(session: AsyncSession, key: ApiKey) -> None:
    # A key reaches data of customers, but changes none: customer_ids is ().
    note(session, Change(API_KEY_CHANGE, (key.id,), key.provider_id, ()))


def _live() -> Any:
    return (ApiKey.revoked_at.is_(None)) & or_(
        ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()
    )


def list_query(provider_id: str, include_inactive: bool) -> Select[ApiKey]:
    statement = select(ApiKey).where(ApiKey.provider_id == provider_id)
    return statement if include_inactive else statement.where(_live())


def live_count_query(provider_id: str) -> Select[int]:
    return (
        select(func.count()).select_from(ApiKey).where(ApiKey.provider_id == provider_id, _live())
    )


async def page_within_reach(
    session: AsyncSession,
    statement: Select[ApiKey],
    params: PageParams,
    holder: KeyIdentity | None,
) -> tuple[list[ApiKey], str | None]:
    """One page of `statement`'s keys that are within the holder's reach. Reach compares
    permission and customer lists, so it is applied here, on rows read a batch at a time."""
    found: list[ApiKey] = []
    after = params.after
    while len(found) <= params.limit:
        batch = statement.order_by(ApiKey.id).limit(KEYS_PER_READ)
        if after is not None:
            batch = batch.where(ApiKey.id > after)
        keys = list((await session.execute(batch)).scalars())
        found += [key for key in keys if _within_reach(key, holder)]
        if len(keys) < KEYS_PER_READ:
            break
        after = keys[-1].id
    if len(found) <= params.limit:
        return found, None
    found = found[: params.limit]
    return found, encode_cursor(found[-1].id)


async def get(
    session: AsyncSession, provider_id: str, key_id: str, holder: KeyIdentity | None
) -> ApiKey:
    """The key, if it is the provider's and within the holder's reach: a key beyond it
    answers as one that does not exist."""
    key = None
    if looks_like_id(key_id):
        result = await session.execute(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.provider_id == provider_id)
        )
        key = result.scalar_one_or_none()
    if key is None or not _within_reach(key, holder):
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
    """A new key and its secret; the secret exists only in this return value. The new key
    must be within the granter's reach."""
    values = data.model_dump()
    values = await _checked_values(session, actor.provider_id, values, values, granter)
    await _refuse_past_the_limit(session, actor.provider_id)
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
    _note_changed(session, key)
    return key, secret


async def update(
    session: AsyncSession,
    actor: Actor,
    key_id: str,
    data: ApiKeyUpdate,
    granter: KeyIdentity | None,
) -> ApiKey:
    """Changes a key within the granter's reach; the changed key must stay within it (so no
    key can widen itself)."""
    key = await get(session, actor.provider_id, key_id, granter)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "provider_permissions", "customer_permissions"):
        if field in changes and changes[field] is None:
            changes.pop(field)
    result = {field: getattr(key, field) for field in REACH_FIELDS} | changes
    changes = await _checked_values(session, actor.provider_id, changes, result, granter)
    if _revives(key, changes):  # an expired key given a new expiry is one more live key
        await _refuse_past_the_limit(session, actor.provider_id)
    for field, value in changes.items():
        setattr(key, field, value)
    await audit.record(session, actor, "api_key.update", "api_key", key.id, changes)
    await session.flush()
    _note_changed(session, key)
    return key


async def revoke(
    session: AsyncSession, actor: Actor, key_id: str, revoker: KeyIdentity | None
) -> None:
    key = await get(session, actor.provider_id, key_id, revoker)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await audit.record(session, actor, "api_key.revoke", "api_key", key.id)
    await session.flush()
    _note_changed(session, key)


async def _refuse_past_the_limit(session: AsyncSession, provider_id: str) -> None:
    """409 when the provider already has its most live keys, counted under its lock."""
    provider_lock = providers.lock_row(provider_id)
    live = await count_under_lock(session, provider_lock, live_count_query(provider_id))
    if live >= MAX_LIVE_KEYS:
        raise ApiError(
            409,
            "api_key_limit_reached",
            f"A provider can have at most {MAX_LIVE_KEYS} live API keys; revoke one first.",
        )


def _revives(key: ApiKey, changes: dict[str, Any]) -> bool:
    """Whether `changes` make an expired (not revoked) key live again: a new expiry is always
    in the future, and none means never."""
    expired = key.expires_at is not None and key.expires_at <= utcnow()
    return "expires_at" in changes and expired and key.revoked_at is None


async def create_bootstrap_key(session: AsyncSession, provider_id: str, name: str) -> str:
    """The first key of a provider, with every permission (command line and demo)."""
    data = ApiKeyCreate(
        name=name,
        provider_permissions=full_set(Level.PROVIDER),
        customer_permissions=full_set(Level.CUSTOMER),
    )
    _, secret = await create(session, Actor(provider_id=provider_id), data, granter=None)
    return secret


async def _checked_values(
    session: AsyncSession,
    provider_id: str,
    values: dict[str, Any],
    result: dict[str, Any],
    granter: KeyIdentity | None,
) -> dict[str, Any]:
    """`values` to write, checked: known permissions, then the key they give (`result`, the
    key as it will be) within the granter's reach, then customers that exist."""
    for field, level in (
        ("provider_permissions", Level.PROVIDER),
        ("customer_permissions", Level.CUSTOMER),
    ):
        if field in values:
            values[field] = result[field] = validate(values[field], level, field)
    if granter is not None:
        _refuse_beyond_reach(result, granter)
    if values.get("customer_ids") is not None:
        values["customer_ids"] = await _checked_customers(
            session, provider_id, values["customer_ids"]
        )
    return values


async def _checked_customers(session: AsyncSession, provider_id: str, ids: list[str]) -> list[str]:
    unique = sorted(set(ids))
    for index, customer_id in enumerate(unique):
        if await customers.find(session, provider_id, customer_id) is None:
            raise validation_error(
                ["body", "customer_ids", index], f"No such customer {customer_id!r}."
            )
    return unique


def _within_reach(key: ApiKey, holder: KeyIdentity | None) -> bool:
    if holder is None:
        return True
    return not beyond_reach(holder, {field: getattr(key, field) for field in REACH_FIELDS})


def _refuse_beyond_reach(result: dict[str, Any], granter: KeyIdentity) -> None:
    """A key can give only what it reaches itself: 403, naming the first field beyond it."""
    beyond = beyond_reach(granter, result)
    if beyond:
        field, why = next(iter(beyond.items()))
        raise ApiError(403, "permission_denied", why, errors=[{"loc": ["body", field], "msg": why}])
