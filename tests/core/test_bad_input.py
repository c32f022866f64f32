"""Bad input always gets a problem+json naming what is wrong, never a 500."""

import base64
import socket
from typing import Any

import orjson
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


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_a_body_that_is_not_json_gets_415(tenant: Tenant, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for method, path in (("POST", "/api/customers"), ("PATCH", f"/api/devices/{_device(tenant)}")):
        response = tenant.api.request(method, path, content=b'{"name": "x"}', headers=headers)
        assert_problem(response, 415, "unsupported_media_type")
    response = tenant.module_api().post(
        f"/module/devices/{_device(tenant)}/commands", content=b"hello", headers=headers
    )
    assert_problem(response, 415, "unsupported_media_type")


def test_no_body_at_all_is_a_validation_error(tenant: Tenant) -> None:
    assert_problem(tenant.api.post("/api/customers"), 422, "validation_failed")


def _device(tenant: Tenant) -> str:
    return tenant.devices[tenant.customers[0]["id"]][0]["id"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"name": "x", "contact": ' + b'{"name": ' * 3000 + b"null" + b"}" * 3001,
        b'{"name": "x", "retention_days": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,
    ],
    ids=["deep-arrays", "deep-objects", "5000-digits", "unclosed-deep"],
)
def test_json_beyond_the_decoder_is_a_validation_error(tenant: Tenant, body: bytes) -> None:
    response = tenant.api.post(
        "/api/customers", content=body, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"][0] == "body"


NUL = "a\x00b"


def _text_fields(tenant: Tenant) -> list[tuple[str, str, dict[str, Any], list[str | int]]]:
    """(method, path, body, the field named in the answer) with a NUL in one string each."""
    device = _device(tenant)
    sensor = {"device_id": device, "name": "Fuel", "type": "fuel_level", "parameter": "adc1"}
    return [
        ("POST", "/api/customers", {"name": NUL}, ["body", "name"]),
        ("POST", "/api/customers", {"name": "x", "plan": NUL}, ["body", "plan"]),
        ("POST", "/api/customers", {"name": "x", "contact": {"name": NUL}}, ["body", "contact"]),
        ("POST", "/api/customers", {"name": "x", "contact": {"phone": NUL}}, ["body", "contact"]),
        ("POST", "/api/customers", {"name": "x", "timezone": NUL}, ["body", "timezone"]),
        ("PATCH", f"/api/customers/{tenant.customers[0]['id']}", {"name": NUL}, ["body", "name"]),
        ("POST", "/api/devices", tenant.device_body(name=NUL), ["body", "name"]),
        ("POST", "/api/devices", tenant.device_body(password=NUL), ["body", "password"]),
        ("POST", "/api/devices", tenant.device_body(channel_id=NUL), ["body", "channel_id"]),
        ("PATCH", f"/api/devices/{device}", {"password": NUL}, ["body", "password"]),
        ("POST", "/api/channels", {"name": NUL, "protocol": "osmand", "port": 1}, ["body", "name"]),
        ("POST", "/api/api-keys", {"name": NUL}, ["body", "name"]),
        ("POST", "/api/api-keys", {"name": "x", "customer_ids": [NUL]}, ["body", "customer_ids"]),
        ("POST", "/api/sensors", {**sensor, "name": NUL}, ["body", "name"]),
        ("POST", "/api/sensors", {**sensor, "unit": NUL}, ["body", "unit"]),
        ("POST", "/api/sensors", {**sensor, "parameter": NUL}, ["body", "parameter"]),
        ("POST", "/api/sensors", {**sensor, "device_id": NUL}, ["body", "device_id"]),
    ]  # fmt: skip


def test_a_nul_in_any_body_string_is_a_validation_error(tenant: Tenant) -> None:
    """PostgreSQL cannot store NUL; both databases answer the same: 422 naming the field."""
    for method, path, body, loc in _text_fields(tenant):
        problem = assert_problem(
            tenant.api.request(method, path, json=body), 422, "validation_failed"
        )
        assert loc in [error["loc"][: len(loc)] for error in problem["errors"]], (path, problem)
    command = {"type": "raw", "text": NUL}
    response = tenant.module_api().post(f"/module/devices/{_device(tenant)}/commands", json=command)
    problem = assert_problem(response, 422, "validation_failed")
    assert ["body", "text"] in [error["loc"] for error in problem["errors"]]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/devices", "unique_id"),
        ("/api/devices", "customer_id"),
        ("/api/devices", "channel_id"),
        ("/api/sensors", "device_id"),
        ("/api/audit-log", "action"),
        ("/api/audit-log", "object_type"),
        ("/api/audit-log", "object_id"),
        ("/api/audit-log", "api_key_id"),
    ],
)
def test_a_nul_in_a_filter_is_a_validation_error(tenant: Tenant, path: str, param: str) -> None:
    problem = assert_problem(tenant.api.get(path, params={param: NUL}), 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["query", param]


def _cursor(after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


@pytest.mark.parametrize("after", ["dev_\x00", "a\x00", "2026-01-01T00:00:00\x00"])
def test_cursors_holding_a_nul_are_validation_errors(tenant: Tenant, after: str) -> None:
    module = tenant.module_api()
    for api, path in (
        (tenant.api, "/api/devices"),
        (tenant.api, "/api/customers"),
        (tenant.api, "/api/audit-log"),
        (module, "/module/devices"),
        (module, f"/module/devices/{_device(tenant)}/messages"),
        (module, f"/module/devices/{_device(tenant)}/commands"),
    ):
        response = api.get(path, params={"cursor": _cursor(after)})
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["errors"][0]["loc"] == ["query", "cursor"], path


@pytest.mark.parametrize("after", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_message_cursors_out_of_range_are_validation_errors(tenant: Tenant, after: str) -> None:
    path = f"/module/devices/{_device(tenant)}/messages"
    response = tenant.module_api().get(path, params={"cursor": _cursor(after)})
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"][0]["loc"] == ["query", "cursor"]


def test_a_nul_in_an_id_in_the_path_is_not_found(tenant: Tenant) -> None:
    for path in ("/api/customers/", "/api/devices/", "/api/sensors/", "/api/channels/"):
        assert_problem(tenant.api.get(path + "cus_%00"), 404, "not_found")
    assert_problem(tenant.module_api().get("/module/devices/dev_%00/messages"), 404, "not_found")


OUT_OF_RANGE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
@pytest.mark.parametrize("param", ["from", "to"])
def test_times_out_of_range_in_filters_are_validation_errors(
    tenant: Tenant, moment: str, param: str
) -> None:
    module = tenant.module_api()
    for api, path in (
        (tenant.api, "/api/audit-log"),
        (module, f"/module/devices/{_device(tenant)}/messages"),
    ):
        problem = assert_problem(api.get(path, params={param: moment}), 422, "validation_failed")
        assert problem["errors"][0]["loc"] == ["query", param], path


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_expiry_out_of_range_is_a_validation_error(tenant: Tenant, moment: str) -> None:
    _, key = tenant.api.new_key(name="expiring")
    for method, path in (("POST", "/api/api-keys"), ("PATCH", f"/api/api-keys/{key['id']}")):
        response = tenant.api.request(method, path, json={"name": "x", "expires_at": moment})
        problem = assert_problem(response, 422, "validation_failed")
        assert ["body", "expires_at"] in [error["loc"] for error in problem["errors"]]


def test_the_last_moment_of_the_calendar_is_accepted(tenant: Tenant) -> None:
    last = "9999-12-31T23:59:59Z"
    response = tenant.api.post("/api/api-keys", json={"name": "long-lived", "expires_at": last})
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"].startswith("9999-12-31T23:59:59")
    assert (
        tenant.api.get(
            "/api/audit-log", params={"from": "0001-01-01T00:00:00Z", "to": last}
        ).status_code
        == 200
    )


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
