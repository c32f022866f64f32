import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, assert_problem, run_in_db
from fleetplane.api_keys.models import ApiKey


def test_the_51st_live_key_is_refused(tenant: Tenant) -> None:
    live = len(tenant.api.get("/api/api-keys").json()["items"])
    created = [tenant.api.new_key(name=f"key {n}")[1] for n in range(50 - live)]
    assert len(tenant.api.get("/api/api-keys").json()["items"]) == 50
    response = tenant.api.post("/api/api-keys", json={"name": "one too many"})
    assert_problem(response, 409, "api_key_limit_reached")
    # revoking one makes room again
    assert tenant.api.delete(f"/api/api-keys/{created[0]['id']}").status_code == 204
    assert tenant.api.post("/api/api-keys", json={"name": "replacement"}).status_code == 201


def test_an_expired_key_given_a_new_expiry_counts_against_the_limit(
    tenant: Tenant, server: RunningServer
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, expired = tenant.api.new_key(name="expired", expires_at=later)
    run_in_db(server.settings, lambda session: expire_now(session, expired["id"]))
    live = len(tenant.api.get("/api/api-keys").json()["items"])
    created = [tenant.api.new_key(name=f"key {n}")[1] for n in range(50 - live)]
    for expiry in (None, later):
        revived = tenant.api.patch(f"/api/api-keys/{expired['id']}", json={"expires_at": expiry})
        assert_problem(revived, 409, "api_key_limit_reached")
    assert len(tenant.api.get("/api/api-keys").json()["items"]) == 50
    # other changes to the expired key, and its revival once there is room, are allowed
    renamed = tenant.api.patch(f"/api/api-keys/{expired['id']}", json={"name": "still expired"})
    assert renamed.status_code == 200, renamed.text
    assert tenant.api.delete(f"/api/api-keys/{created[0]['id']}").status_code == 204
    revived = tenant.api.patch(f"/api/api-keys/{expired['id']}", json={"expires_at": later})
    assert revived.status_code == 200, revived.text


async def expire_now(session: AsyncSession, key_id: str) -> None:
    """Makes a key expired as time would (no call sets an expiry in the past)."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=past))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(previous)


def test_a_secret_is_shown_once_and_never_again(
    tenant: Tenant, server: RunningServer, log_lines: list[str]
) -> None:
    response = tenant.api.post(
        "/api/api-keys", json={"name": "integration", "customer_permissions": ["read:devices"]}
    )
    assert response.status_code == 201
    created = response.json()
    secret = created["secret"]
    assert response.headers["location"] == f"/api/api-keys/{created['id']}"
    assert secret.startswith(created["secret_hint"])
    # use the key, change it, revoke it, and read everything back
    used = tenant.module_api(0).with_key(secret).get("/module/devices")
    later = [
        used,
        tenant.api.get("/api/api-keys"),
        tenant.api.get(f"/api/api-keys/{created['id']}"),
        tenant.api.patch(f"/api/api-keys/{created['id']}", json={"name": "renamed"}),
        tenant.api.delete(f"/api/api-keys/{created['id']}"),
        tenant.api.get("/api/api-keys", params={"include_inactive": True}),
        tenant.api.get("/api/audit-log", params={"limit": 1000}),
        tenant.module_api(0).with_key(secret).get("/module/devices"),
    ]
    for answer in later:
        assert secret not in answer.text
        assert "secret_hash" not in answer.text
        assert all(secret not in value for value in answer.headers.values())
    audit = later[6].json()["items"]
    assert any(entry["object_id"] == created["id"] for entry in audit)
    assert not any(secret in line for line in log_lines)


def test_a_key_cannot_grant_more_than_it_holds(tenant: Tenant) -> None:
    secret, _ = tenant.api.new_key(
        provider_permissions=["manage:api_keys"], customer_permissions=["read:devices"]
    )
    limited = tenant.api.with_key(secret)
    response = limited.post(
        "/api/api-keys", json={"name": "escalation", "provider_permissions": ["read:billing"]}
    )
    assert_problem(response, 403, "permission_denied")
    response = limited.post(
        "/api/api-keys", json={"name": "escalation", "customer_permissions": ["manage:devices"]}
    )
    assert_problem(response, 403, "permission_denied")
    fine = limited.post(
        "/api/api-keys", json={"name": "ok", "customer_permissions": ["read:devices"]}
    )
    assert fine.status_code == 201, fine.text


def test_a_restricted_key_cannot_grant_other_customers(tenant: Tenant) -> None:
    first, second = (c["id"] for c in tenant.customers)
    secret, _ = tenant.api.new_key(provider_permissions=["manage:api_keys"], customer_ids=[first])
    limited = tenant.api.with_key(secret)
    assert_problem(limited.post("/api/api-keys", json={"name": "all"}), 403, "permission_denied")
    response = limited.post("/api/api-keys", json={"name": "b", "customer_ids": [second]})
    assert_problem(response, 403, "permission_denied")
    assert (
        limited.post("/api/api-keys", json={"name": "a", "customer_ids": [first]}).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (
            {"name": "x", "provider_permissions": ["read:everything"]},
            ["body", "provider_permissions", 0],
        ),
        (
            {"name": "x", "customer_permissions": ["read:customers"]},
            ["body", "customer_permissions", 0],
        ),
        (
            {"name": "x", "customer_permissions": ["fly:devices"]},
            ["body", "customer_permissions", 0],
        ),
        (
            {"name": "x", "customer_ids": ["cus_00000000000000000000000000"]},
            ["body", "customer_ids", 0],
        ),
        ({"name": ""}, ["body", "name"]),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"]),
        ({"name": "x", "expires_at": "2099-01-01T00:00:00"}, ["body", "expires_at"]),
    ],
)
def test_invalid_keys_name_the_field(tenant: Tenant, body: dict, loc: list) -> None:
    problem = assert_problem(tenant.api.post("/api/api-keys", json=body), 422, "validation_failed")
    assert [e["loc"] for e in problem["errors"]] == [loc]


def test_keys_of_another_providers_customers_are_refused(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    response = tenant.api.post(
        "/api/api-keys",
        json={"name": "x", "customer_ids": [other_tenant.customers[0]["id"]]},
    )
    assert_problem(response, 422, "validation_failed")


def test_update_changes_permissions_at_once(tenant: Tenant) -> None:
    secret, key = tenant.api.new_key(customer_permissions=["read:devices"])
    api = tenant.module_api(0).with_key(secret)
    assert api.get("/module/devices").status_code == 200
    patched = tenant.api.patch(f"/api/api-keys/{key['id']}", json={"customer_permissions": []})
    assert patched.status_code == 200 and patched.json()["customer_permissions"] == []
    assert_problem(api.get("/module/devices"), 403, "permission_denied")


def test_expiry_can_be_set_and_is_shown(tenant: Tenant) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    _, key = tenant.api.new_key(expires_at=expires.isoformat())
    assert datetime.fromisoformat(key["expires_at"]) == expires
