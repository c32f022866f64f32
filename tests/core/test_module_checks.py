"""The four module checks, in the contract's order, each with its own code; key failures."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from conftest import Api, Tenant, assert_problem


def test_no_key(tenant: Tenant) -> None:
    anonymous = tenant.module_api(0).with_key(None)
    assert_problem(anonymous.get("/module/devices"), 401, "api_key_missing")
    assert_problem(tenant.api.with_key(None).get("/api/customers"), 401, "api_key_missing")


@pytest.mark.parametrize("secret", ["fpk_unknown", "x", "fpk_" + "A" * 43, "fpk_" + "z" * 4000])
def test_unknown_key(tenant: Tenant, secret: str) -> None:
    api = tenant.module_api(0).with_key(secret)
    assert_problem(api.get("/module/devices"), 401, "api_key_invalid")


def test_missing_customer_header(tenant: Tenant) -> None:
    assert_problem(tenant.api.get("/module/devices"), 400, "customer_header_missing")


@pytest.mark.parametrize("customer_id", ["cus_00000000000000000000000000", "nope", "' OR 1=1 --"])
def test_unknown_customer(tenant: Tenant, customer_id: str) -> None:
    api = tenant.api.as_customer(customer_id)
    assert_problem(api.get("/module/devices"), 404, "customer_not_found")


def test_module_disabled(tenant: Tenant) -> None:
    customer = tenant.customers[0]["id"]
    assert tenant.api.patch(f"/api/customers/{customer}", json={"modules": []}).status_code == 200
    assert_problem(tenant.module_api(0).get("/module/devices"), 403, "module_disabled")


def test_permission_missing(tenant: Tenant) -> None:
    secret, _ = tenant.api.new_key(customer_permissions=["read:trips"])
    problem = assert_problem(
        tenant.module_api(0).with_key(secret).get("/module/devices"), 403, "permission_denied"
    )
    assert "read:devices" in problem["detail"]


def test_suspended_customer_is_refused(tenant: Tenant) -> None:
    customer = tenant.customers[0]["id"]
    tenant.api.patch(f"/api/customers/{customer}", json={"status": "suspended"})
    assert_problem(tenant.module_api(0).get("/module/devices"), 403, "customer_suspended")
    tenant.api.patch(f"/api/customers/{customer}", json={"status": "active"})
    assert tenant.module_api(0).get("/module/devices").status_code == 200


def test_checks_run_in_the_contracts_order(tenant: Tenant, other_tenant: Tenant) -> None:
    weak, _ = tenant.api.new_key(customer_permissions=["read:trips"])
    customer = tenant.customers[0]["id"]
    tenant.api.patch(f"/api/customers/{customer}", json={"modules": []})
    weak_api = tenant.module_api(0).with_key(weak)
    # module disabled comes before the missing permission
    assert_problem(weak_api.get("/module/devices"), 403, "module_disabled")
    # a foreign customer comes before the disabled module and the permission
    foreign = weak_api.as_customer(other_tenant.customers[0]["id"])
    assert_problem(foreign.get("/module/devices"), 404, "customer_not_found")
    # the key comes first of all
    assert_problem(foreign.with_key("fpk_nope").get("/module/devices"), 401, "api_key_invalid")
    assert_problem(
        foreign.as_customer(None).with_key("fpk_nope").get("/module/devices"),
        401,
        "api_key_invalid",
    )


def test_revoked_key(tenant: Tenant) -> None:
    secret, key = tenant.api.new_key(customer_permissions=["read:devices"])
    api = tenant.module_api(0).with_key(secret)
    assert api.get("/module/devices").status_code == 200
    assert tenant.api.delete(f"/api/api-keys/{key['id']}").status_code == 204
    assert_problem(api.get("/module/devices"), 401, "api_key_revoked")
    assert_problem(api.get("/api/customers"), 401, "api_key_revoked")


def test_expired_key(tenant: Tenant) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    secret, _ = tenant.api.new_key(
        customer_permissions=["read:devices"], expires_at=expires.isoformat()
    )
    api = tenant.module_api(0).with_key(secret)
    assert api.get("/module/devices").status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert_problem(api.get("/module/devices"), 401, "api_key_expired")


def test_expired_and_revoked_keys_are_not_live(tenant: Tenant) -> None:
    secret, key = tenant.api.new_key()
    tenant.api.delete(f"/api/api-keys/{key['id']}")
    listed = {k["id"] for k in tenant.api.get("/api/api-keys").json()["items"]}
    assert key["id"] not in listed
    everything = tenant.api.get("/api/api-keys", params={"include_inactive": True}).json()
    revoked = next(k for k in everything["items"] if k["id"] == key["id"])
    assert revoked["revoked_at"] is not None
    assert Api(tenant.api.base_url, secret).get("/api/customers").status_code == 401
