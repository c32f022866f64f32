"""The one permission catalogue. A permission is `<verb>:<resource>`; `manage:<resource>` grants
every verb on that resource."""

from collections.abc import Iterable
from enum import StrEnum

from fleetplane.core.errors import validation_error


class Level(StrEnum):
    PROVIDER = "provider"  # Studio API
    CUSTOMER = "customer"  # Module APIs


VERBS = ("read", "create", "update", "delete")

RESOURCES: dict[Level, tuple[str, ...]] = {
    Level.PROVIDER: (
        "customers", "devices", "channels", "sensors", "billing",
        "users", "sites", "api_keys", "audit_log",
    ),
    Level.CUSTOMER: (
        "devices", "messages", "commands", "trips", "drivers", "geofences", "automations",
        "notifications", "maintenance", "checklists", "analytics", "video", "tachograph",
        "location_share",
    ),
}  # fmt: skip


def catalogue(level: Level) -> list[str]:
    """Every permission string that exists at a level, `manage:*` first."""
    resources = RESOURCES[level]
    return [f"manage:{r}" for r in resources] + [f"{v}:{r}" for r in resources for v in VERBS]


def full_set(level: Level) -> list[str]:
    return [f"manage:{r}" for r in RESOURCES[level]]


def grants(held: Iterable[str], needed: str) -> bool:
    held = set(held)
    if needed in held:
        return True
    _, resource = needed.split(":", 1)
    return f"manage:{resource}" in held


def missing(held: Iterable[str], needed: Iterable[str]) -> list[str]:
    held = set(held)
    return [p for p in needed if not grants(held, p)]


def expand(permissions: Iterable[str]) -> set[str]:
    """The plain verb permissions a set stands for (so subsets can be compared)."""
    plain: set[str] = set()
    for permission in permissions:
        verb, resource = permission.split(":", 1)
        if verb == "manage":
            plain.update(f"{v}:{resource}" for v in VERBS)
        else:
            plain.add(permission)
    return plain


def validate(permissions: Iterable[str], level: Level, field: str) -> list[str]:
    known = set(catalogue(level))
    result: list[str] = []
    for index, permission in enumerate(permissions):
        if permission not in known:
            raise validation_error(
                ["body", field, index],
                f"Unknown {level.value} permission {permission!r}; "
                f"use <verb>:<resource> with verbs read, create, update, delete or manage.",
            )
        if permission not in result:
            result.append(permission)
    return sorted(result)
