"""A customer-facing module: its name (the `/module/{name}` prefix), its router and the
permission dependency bound to it, so every endpoint checks that the module is enabled."""

from typing import Any

from fastapi import APIRouter

from fleetplane.core.auth import PermissionRoute, customer_permission


class Module:
    def __init__(self, name: str, title: str, description: str) -> None:
        self.name = name
        self.title = title
        self.description = description
        self.router = APIRouter(prefix=f"/module/{name}", tags=[title], route_class=PermissionRoute)

    def requires(self, *permissions: str) -> Any:
        return customer_permission(self.name, *permissions)

    @property
    def openapi_url(self) -> str:
        return f"/module/{self.name}/openapi.json"
