"""Writes go through `record` in the same transaction as the change they describe."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit.models import AuditEntry
from fleetplane.core.auth import StudioContext
from fleetplane.core.ids import new_id

# Fields that never reach the audit log, whatever object they belong to.
SECRET_FIELDS = frozenset({"secret", "secret_hash", "password", "password_hash"})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: an API key, an operator on the command line, or the platform itself
    (`system`, e.g. the gateway registering a new device)."""

    provider_id: str
    api_key_id: str | None = None
    system: str | None = None

    @classmethod
    def of(cls, ctx: StudioContext) -> "Actor":
        return cls(provider_id=ctx.provider_id, api_key_id=ctx.key.id)

    @property
    def label(self) -> str:
        if self.api_key_id:
            return f"api_key:{self.api_key_id}"
        return f"system:{self.system}" if self.system else "cli"


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    changes: dict[str, Any] | None = None,
    customer_id: str | None = None,
) -> None:
    session.add(
        AuditEntry(
            id=new_id("aud"),
            provider_id=actor.provider_id,
            customer_id=customer_id,
            api_key_id=actor.api_key_id,
            actor=actor.label,
            action=action,
            object_type=object_type,
            object_id=object_id,
            changes=scrub(changes or {}),
        )
    )


def scrub(changes: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a change set, with secrets replaced by a mark that they changed."""
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name in SECRET_FIELDS:
            clean[name] = "(changed)"
        elif isinstance(value, datetime):
            clean[name] = value.isoformat()
        elif isinstance(value, (set, frozenset, tuple)):
            clean[name] = sorted(value)
        else:
            clean[name] = value
    return clean


def query(
    provider_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    api_key_id: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
) -> Select[AuditEntry]:
    statement = select(AuditEntry).where(AuditEntry.provider_id == provider_id)
    if since is not None:
        statement = statement.where(AuditEntry.at >= since)
    if until is not None:
        statement = statement.where(AuditEntry.at < until)
    if api_key_id is not None:
        statement = statement.where(AuditEntry.api_key_id == api_key_id)
    if object_type is not None:
        statement = statement.where(AuditEntry.object_type == object_type)
    if object_id is not None:
        statement = statement.where(AuditEntry.object_id == object_id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    return statement
