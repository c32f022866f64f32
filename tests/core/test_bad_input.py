"""Bad input always gets a problem+json naming what is wrong, never a 500."""

import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Api, RunningServer, Tenant, assert_problem


def test_malformed_json(tenant: Tenant) -> None:
    response = tenant.api.post(
        "/api/customers", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"][0] == "body"
    assert "JSON" in problem["errors"][0]["msg"]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/customers", {"name": 5}, ["body", "name"]),
        ("/api/customers", {"name": "x", "retention_days": "many"}, ["body", "retention_days"]),
        ("/api/customers", {"name": "x", "timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ("/api/customers", {"name": "x", "modules": ["teleport"]}, ["body", "modules"]),
        ("/api/customers", {"name": "x", "status": "gone"}, ["body", "status"]),
        (
            "/api/customers",
            {"name": "x", "contact": {"email": "no-at"}},
            ["body", "contact", "email"],
        ),
        ("/api/devices", {"unique_id": "has space", "name": "x"}, ["body", "unique_id"]),
        ("/api/devices", {"unique_id": ["a"], "name": "x"}, ["body", "unique_id"]),
        ("/api/api-keys", {"name": None}, ["body", "name"]),
        ("/api/api-keys", {"name": "x", "expires_at": "tomorrow"}, ["body", "expires_at"]),
    ],
)
def test_wrong_types_name_the_field(tenant: Tenant, path: str, body: Any, loc: list) -> None:
    problem = assert_problem(tenant.api.post(path, json=body), 422, "validation_failed")
    assert loc in [e["loc"] for e in problem["errors"]], problem


@pytest.mark.parametrize("path", ["/api/customers", "/api/devices", "/api/api-keys"])
def test_unknown_fields_are_refused(tenant: Tenant, path: str) -> None:
    body = {"name": "x", "nmae": "typo"}
    if path == "/api/devices":
        body = tenant.device_body(nmae="typo")
    problem = assert_problem(tenant.api.post(path, json=body), 422, "validation_failed")
    assert ["body", "nmae"] in [e["loc"] for e in problem["errors"]]


def test_body_that_is_not_an_object(tenant: Tenant) -> None:
    for content in (b"[]", b'"text"', b"42", b"null", b""):
        response = tenant.api.post(
            "/api/customers", content=content, headers={"content-type": "application/json"}
        )
        assert_problem(response, 422, "validation_failed")


def test_huge_body_by_content_length(tenant: Tenant) -> None:
    body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = tenant.api.post(
        "/api/customers", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


def test_huge_streamed_body_without_length(server: RunningServer, tenant: Tenant) -> None:
    """A chunked body is counted as it arrives and refused once it passes the limit."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/customers HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nx-platform-api-key: "
            + tenant.api.key.encode()
            + b"\r\n\r\n"
        )
        chunk = b"x" * 65536
        try:
            for _ in range(40):  # 2.5 MiB, well past the 1 MiB limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: that is the point
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "!!!", "e30", "a" * 600])
def test_bad_cursor(tenant: Tenant, cursor: str) -> None:
    problem = assert_problem(
        tenant.api.get("/api/customers", params={"cursor": cursor}), 422, "validation_failed"
    )
    assert problem["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_bad_limit(tenant: Tenant, limit: str) -> None:
    problem = assert_problem(
        tenant.api.get("/api/devices", params={"limit": limit}), 422, "validation_failed"
    )
    assert problem["errors"][0]["loc"] == ["query", "limit"]


BAD_IDS = ["nope", "cus_00000000000000000000000000", "%2e%2e", "x" * 300, "dev_%F0%9F%9A%9A", "1"]


@pytest.mark.parametrize("kind", ["customers", "devices", "api-keys"])
@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_are_not_found(tenant: Tenant, kind: str, bad_id: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "x"} if method == "PATCH" else None
        response = tenant.api.request(method, f"/api/{kind}/{bad_id}", json=body)
        assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_in_modules_are_not_found(tenant: Tenant, bad_id: str) -> None:
    assert_problem(tenant.module_api(0).get(f"/module/devices/{bad_id}"), 404, "not_found")


def test_unknown_route_and_wrong_method(tenant: Tenant) -> None:
    assert_problem(tenant.api.get("/api/nothing-here"), 404, "not_found")
    assert_problem(Api(tenant.api.base_url, None).get("/nothing"), 404, "not_found")
    assert_problem(tenant.api.request("PUT", "/api/customers"), 405, "method_not_allowed")
    assert_problem(tenant.api.delete("/api/customers"), 405, "method_not_allowed")


def test_wrong_content_type(tenant: Tenant) -> None:
    response = tenant.api.post(
        "/api/customers", content=b"name=x", headers={"content-type": "text/plain"}
    )
    assert_problem(response, 422, "validation_failed")


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["name", "status", "modules", "plan", "timezone", "retention_days", "contact", "unique_id",
     "phone", "password", "customer_id", "provider_permissions", "customer_permissions",
     "customer_ids", "expires_at"]
)  # fmt: skip
bodies = st.dictionaries(field_names, json_values, max_size=6) | json_values


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from(["/api/customers", "/api/devices", "/api/api-keys"]))
def test_arbitrary_bodies_never_break_the_server(tenant: Tenant, body: Any, path: str) -> None:
    response = tenant.api.post(path, json=body)
    assert response.status_code in (201, 403, 409, 422), response.text
    if response.status_code != 201:
        assert response.headers["content-type"] == "application/problem+json"
