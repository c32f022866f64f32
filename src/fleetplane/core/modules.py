"""A customer-facing module: its name (the `/module/{name}` prefix), its router and the
permission dependency bound to it, so every endpoint checks that the module is enabled."""

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from fleetplane.core.auth import PermissionRoute, customer_permission


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What names and describes a module, without its router (see `fleetplane.module_catalog`)."""

    name: str
    title: str
    description: str


class Module:
    def __init__(self, info: ModuleInfo) -> None:
        self.name = info.name
        self.title = info.title
        self.description = info.description
        self.router = APIRouter(
            prefix=f"/module/{info.name}", tags=[info.title], route_class=PermissionRoute
        )

    def requires(self, *permissions: str) -> Any:
        return customer_permission(self.name, *permissions)

    @property
    def openapi_url(self) -> str:
        return f"/module/{self.name}/openapi.json"
