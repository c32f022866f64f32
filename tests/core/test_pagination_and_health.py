from conftest import Api, RunningServer, Tenant


def test_pages_walk_every_item_once_in_a_stable_order(tenant: Tenant) -> None:
    for number in range(7):
        tenant.api.post("/api/customers", json={"name": f"Paged {number}"})
    expected = [
        c["id"] for c in tenant.api.get("/api/customers", params={"limit": 1000}).json()["items"]
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = tenant.api.get("/api/customers", params=params).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if len(seen) == 3:  # rows added while paging appear at the end, nothing is skipped
            expected.append(tenant.api.post("/api/customers", json={"name": "Late"}).json()["id"])
    assert seen == expected


def test_health_and_readiness(server: RunningServer) -> None:
    anonymous = Api(server.base_url, None)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
