from conftest import Tenant, all_module_names, assert_problem


def test_create_read_update_delete(tenant: Tenant) -> None:
    body = {
        "name": "Nordic Haulage",
        "modules": ["devices"],
        "plan": "standard",
        "timezone": "Europe/Oslo",
        "retention_days": 90,
        "contact": {"name": "Ola", "email": "ola@haulage.example", "phone": "+47 123"},
    }
    created = tenant.api.post("/api/customers", json=body)
    assert created.status_code == 201, created.text
    customer = created.json()
    assert created.headers["location"] == f"/api/customers/{customer['id']}"
    assert {k: customer[k] for k in body} == body
    assert customer["status"] == "active"
    assert tenant.api.get(f"/api/customers/{customer['id']}").json() == customer

    patched = tenant.api.patch(f"/api/customers/{customer['id']}", json={"retention_days": 30})
    assert patched.status_code == 200
    assert patched.json()["retention_days"] == 30
    assert patched.json()["timezone"] == "Europe/Oslo"  # untouched

    assert tenant.api.delete(f"/api/customers/{customer['id']}").status_code == 204
    assert_problem(tenant.api.get(f"/api/customers/{customer['id']}"), 404, "not_found")


def test_defaults(tenant: Tenant) -> None:
    customer = tenant.api.post("/api/customers", json={"name": "Plain"}).json()
    assert customer["modules"] == ["devices"]
    assert customer["timezone"] == "UTC"
    assert customer["retention_days"] == 365
    assert customer["contact"] is None


def test_only_existing_modules_can_be_enabled(tenant: Tenant) -> None:
    customer = tenant.customers[0]["id"]
    problem = assert_problem(
        tenant.api.patch(f"/api/customers/{customer}", json={"modules": ["devices", "warp"]}),
        422,
        "validation_failed",
    )
    assert problem["errors"][0]["loc"] == ["body", "modules"]
    assert "warp" in problem["errors"][0]["msg"]
    ok = tenant.api.patch(f"/api/customers/{customer}", json={"modules": all_module_names()})
    assert ok.status_code == 200


def test_filter_by_status(tenant: Tenant) -> None:
    suspended = tenant.api.post(
        "/api/customers", json={"name": "Late payer", "status": "suspended"}
    )
    listed = tenant.api.get("/api/customers", params={"status": "suspended"}).json()["items"]
    assert [c["id"] for c in listed] == [suspended.json()["id"]]


def test_deleting_a_customer_returns_its_devices_to_inventory(tenant: Tenant) -> None:
    customer = tenant.customers[1]["id"]
    device_ids = {d["id"] for d in tenant.devices[customer]}
    assert tenant.api.delete(f"/api/customers/{customer}").status_code == 204
    for device_id in device_ids:
        device = tenant.api.get(f"/api/devices/{device_id}").json()
        assert device["customer_id"] is None
    assert_problem(tenant.module_api(1).get("/module/devices"), 404, "customer_not_found")
