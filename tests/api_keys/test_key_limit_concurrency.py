"""The live-key limit holds when many keys are created at the same moment."""

import asyncio

import httpx

from conftest import RunningServer, Tenant
from fleetplane.api_keys.service import MAX_LIVE_KEYS

CONCURRENT_CREATES = 40


async def _create_at_once(base_url: str, secret: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/api-keys",
                    json={"name": f"racer {n}"},
                    headers={"x-platform-api-key": secret},
                )
                for n in range(count)
            )
        )
    return [answer.status_code for answer in answers]


def test_concurrent_creates_never_pass_the_live_key_limit(
    server: RunningServer, tenant: Tenant
) -> None:
    live = len(tenant.api.get("/api/api-keys").json()["items"])
    for n in range(MAX_LIVE_KEYS - 5 - live):
        tenant.api.new_key(name=f"existing {n}")
    statuses = asyncio.run(_create_at_once(server.base_url, tenant.api.key, CONCURRENT_CREATES))
    assert sorted(set(statuses)) == [201, 409], statuses
    assert statuses.count(201) == 5
    keys = tenant.api.get("/api/api-keys", params={"limit": 1000}).json()["items"]
    assert len(keys) == MAX_LIVE_KEYS
