"""The geofences module over HTTP: geofences and groups, bad geometry, which geofences hold a
position, GeoJSON export and import, and one customer's geofences hidden from another."""

from typing import Any

import pytest
from geographiclib.geodesic import Geodesic

from conftest import Api, Tenant, assert_problem

GEODESIC = Geodesic.WGS84
DEPOT = {"type": "Point", "coordinates": [24.1052, 56.9496]}
YARD = {
    "type": "Polygon",
    "coordinates": [
        [[24.0, 56.0], [24.2, 56.0], [24.2, 56.1], [24.0, 56.1], [24.0, 56.0]],
        [[24.05, 56.02], [24.15, 56.02], [24.15, 56.08], [24.05, 56.08], [24.05, 56.02]],
    ],
}
ROUTE = {"type": "LineString", "coordinates": [[24.0, 56.9], [24.5, 57.2], [25.5, 57.0]]}
DATELINE = {
    "type": "Polygon",
    "coordinates": [[[179.5, -1.0], [-179.5, -1.0], [-179.5, 1.0], [179.5, 1.0], [179.5, -1.0]]],
}


def create(api: Api, **fields: Any) -> dict[str, Any]:
    response = api.post("/module/geofences", json={"name": "Depot", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def names_at(api: Api, lat: float, lon: float) -> list[str]:
    response = api.get("/module/geofences/contains", params={"lat": lat, "lon": lon})
    assert response.status_code == 200, response.text
    return sorted(item["name"] for item in response.json()["items"])


def listed(api: Api, **query: Any) -> list[dict[str, Any]]:
    response = api.get("/module/geofences", params={"limit": 1000, **query})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def at_distance(lat: float, lon: float, bearing: float, distance_m: float) -> tuple[float, float]:
    moved = GEODESIC.Direct(lat, lon, bearing, distance_m)
    return moved["lat2"], moved["lon2"]


def test_create_read_update_delete(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    group = api.post("/module/geofences/groups", json={"name": "Depots", "color": "#112233"})
    assert group.status_code == 201, group.text
    assert group.headers["location"] == f"/module/geofences/groups/{group.json()['id']}"
    body = {
        "name": "Riga depot",
        "description": "Gate on the north side.",
        "geometry": DEPOT,
        "radius_m": 150,
        "color": "#ff8800",
        "group_ids": [group.json()["id"]],
        "is_address": True,
        "speed_limit": 20,
    }
    created = api.post("/module/geofences", json=body)
    assert created.status_code == 201, created.text
    fence = created.json()
    assert created.headers["location"] == f"/module/geofences/{fence['id']}"
    assert {key: fence[key] for key in body} == body
    assert fence["shape"] == "circle" and fence["width_m"] is None
    assert fence["area_m2"] == pytest.approx(3.14159 * 150**2, rel=1e-3)
    assert api.get(f"/module/geofences/{fence['id']}").json() == fence
    assert [item["id"] for item in listed(api)] == [fence["id"]]

    # Another shape: the circle's radius goes, the corridor's width is needed.
    needs_width = api.patch(f"/module/geofences/{fence['id']}", json={"geometry": ROUTE})
    error = assert_problem(needs_width, 422, "validation_failed")
    assert error["errors"][0]["loc"] == ["body", "width_m"]
    patched = api.patch(
        f"/module/geofences/{fence['id']}",
        json={"geometry": ROUTE, "width_m": 40, "group_ids": [], "speed_limit": None},
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert changed["shape"] == "corridor" and changed["geometry"] == ROUTE
    assert changed["radius_m"] is None and changed["width_m"] == 40
    assert changed["group_ids"] == [] and changed["speed_limit"] is None
    assert changed["name"] == "Riga depot" and changed["is_address"] is True  # not sent
    widened = api.patch(f"/module/geofences/{fence['id']}", json={"width_m": 60})
    assert widened.json()["area_m2"] == pytest.approx(changed["area_m2"] * 1.5, rel=0.01)
    null_name = api.patch(f"/module/geofences/{fence['id']}", json={"name": None})
    assert assert_problem(null_name, 422, "validation_failed")["errors"][0]["loc"] == [
        "body",
        "name",
    ]

    polygon = create(api, name="Yard", geometry=YARD)
    assert polygon["shape"] == "polygon" and polygon["radius_m"] is None
    assert [item["name"] for item in listed(api, shape="polygon")] == ["Yard"]
    assert [item["name"] for item in listed(api, q="rIGA")] == ["Riga depot"]
    assert [item["name"] for item in listed(api, is_address="true")] == ["Riga depot"]

    audit = tenant.api.get("/api/audit-log", params={"object_id": fence["id"]}).json()["items"]
    assert {entry["action"] for entry in audit} >= {"geofence.create", "geofence.update"}

    deleted = api.delete(f"/module/geofences/{fence['id']}")
    assert deleted.status_code == 204
    assert_problem(api.get(f"/module/geofences/{fence['id']}"), 404, "not_found")
    assert [item["name"] for item in listed(api)] == ["Yard"]


def test_groups(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    depots = api.post("/module/geofences/groups", json={"name": "Depots"}).json()
    clients = api.post("/module/geofences/groups", json={"name": "Clients"}).json()
    both = create(api, geometry=DEPOT, radius_m=100, group_ids=[depots["id"], clients["id"]])
    create(api, name="Other", geometry=DEPOT, radius_m=50, group_ids=[clients["id"]])
    assert [item["id"] for item in listed(api, group_id=depots["id"])] == [both["id"]]
    assert len(listed(api, group_id=clients["id"])) == 2

    renamed = api.patch(f"/module/geofences/groups/{depots['id']}", json={"name": "Bases"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Bases"
    groups = api.get("/module/geofences/groups").json()["items"]
    assert [group["name"] for group in groups] == ["Bases", "Clients"]

    unknown = api.post(
        "/module/geofences",
        json={"name": "X", "geometry": DEPOT, "radius_m": 5, "group_ids": ["gfg_nope"]},
    )
    assert assert_problem(unknown, 422, "validation_failed")["errors"][0]["loc"] == [
        "body",
        "group_ids",
        0,
    ]
    assert api.delete(f"/module/geofences/groups/{depots['id']}").status_code == 204
    assert api.get(f"/module/geofences/{both['id']}").json()["group_ids"] == [clients["id"]]
    assert_problem(api.get(f"/module/geofences/groups/{depots['id']}"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (
            {"geometry": {"type": "Polygon",
                          "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}},
            ["body", "geometry", "coordinates"], "crosses itself",
        ),
        (
            {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}},
            ["body", "geometry", "coordinates", 0], "not closed",
        ),
        (
            {"geometry": {"type": "Polygon",
                          "coordinates": [[[0, 0], [1, 0], [1, 95], [0, 0]]]}},
            ["body", "geometry", "coordinates", 0, 2, 1], "latitude 95.0 is out of range",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [-190, 10]}, "radius_m": 10},
            ["body", "geometry", "coordinates", 0], "longitude -190.0 is out of range",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [10, 10]}, "radius_m": 0},
            ["body", "radius_m"], "greater than 0",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [10, 10]}, "radius_m": -3},
            ["body", "radius_m"], "greater than 0",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [10, 10]}},
            ["body", "radius_m"], "needs radius_m",
        ),
        (
            {"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "width_m": 0},
            ["body", "width_m"], "greater than 0",
        ),
        (
            {"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
            ["body", "width_m"], "needs width_m",
        ),
        (
            {"geometry": {"type": "Polygon",
                          "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, "radius_m": 4},
            ["body", "radius_m"], "only a circle",
        ),
        (
            {"geometry": {"type": "Circle", "coordinates": [0, 0]}, "radius_m": 4},
            ["body", "geometry"], "",
        ),
    ],
)  # fmt: skip
def test_invalid_geometry_is_a_problem_naming_it(
    tenant: Tenant, body: dict[str, Any], loc: list[Any], words: str
) -> None:
    api = tenant.module_api(0)
    response = api.post("/module/geofences", json={"name": "Bad", **body})
    problem = assert_problem(response, 422, "validation_failed")
    [error] = problem["errors"]
    assert error["loc"][: len(loc)] == loc, error
    assert words in error["msg"], error
    assert listed(api) == []


def test_contains_at_each_shape(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    create(api, name="Circle", geometry=DEPOT, radius_m=150)
    create(api, name="Yard", geometry=YARD)
    create(api, name="Route", geometry=ROUTE, width_m=40)
    create(api, name="Dateline", geometry=DATELINE)
    create(api, name="Pole", geometry={"type": "Point", "coordinates": [0, 89.95]}, radius_m=20_000)
    lon, lat = DEPOT["coordinates"]
    assert names_at(api, *at_distance(lat, lon, 33, 150 * 0.995)) == ["Circle"]
    assert names_at(api, *at_distance(lat, lon, 33, 150 * 1.005)) == []
    assert names_at(api, 56.01, 24.1) == ["Yard"]
    assert names_at(api, 56.05, 24.1) == []  # in the hole
    assert names_at(api, 56.0, 24.1) == ["Yard"]  # on the edge
    segment = GEODESIC.InverseLine(57.2, 24.5, 57.0, 25.5)
    middle = segment.Position(segment.s13 / 2)
    for side in (90, -90):
        bearing = middle["azi2"] + side
        assert names_at(api, *at_distance(middle["lat2"], middle["lon2"], bearing, 19.9)) == [
            "Route"
        ]
        assert names_at(api, *at_distance(middle["lat2"], middle["lon2"], bearing, 20.1)) == []
    assert names_at(api, 0.5, 179.9) == names_at(api, 0.5, -179.9) == ["Dateline"]
    assert names_at(api, 0.5, 180) == names_at(api, 0.5, -180) == ["Dateline"]
    assert names_at(api, 0.5, 179.4) == []
    assert names_at(api, 90, 0) == names_at(api, 89.9, -170) == ["Pole"]
    assert names_at(api, 89.7, 0) == []
    for query in ({"lat": 91, "lon": 0}, {"lat": 0, "lon": 181}, {"lat": "nan", "lon": 0}, {}):
        bad = api.get("/module/geofences/contains", params=query)
        assert_problem(bad, 422, "validation_failed")


def test_export_and_import_round_trip(tenant: Tenant) -> None:
    source, target = tenant.module_api(0), tenant.module_api(1)
    group = source.post("/module/geofences/groups", json={"name": "Depots"}).json()
    create(source, name="Circle", geometry=DEPOT, radius_m=150, group_ids=[group["id"]],
           is_address=True, speed_limit=30, color="#00ff00", description="Main")  # fmt: skip
    create(source, name="Yard", geometry=YARD)
    create(source, name="Route", geometry=ROUTE, width_m=40)
    create(source, name="Dateline", geometry=DATELINE)
    exported = source.get("/module/geofences/export")
    assert exported.status_code == 200, exported.text
    collection = exported.json()
    assert collection["type"] == "FeatureCollection"
    assert [feature["properties"]["name"] for feature in collection["features"]] == [
        "Circle", "Yard", "Route", "Dateline",
    ]  # fmt: skip
    circle = collection["features"][0]
    assert circle["type"] == "Feature" and circle["geometry"] == DEPOT
    assert circle["properties"]["radius_m"] == 150 and circle["properties"]["groups"] == ["Depots"]

    imported = target.post("/module/geofences/import", json=collection)
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 4 and len(imported.json()["ids"]) == 4
    again = target.get("/module/geofences/export").json()
    fields = ("name", "description", "shape", "radius_m", "width_m", "color", "is_address",
              "speed_limit", "groups")  # fmt: skip

    def comparable(features: list[dict[str, Any]]) -> list[Any]:
        return [(f["geometry"], {key: f["properties"][key] for key in fields}) for f in features]

    assert comparable(again["features"]) == comparable(collection["features"])
    target_groups = target.get("/module/geofences/groups").json()["items"]
    assert [g["name"] for g in target_groups] == ["Depots"] and target_groups[0]["id"] != group[
        "id"
    ]
    assert names_at(target, 56.01, 24.1) == ["Yard"]
    assert names_at(source, 56.01, 24.1) == ["Yard"]  # the source's own, still there

    # Only the group's, when asked.
    by_group = source.get("/module/geofences/export", params={"group_id": group["id"]}).json()
    assert [f["properties"]["name"] for f in by_group["features"]] == ["Circle"]


def test_import_is_all_or_nothing_and_names_the_feature(tenant: Tenant) -> None:
    api = tenant.module_api(0)
    features = [
        {"type": "Feature", "geometry": DEPOT, "properties": {"name": "Good", "radius_m": 10}},
        {"type": "Feature", "geometry": YARD, "properties": {"stroke": "#555555"}},
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
            },
            "properties": {"name": "Bow tie"},
        },
    ]
    response = api.post(
        "/module/geofences/import", json={"type": "FeatureCollection", "features": features}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "features", 2, "geometry", "coordinates"]
    assert "crosses itself" in problem["errors"][0]["msg"]
    no_radius = [{"type": "Feature", "geometry": DEPOT, "properties": None}]
    response = api.post(
        "/module/geofences/import", json={"type": "FeatureCollection", "features": no_radius}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["body", "features", 0, "properties", "radius_m"]
    assert listed(api) == []
    # Without the bad one: a name is made for the feature that has none.
    response = api.post(
        "/module/geofences/import", json={"type": "FeatureCollection", "features": features[:2]}
    )
    assert response.status_code == 200, response.text
    assert sorted(item["name"] for item in listed(api)) == ["Geofence 2", "Good"]


def test_another_customers_geofences_are_not_found(tenant: Tenant, other_tenant: Tenant) -> None:
    mine, neighbour = tenant.module_api(0), tenant.module_api(1)
    stranger = other_tenant.module_api(0)
    fence = create(mine, name="Mine", geometry=DEPOT, radius_m=150)
    group = mine.post("/module/geofences/groups", json={"name": "Mine"}).json()
    lon, lat = DEPOT["coordinates"]
    for api in (neighbour, stranger):
        for method, path in (
            ("GET", f"/module/geofences/{fence['id']}"),
            ("PATCH", f"/module/geofences/{fence['id']}"),
            ("DELETE", f"/module/geofences/{fence['id']}"),
            ("GET", f"/module/geofences/groups/{group['id']}"),
            ("PATCH", f"/module/geofences/groups/{group['id']}"),
            ("DELETE", f"/module/geofences/groups/{group['id']}"),
        ):
            body = {"name": "Taken"} if method == "PATCH" else None
            assert_problem(api.request(method, path, json=body), 404, "not_found")
        assert listed(api) == [] and listed(api, group_id=group["id"]) == []
        assert api.get("/module/geofences/groups").json()["items"] == []
        assert names_at(api, lat, lon) == []
        assert api.get("/module/geofences/export").json()["features"] == []
        foreign_group = api.post(
            "/module/geofences",
            json={"name": "X", "geometry": DEPOT, "radius_m": 5, "group_ids": [group["id"]]},
        )
        assert_problem(foreign_group, 422, "validation_failed")
    # A key of the other provider naming this customer is refused before any geofence.
    foreign_cid = stranger.as_customer(tenant.customers[0]["id"])
    assert_problem(foreign_cid.get("/module/geofences"), 404, "customer_not_found")
    assert names_at(mine, lat, lon) == ["Mine"]
    assert mine.get(f"/module/geofences/{fence['id']}").json()["name"] == "Mine"
