"""The drivers module over HTTP: drivers and their key codes, manual assignments, and who
drove when (`drivers.service.drivers_at`, what the trips module shows)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Api, RunningServer, Tenant, assert_problem, run_in_db
from fleetplane.drivers import service

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def create_driver(api: Api, **fields: Any) -> dict[str, Any]:
    response = api.post("/module/drivers", json={"name": "Anna Berzina", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def assign(api: Api, driver: str, device: str, start: datetime, end: datetime | None = None):
    body = {"driver_id": driver, "device_id": device, "start": rfc3339(start)}
    if end is not None:
        body["end"] = rfc3339(end)
    return api.post("/module/drivers/assignments", json=body)


def assignments(api: Api, **query: str) -> list[dict[str, Any]]:
    response = api.get("/module/drivers/assignments", params={"limit": 1000, **query})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def spans(api: Api, **query: str) -> list[tuple[str, str, str | None, str]]:
    """(driver name, start, end, source) of the listed assignments."""
    return [
        (item["driver_name"], item["start"], item["end"], item["source"])
        for item in assignments(api, **query)
    ]


def test_create_read_update_delete(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    body = {
        "name": "Jānis Ozols",
        "key_codes": ["01A2B3C4D5E6F708", "rfid-77"],
        "phone": "+371 2000 0001",
        "email": "janis@example.com",
        "license_number": "AB123456",
        "license_expires": "2028-03-31",
        "notes": "Night shifts.\nPrefers the Sprinter.",
        "custom_fields": {"employee_number": "E-17", "depot": "Riga", "hazmat": True, "grade": 3},
    }
    created = api.post("/module/drivers", json=body)
    assert created.status_code == 201, created.text
    driver = created.json()
    assert created.headers["location"] == f"/module/drivers/{driver['id']}"
    assert {k: driver[k] for k in body} == body
    assert driver["current_assignment"] is None
    assert driver["created_at"] and driver["updated_at"]
    assert api.get(f"/module/drivers/{driver['id']}").json() == driver

    patched = api.patch(
        f"/module/drivers/{driver['id']}",
        json={"key_codes": ["RFID-78"], "license_expires": None, "custom_fields": {}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["key_codes"] == ["RFID-78"]
    assert patched.json()["license_expires"] is None and patched.json()["custom_fields"] == {}
    assert patched.json()["name"] == "Jānis Ozols"  # not sent: unchanged

    audit = tenant.api.get("/api/audit-log", params={"object_id": driver["id"]}).json()["items"]
    assert [entry["action"] for entry in audit] == ["driver.create", "driver.update"]
    assert all(entry["customer_id"] == api.customer_id for entry in audit)

    assert api.delete(f"/module/drivers/{driver['id']}").status_code == 204
    assert_problem(api.get(f"/module/drivers/{driver['id']}"), 404, "not_found")
    # Its key code is free again.
    assert create_driver(api, key_codes=["rfid-78"])["key_codes"] == ["rfid-78"]


def test_list_searches_names_and_key_codes_page_by_page(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    names = ["Anna Berzina", "Peteris Kalnins", "Ilze Kalnina", "Karlis 100%_Ozols"]
    made = [create_driver(api, name=name, key_codes=[f"K{n}"]) for n, name in enumerate(names)]
    create_driver(tenant.module_api(1), name="Anna of another customer")

    def names_found(**query: Any) -> list[str]:
        return [d["name"] for d in api.get("/module/drivers", params=query).json()["items"]]

    assert names_found() == names
    assert names_found(q="KALNIN") == ["Peteris Kalnins", "Ilze Kalnina"]
    assert names_found(q="100%_") == ["Karlis 100%_Ozols"]  # no wildcards
    assert names_found(q="anna") == ["Anna Berzina"]
    assert names_found(key_code="k2") == ["Ilze Kalnina"]

    first = api.get("/module/drivers", params={"limit": 3}).json()
    assert [d["id"] for d in first["items"]] == [d["id"] for d in made[:3]]
    rest = api.get("/module/drivers", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in rest["items"]] == [made[3]["id"]] and rest["next_cursor"] is None


def test_licences_expiring_before_a_day(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    create_driver(api, name="Soon", license_expires="2027-01-10")
    create_driver(api, name="Later", license_expires="2029-06-01")
    create_driver(api, name="Unknown")
    found = api.get("/module/drivers", params={"license_expires_before": "2027-02-01"})
    assert [d["name"] for d in found.json()["items"]] == ["Soon"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"name": "   "}, ["body", "name"]),
        ({}, ["body", "name"]),
        ({"name": "A", "key_codes": [""]}, ["body", "key_codes", 0]),
        ({"name": "A", "key_codes": ["x" * 65]}, ["body", "key_codes", 0]),
        ({"name": "A", "key_codes": [f"k{n}" for n in range(21)]}, ["body", "key_codes"]),
        ({"name": "A", "key_codes": ["ab12", "AB12"]}, ["body", "key_codes", 1]),
        ({"name": "A", "license_expires": "31.12.2027"}, ["body", "license_expires"]),
        ({"name": "A", "email": "not an address"}, ["body", "email"]),
        ({"name": "A", "phone": "call me"}, ["body", "phone"]),
        ({"name": "A", "custom_fields": {"depot": {"nested": 1}}}, ["body", "custom_fields"]),
        ({"name": "A", "custom_fields": {"": 1}}, ["body", "custom_fields"]),
        (
            {"name": "A", "custom_fields": {f"f{n}": n for n in range(51)}},
            ["body", "custom_fields"],
        ),
        ({"name": "A", "custom_fields": {"n": "x\u0000y"}}, ["body", "custom_fields"]),
        ({"name": "A", "notes": "x" * 2001}, ["body", "notes"]),
        ({"name": "A", "color": "red"}, ["body", "color"]),
    ],
)
def test_bad_drivers_are_refused_naming_the_field(
    tenant: Tenant, body: dict[str, Any], loc: list[Any]
) -> None:
    problem = assert_problem(tenant.module_api(0).post("/module/drivers", json=body), 422,
                             "validation_failed")  # fmt: skip
    assert any(error["loc"][: len(loc)] == loc for error in problem["errors"]), problem


def test_required_fields_may_not_be_nulled(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    driver = create_driver(api)
    for field in ("name", "key_codes", "custom_fields"):
        response = api.patch(f"/module/drivers/{driver['id']}", json={field: None})
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["errors"][0]["loc"] == ["body", field]


def test_a_key_code_belongs_to_one_driver_of_a_customer(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    holder = create_driver(api, name="Holder", key_codes=["01AABBCCDDEEFF10"])
    other = create_driver(api, name="Other", key_codes=["02"])
    for response in (
        api.post("/module/drivers", json={"name": "Twin", "key_codes": ["x", "01aabbccddeeff10"]}),
        api.patch(f"/module/drivers/{other['id']}", json={"key_codes": ["01AABBCCDDEEFF10"]}),
    ):
        problem = assert_problem(response, 409, "conflict")
        assert "01" in problem["detail"] and "Holder" in problem["detail"]
        assert problem["errors"][0]["loc"][:2] == ["body", "key_codes"]
    # Nothing of the refused changes stayed.
    assert api.get(f"/module/drivers/{other['id']}").json()["key_codes"] == ["02"]
    assert [d["name"] for d in api.get("/module/drivers").json()["items"]] == ["Holder", "Other"]
    # A driver keeps their own codes; another customer may use the same code.
    same = api.patch(f"/module/drivers/{holder['id']}", json={"key_codes": ["01aabbccddeeff10"]})
    assert same.status_code == 200, same.text
    create_driver(tenant.module_api(1), key_codes=["01AABBCCDDEEFF10"])


def test_manual_assignments_follow_one_another(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    device = tenant.devices[api.customer_id][0]["id"]
    anna, peter = create_driver(api)["id"], create_driver(api, name="Peteris")["id"]

    first = assign(api, anna, device, at(0))
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/module/drivers/assignments/{first.json()['id']}"
    assert first.json()["end"] is None and first.json()["source"] == "manual"
    # The next one ends it at its start.
    assert assign(api, peter, device, at(60)).status_code == 201
    assert spans(api, device_id=device) == [
        ("Anna Berzina", rfc3339(at(0)), rfc3339(at(60)), "manual"),
        ("Peteris", rfc3339(at(60)), None, "manual"),
    ]
    # One that would overlap a later one is refused; one in a gap before it is not.
    assert_problem(assign(api, anna, device, at(30)), 409, "conflict")
    assert_problem(assign(api, anna, device, at(-30), at(10)), 409, "conflict")
    assert assign(api, anna, device, at(-30), at(0)).status_code == 201

    # Ending the current one, then opening it again.
    current = assignments(api, driver_id=peter)[0]["id"]
    ended = api.patch(f"/module/drivers/assignments/{current}", json={"end": rfc3339(at(90))})
    assert ended.status_code == 200, ended.text
    assert ended.json()["end"] == rfc3339(at(90))
    assert api.get(f"/module/drivers/{peter}").json()["current_assignment"] is None
    assert_problem(
        api.patch(f"/module/drivers/assignments/{current}", json={"end": rfc3339(at(60))}),
        422, "validation_failed",
    )  # fmt: skip
    reopened = api.patch(f"/module/drivers/assignments/{current}", json={"end": None})
    assert reopened.json()["end"] is None
    now_on = api.get(f"/module/drivers/{peter}").json()["current_assignment"]
    assert now_on["id"] == current and now_on["device_id"] == device
    # An earlier one may not be stretched over a later one.
    earlier = assignments(api, driver_id=anna)[0]["id"]
    response = api.patch(f"/module/drivers/assignments/{earlier}", json={"end": rfc3339(at(5))})
    assert_problem(response, 409, "conflict")

    # Ranges: an assignment overlapping [from, to) is listed whole.
    window = {"from": rfc3339(at(50)), "to": rfc3339(at(61))}
    assert [s[0] for s in spans(api, **window)] == ["Anna Berzina", "Peteris"]
    assert spans(api, to=rfc3339(at(-30))) == []
    assert spans(api, **{"from": rfc3339(at(60))}) == [("Peteris", rfc3339(at(60)), None, "manual")]

    assert api.delete(f"/module/drivers/assignments/{current}").status_code == 204
    assert [s[0] for s in spans(api, device_id=device)] == ["Anna Berzina", "Anna Berzina"]
    actions = [
        e["action"]
        for e in tenant.api.get("/api/audit-log", params={"object_id": current}).json()["items"]
    ]
    assert actions == [
        "driver_assignment.create",
        "driver_assignment.update",
        "driver_assignment.update",
        "driver_assignment.delete",
    ]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T10:00:00Z"}, ["body", "end"]),
        ({"start": "2026-11-20T10:00:00Z", "end": "2026-11-20T09:00:00Z"}, ["body", "end"]),
        ({"start": "yesterday"}, ["body", "start"]),
        ({}, ["body", "start"]),
    ],
)
def test_bad_manual_assignments_are_refused_naming_the_field(
    tenant: Tenant, body: dict[str, Any], loc: list[Any]
) -> None:
    api = tenant.module_api(0)
    ids = {
        "driver_id": create_driver(api)["id"],
        "device_id": tenant.devices[api.customer_id][0]["id"],
    }
    response = api.post("/module/drivers/assignments", json={**ids, **body})
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == loc


def test_another_customers_drivers_and_devices_are_not_found(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = tenant.module_api(0), tenant.module_api(1)
    my_device = tenant.devices[mine.customer_id][0]["id"]
    their_device = tenant.devices[theirs.customer_id][0]["id"]
    my_driver = create_driver(mine)["id"]
    their_driver = create_driver(theirs)["id"]
    foreign_driver = create_driver(other_tenant.module_api(0))["id"]
    foreign_device = other_tenant.devices[other_tenant.customers[0]["id"]][0]["id"]
    for driver, device in [
        (their_driver, my_device),
        (my_driver, their_device),
        (foreign_driver, my_device),
        (my_driver, foreign_device),
        ("drv_nonsense", my_device),
    ]:
        assert_problem(assign(mine, driver, device, at(0)), 404, "not_found")
    for query in ({"driver_id": their_driver}, {"device_id": their_device},
                  {"device_id": foreign_device}):  # fmt: skip
        response = mine.get("/module/drivers/assignments", params=query)
        assert_problem(response, 404, "not_found")
    made = assign(theirs, their_driver, their_device, at(0)).json()["id"]
    assert_problem(mine.get(f"/module/drivers/assignments/{made}"), 404, "not_found")
    assert assignments(mine) == []
    assert [d["id"] for d in mine.get("/module/drivers").json()["items"]] == [my_driver]


def test_who_drove_when(server: RunningServer, tenant: Tenant) -> None:
    """`drivers_at`: the trips module's question, for a page of (device, time) pairs."""
    api = tenant.module_api(0)
    first, second = (d["id"] for d in tenant.devices[api.customer_id])
    anna, peter = create_driver(api)["id"], create_driver(api, name="Peteris")["id"]
    assert assign(api, anna, first, at(0), at(60)).status_code == 201
    assert assign(api, peter, first, at(60)).status_code == 201
    assert assign(api, peter, second, at(-100), at(-50)).status_code == 201
    theirs = tenant.module_api(1)
    their_device = tenant.devices[theirs.customer_id][0]["id"]
    assign(theirs, create_driver(theirs)["id"], their_device, at(0))
    pairs = [
        (first, at(-1)),
        (first, at(0)),
        (first, at(59.9)),
        (first, at(60)),
        (first, at(10_000)),
        (second, at(-75)),
        (second, at(-50)),
        (their_device, at(30)),
    ]

    async def ask(session: Any) -> dict[Any, Any]:
        return await service.drivers_at(session, api.customer_id, pairs)

    found = run_in_db(server.settings, ask)
    assert found == {
        (first, at(0)): (anna, "Anna Berzina"),
        (first, at(59.9)): (anna, "Anna Berzina"),
        (first, at(60)): (peter, "Peteris"),
        (first, at(10_000)): (peter, "Peteris"),
        (second, at(-75)): (peter, "Peteris"),
    }


