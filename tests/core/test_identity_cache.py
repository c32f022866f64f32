"""With keys and customers cached, changes made through the API still apply at once."""

import asyncio
from dataclasses import dataclass
from typing import Any

from conftest import RunningServer, assert_problem, make_tenant
from fleetplane.core.auth import IdentityCache


def test_revocation_applies_at_once(caching_server: RunningServer) -> None:
    tenant = make_tenant(caching_server, "Cached keys")
    secret, key = tenant.api.new_key(customer_permissions=["read:devices"])
    api = tenant.module_api(0).with_key(secret)
    assert api.get("/module/devices").status_code == 200  # now cached
    tenant.api.patch(f"/api/api-keys/{key['id']}", json={"customer_permissions": []})
    assert_problem(api.get("/module/devices"), 403, "permission_denied")
    tenant.api.delete(f"/api/api-keys/{key['id']}")
    assert_problem(api.get("/module/devices"), 401, "api_key_revoked")


def test_customer_changes_apply_at_once(caching_server: RunningServer) -> None:
    tenant = make_tenant(caching_server, "Cached customers")
    customer = tenant.customers[0]["id"]
    api = tenant.module_api(0)
    assert api.get("/module/devices").status_code == 200  # now cached
    tenant.api.patch(f"/api/customers/{customer}", json={"modules": []})
    assert_problem(api.get("/module/devices"), 403, "module_disabled")
    tenant.api.patch(f"/api/customers/{customer}", json={"modules": ["devices"]})
    assert api.get("/module/devices").status_code == 200
    tenant.api.delete(f"/api/customers/{customer}")
    assert_problem(api.get("/module/devices"), 404, "customer_not_found")


def test_calls_missing_the_same_entry_share_one_read() -> None:
    cache = IdentityCache(ttl_seconds=600)
    reads: list[str] = []

    async def read() -> Identity:
        reads.append("read")
        await asyncio.sleep(0.01)
        return Identity("key_1")

    async def main() -> list[Any]:
        return await asyncio.gather(*(cache.get_or_read("hash", read) for _ in range(20)))

    answers = asyncio.run(main())
    assert reads == ["read"] and {answer.id for answer in answers} == {"key_1"}


@dataclass(frozen=True)
class Identity:
    id: str
