"""A key sees and changes only keys within its own reach (permissions, customers, expiry),
and can never widen its own."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from conftest import FULL_CUSTOMER, FULL_PROVIDER, Api, Tenant, assert_problem


def _refused_field(response: httpx.Response, field: str) -> None:
    problem = assert_problem(response, 403, "permission_denied")
    assert [error["loc"] for error in problem["errors"]] == [["body", field]], problem


def _admin_key_id(tenant: Tenant) -> str:
    keys = tenant.api.get("/api/api-keys").json()["items"]
    [admin] = [k for k in keys if k["customer_ids"] is None and k["expires_at"] is None]
    return admin["id"]


def _in_minutes(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


def _restricted(tenant: Tenant) -> tuple[Api, dict[str, Any]]:
    first = tenant.customers[0]["id"]
    secret, key = tenant.api.new_key(
        name="customer A keys",
        provider_permissions=["manage:api_keys"],
        customer_permissions=["read:devices", "read:messages"],
        customer_ids=[first],
    )
    return tenant.api.with_key(secret), key


def test_a_restricted_key_cannot_see_or_touch_wider_keys(tenant: Tenant) -> None:
    limited, own = _restricted(tenant)
    admin_id = _admin_key_id(tenant)
    for path in (f"/api/api-keys/{admin_id}",):
        assert_problem(limited.get(path), 404, "not_found")
        assert_problem(limited.patch(path, json={"name": "mine now"}), 404, "not_found")
        assert_problem(limited.patch(path, json={"provider_permissions": []}), 404, "not_found")
        assert_problem(limited.delete(path), 404, "not_found")
    # an unrestricted key with no more permissions than the limited one is still wider
    _, unrestricted = tenant.api.new_key(
        name="all customers", customer_permissions=["read:devices"]
    )
    path = f"/api/api-keys/{unrestricted['id']}"
    assert_problem(
        limited.patch(path, json={"customer_permissions": ["read:devices", "read:messages"]}),
        404,
        "not_found",
    )
    listed = {k["id"] for k in limited.get("/api/api-keys", params={"limit": 1000}).json()["items"]}
    assert admin_id not in listed and unrestricted["id"] not in listed and own["id"] in listed
    # the admin key is untouched
    admin = tenant.api.get(f"/api/api-keys/{admin_id}").json()
    assert admin["revoked_at"] is None and set(admin["provider_permissions"]) == set(FULL_PROVIDER)


def test_a_restricted_key_manages_keys_within_its_reach(tenant: Tenant) -> None:
    limited, _ = _restricted(tenant)
    first, second = (c["id"] for c in tenant.customers)
    created = limited.post(
        "/api/api-keys",
        json={"name": "narrow", "customer_permissions": ["read:devices"], "customer_ids": [first]},
    )
    assert created.status_code == 201, created.text
    path = f"/api/api-keys/{created.json()['id']}"
    assert limited.get(path).status_code == 200
    renamed = limited.patch(path, json={"name": "narrower"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "narrower"
    _refused_field(limited.patch(path, json={"customer_ids": [first, second]}), "customer_ids")
    _refused_field(limited.patch(path, json={"customer_ids": None}), "customer_ids")
    _refused_field(
        limited.patch(path, json={"customer_permissions": ["manage:devices"]}),
        "customer_permissions",
    )
    assert limited.delete(path).status_code == 204


def test_a_key_cannot_widen_itself(tenant: Tenant) -> None:
    limited, own = _restricted(tenant)
    path = f"/api/api-keys/{own['id']}"
    _refused_field(limited.patch(path, json={"customer_ids": None}), "customer_ids")
    _refused_field(
        limited.patch(path, json={"provider_permissions": ["manage:api_keys", "read:billing"]}),
        "provider_permissions",
    )
    # narrowing itself is fine
    narrowed = limited.patch(path, json={"customer_permissions": ["read:devices"]})
    assert narrowed.status_code == 200, narrowed.text


def test_an_expiring_key_cannot_outlive_itself(tenant: Tenant) -> None:
    secret, own = tenant.api.new_key(
        name="five minutes",
        provider_permissions=FULL_PROVIDER,
        customer_permissions=FULL_CUSTOMER,
        expires_at=_in_minutes(5),
    )
    short_lived = tenant.api.with_key(secret)
    _refused_field(short_lived.post("/api/api-keys", json={"name": "forever"}), "expires_at")
    _refused_field(
        short_lived.post("/api/api-keys", json={"name": "later", "expires_at": _in_minutes(60)}),
        "expires_at",
    )
    sooner = short_lived.post(
        "/api/api-keys", json={"name": "sooner", "expires_at": _in_minutes(4)}
    )
    assert sooner.status_code == 201, sooner.text
    path = f"/api/api-keys/{own['id']}"
    _refused_field(short_lived.patch(path, json={"expires_at": None}), "expires_at")
    _refused_field(short_lived.patch(path, json={"expires_at": _in_minutes(60)}), "expires_at")
    assert tenant.api.get(path).json()["expires_at"] == own["expires_at"]
    # a key that never expires is beyond its reach, so it is not there for it
    assert_problem(short_lived.get(f"/api/api-keys/{_admin_key_id(tenant)}"), 404, "not_found")


def test_a_key_with_fewer_permissions_cannot_see_a_key_with_more(tenant: Tenant) -> None:
    secret, _ = tenant.api.new_key(name="key admin", provider_permissions=["manage:api_keys"])
    keys_only = tenant.api.with_key(secret)
    _, wider = tenant.api.new_key(name="reads customers", provider_permissions=["read:customers"])
    assert_problem(keys_only.get(f"/api/api-keys/{wider['id']}"), 404, "not_found")
    assert_problem(keys_only.delete(f"/api/api-keys/{wider['id']}"), 404, "not_found")


def test_pages_of_keys_within_reach_hold_every_such_key_once(tenant: Tenant) -> None:
    limited, own = _restricted(tenant)
    first = tenant.customers[0]["id"]
    for n in range(3):
        tenant.api.new_key(name=f"wide {n}")
        tenant.api.new_key(name=f"narrow {n}", customer_ids=[first])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        page = limited.get("/api/api-keys", params=params).json()
        seen += [key["name"] for key in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted([own["name"], "narrow 0", "narrow 1", "narrow 2"])