def test_assignments_are_listed_page_by_page_in_start_order(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    first, second = (d["id"] for d in tenant.devices[api.customer_id])
    driver = create_driver(api)["id"]
    for device, start in [(first, 30), (second, 0), (first, 0), (second, 45), (first, 60)]:
        response = assign(api, driver, device, at(start), at(start + 10))
        assert response.status_code == 201, response.text
    everything = assignments(api)
    assert [item["start"] for item in everything] == [
        rfc3339(at(start)) for start in (0, 0, 30, 45, 60)
    ]
    paged, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/module/drivers/assignments", params=params).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything and len(paged) == 5
    bad = api.get("/module/drivers/assignments", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert_problem(bad, 422, "validation_failed")


def test_a_moved_device_starts_a_timeline_of_its_own_for_its_new_customer(
    tenant: Tenant,
) -> None:
    old, new = tenant.module_api(0), tenant.module_api(1)
    device = tenant.devices[old.customer_id][0]["id"]
    assert assign(old, create_driver(old)["id"], device, at(0)).status_code == 201
    moved = tenant.api.patch(f"/api/devices/{device}", json={"customer_id": new.customer_id})
    assert moved.status_code == 200, moved.text
    response = assign(new, create_driver(new, name="Peteris")["id"], device, at(10))
    assert response.status_code == 201, response.text
    # Each customer keeps its own history of the device.
    assert spans(old) == [("Anna Berzina", rfc3339(at(0)), None, "manual")]
    assert spans(new, device_id=device) == [("Peteris", rfc3339(at(10)), None, "manual")]
    assert_problem(old.get("/module/drivers/assignments", params={"device_id": device}), 404,
                   "not_found")  # fmt: skip
