"""Every operation without its permission gets 403 permission_denied; with it, succeeds."""

import pytest

from conftest import FULL_CUSTOMER, FULL_PROVIDER, Tenant, all_module_names, assert_problem
from fleetplane.core.permissions import VERBS
from operations import OPERATIONS, Operation, call


def everything_but(held: list[str], needed: str) -> list[str]:
    verb, resource = needed.split(":")
    others = [p for p in held if not p.endswith(f":{resource}")]
    return others + [f"{v}:{resource}" for v in VERBS if v != verb]


def key_for(tenant: Tenant, operation: Operation, *, granted: bool) -> str:
    provider = (
        [operation.permission] if granted else everything_but(FULL_PROVIDER, operation.permission)
    )
    customer = (
        [operation.permission] if granted else everything_but(FULL_CUSTOMER, operation.permission)
    )
    if operation.is_module:
        provider = [] if granted else FULL_PROVIDER
    else:
        customer = [] if granted else FULL_CUSTOMER
    secret, _ = tenant.api.new_key(provider_permissions=provider, customer_permissions=customer)
    return secret


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_without_the_permission_is_denied(tenant: Tenant, operation: Operation) -> None:
    path, body = operation.prepare(tenant)
    api = tenant.module_api(0) if operation.is_module else tenant.api
    response = call(api.with_key(key_for(tenant, operation, granted=False)), operation, path, body)
    problem = assert_problem(response, 403, "permission_denied")
    assert operation.permission in problem["detail"]


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_with_only_the_permission_succeeds(tenant: Tenant, operation: Operation) -> None:
    path, body = operation.prepare(tenant)
    api = tenant.module_api(0) if operation.is_module else tenant.api
    response = call(api.with_key(key_for(tenant, operation, granted=True)), operation, path, body)
    assert response.status_code == operation.success, response.text


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_manage_grants_every_verb(tenant: Tenant, operation: Operation) -> None:
    manage = "manage:" + operation.permission.split(":")[1]
    level = "customer_permissions" if operation.is_module else "provider_permissions"
    secret, _ = tenant.api.new_key(**{level: [manage]})
    path, body = operation.prepare(tenant)
    api = tenant.module_api(0) if operation.is_module else tenant.api
    response = call(api.with_key(secret), operation, path, body)
    assert response.status_code == operation.success, response.text


def test_all_modules_are_enabled_for_matrix_customers(tenant: Tenant) -> None:
    assert tenant.customers[0]["modules"] == all_module_names()
