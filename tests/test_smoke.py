from conftest import Tenant


def test_module_devices_lists_only_the_customers_devices(tenant: Tenant) -> None:
    customer = tenant.customers[0]
    response = tenant.module_api(0).get("/module/devices")
    assert response.status_code == 200, response.text
    ids = {item["id"] for item in response.json()["items"]}
    assert ids == {device["id"] for device in tenant.devices[customer["id"]]}
