from typing import Any

import pytest
from openapi_spec_validator import validate

from conftest import Api, RunningServer, assert_problem
from fleetplane.registry import MODULES
from operations import OPERATIONS

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def documents(server: RunningServer) -> dict[str, dict[str, Any]]:
    anonymous = Api(server.base_url, None)
    urls = ["/api/openapi.json"] + [module.openapi_url for module in MODULES]
    result = {}
    for url in urls:
        response = anonymous.get(url)
        assert response.status_code == 200, f"{url}: {response.text}"
        result[url] = response.json()
    return result


def operations_of(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def test_every_document_is_valid_openapi_3_1(server: RunningServer) -> None:
    for url, document in documents(server).items():
        assert document["openapi"].startswith("3.1"), url
        validate(document)


def test_every_operation_declares_its_permissions(server: RunningServer) -> None:
    for url, document in documents(server).items():
        for (method, path), operation in operations_of(document).items():
            permissions = operation.get("x-permissions")
            assert permissions, f"{url}: {method} {path} has no x-permissions"
            for permission in permissions:
                assert f"`{permission}`" in operation["description"], (method, path)


def test_the_operation_table_covers_every_documented_operation(server: RunningServer) -> None:
    documented: dict[tuple[str, str], list[str]] = {}
    for document in documents(server).values():
        for key, operation in operations_of(document).items():
            documented[key] = operation["x-permissions"]
    table = {(op.method, op.path): [op.permission] for op in OPERATIONS}
    assert table == documented


def test_documents_list_the_two_headers_as_security_schemes(server: RunningServer) -> None:
    docs = documents(server)
    studio = docs["/api/openapi.json"]
    assert studio["components"]["securitySchemes"]["ApiKey"]["name"] == "x-platform-api-key"
    assert "CustomerId" not in studio["components"]["securitySchemes"]
    for module in MODULES:
        schemes = docs[module.openapi_url]["components"]["securitySchemes"]
        assert schemes["ApiKey"] == {**schemes["ApiKey"], "in": "header"}
        assert schemes["CustomerId"]["name"] == "x-platform-cid"
        for operation in operations_of(docs[module.openapi_url]).values():
            assert {"ApiKey": []} in operation["security"]
            assert {"CustomerId": []} in operation["security"]


def test_module_document_holds_only_its_module(server: RunningServer) -> None:
    for module in MODULES:
        document = documents(server)[module.openapi_url]
        assert all(path.startswith(f"/module/{module.name}") for path in document["paths"])


@pytest.mark.parametrize("name", ["nope", "..", "devices.json"])
def test_unknown_module_document_is_a_problem(server: RunningServer, name: str) -> None:
    assert_problem(Api(server.base_url, None).get(f"/module/{name}/openapi.json"), 404, "not_found")
