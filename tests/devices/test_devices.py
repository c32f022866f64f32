from conftest import Tenant, assert_problem


def test_add_read_update_delete(tenant: Tenant) -> None:
    created = tenant.api.post(
        "/api/devices",
        json=tenant.device_body(unique_id="356307042441013", name="Van 7", phone="+371 2000 0000",
                                password="s3cret"),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    device = created.json()
    assert created.headers["location"] == f"/api/devices/{device['id']}"
    assert device["has_password"] is True
    assert "password" not in device and "s3cret" not in created.text
    assert device["customer_id"] is None

    patched = tenant.api.patch(f"/api/devices/{device['id']}", json={"password": None})
    assert patched.json()["has_password"] is False
    assert tenant.api.delete(f"/api/devices/{device['id']}").status_code == 204
    assert_problem(tenant.api.get(f"/api/devices/{device['id']}"), 404, "not_found")


def test_unique_id_is_unique_within_the_channel(tenant: Tenant, other_tenant: Tenant) -> None:
    body = tenant.device_body(unique_id="868683020000001", name="First")
    assert tenant.api.post("/api/devices", json=body).status_code == 201
    assert_problem(tenant.api.post("/api/devices", json=body), 409, "conflict")
    # the same identifier on another channel is another device
    elsewhere = other_tenant.device_body(unique_id="868683020000001")
    assert other_tenant.api.post("/api/devices", json=elsewhere).status_code == 201
    second = tenant.api.post(
        "/api/devices", json=tenant.device_body(unique_id="868683020000002", name="2nd")
    )
    response = tenant.api.patch(
        f"/api/devices/{second.json()['id']}", json={"unique_id": "868683020000001"}
    )
    assert_problem(response, 409, "conflict")


def test_assign_move_and_unassign(tenant: Tenant) -> None:
    first, second = (c["id"] for c in tenant.customers)
    device = tenant.api.post("/api/devices", json=tenant.device_body(name="Roaming")).json()
    path = f"/api/devices/{device['id']}"

    def module_ids(index: int) -> set[str]:
        return {d["id"] for d in tenant.module_api(index).get("/module/devices").json()["items"]}

    assert tenant.api.patch(path, json={"customer_id": first}).json()["customer_id"] == first
    assert device["id"] in module_ids(0)
    assert tenant.api.patch(path, json={"customer_id": second}).json()["customer_id"] == second
    assert device["id"] not in module_ids(0) and device["id"] in module_ids(1)
    assert tenant.api.patch(path, json={"customer_id": None}).json()["customer_id"] is None
    assert device["id"] not in module_ids(1)

    actions = [
        e["action"]
        for e in tenant.api.get("/api/audit-log", params={"object_id": device["id"]}).json()[
            "items"
        ]
    ]
    assert actions == ["device.create", "device.assign", "device.move", "device.unassign"]


def test_assigning_to_a_foreign_customer_is_refused(tenant: Tenant, other_tenant: Tenant) -> None:
    device = tenant.devices[tenant.customers[0]["id"]][0]
    response = tenant.api.patch(
        f"/api/devices/{device['id']}", json={"customer_id": other_tenant.customers[0]["id"]}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "customer_id"]


def test_inventory_filters(tenant: Tenant) -> None:
    customer = tenant.customers[0]["id"]
    spare = tenant.api.post("/api/devices", json=tenant.device_body(unique_id="SPARE1")).json()
    of_customer = tenant.api.get("/api/devices", params={"customer_id": customer}).json()["items"]
    assert {d["id"] for d in of_customer} == {d["id"] for d in tenant.devices[customer]}
    unassigned = tenant.api.get("/api/devices", params={"unassigned": True}).json()["items"]
    assert [d["id"] for d in unassigned] == [spare["id"]]
    by_uid = tenant.api.get("/api/devices", params={"unique_id": "SPARE1"}).json()["items"]
    assert [d["id"] for d in by_uid] == [spare["id"]]


def test_customers_see_their_device_without_provider_fields(tenant: Tenant) -> None:
    device = tenant.devices[tenant.customers[0]["id"]][0]
    seen = tenant.module_api(0).get(f"/module/devices/{device['id']}")
    assert seen.status_code == 200
    assert seen.json()["unique_id"] == device["unique_id"]
    assert "has_password" not in seen.json()


def test_moving_to_another_channel_checks_the_identifier_there(tenant: Tenant) -> None:
    from conftest import create_channel

    other_channel = create_channel(tenant.api)["id"]
    taken = tenant.device_body(channel_id=other_channel, unique_id="SAMEID1")
    assert tenant.api.post("/api/devices", json=taken).status_code == 201
    mover = tenant.api.post("/api/devices", json=tenant.device_body(unique_id="SAMEID1")).json()
    path = f"/api/devices/{mover['id']}"
    assert_problem(tenant.api.patch(path, json={"channel_id": other_channel}), 409, "conflict")
    assert_problem(tenant.api.patch(path, json={"channel_id": None}), 422, "validation_failed")
    free = tenant.api.patch(path, json={"channel_id": other_channel, "unique_id": "SAMEID2"})
    assert free.status_code == 200 and free.json()["channel_id"] == other_channel
