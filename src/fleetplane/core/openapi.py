"""OpenAPI 3.1 documents built from route subsets: one for the Studio API, one per module."""

from http import HTTPStatus
from typing import Any

from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An error, as RFC 9457 problem details with a stable machine `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable machine code, e.g. `not_found`."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}

# status -> (what it means, the code a client most often meets there)
_COMMON_ERRORS = {
    "401": ("No key, an unknown key, or an expired or revoked key.", "api_key_invalid"),
    "403": ("The key lacks a permission this operation needs.", "permission_denied"),
    "422": ("The request failed validation; `errors` names each field.", "validation_failed"),
    "429": ("Rate limited; retry after `Retry-After` seconds.", "rate_limited"),
}
_MODULE_ERRORS = {
    "400": ("The x-platform-cid header is missing.", "customer_header_missing"),
    "403": (
        "The module is disabled for the customer, or the key lacks a permission.",
        "module_disabled",
    ),
    "404": ("The customer, or the object, is not found for this key.", "customer_not_found"),
}


# Answers that depend on what an operation takes: an object named in its path, or a body.
_PATH_ERRORS = {"404": ("No such object for this key (or it belongs to another).", "not_found")}
_BODY_ERRORS = {
    "409": ("The change conflicts with existing data (a duplicate, a limit).", "conflict"),
    "413": ("The body is larger than the configured limit.", "payload_too_large"),
    "415": ("The body is not application/json.", "unsupported_media_type"),
}


def build_document(
    *, title: str, version: str, description: str, routes: list[BaseRoute], module: bool
) -> dict[str, Any]:
    document = get_openapi(
        title=title,
        version=version,
        openapi_version="3.1.0",
        description=description,
        routes=routes,
    )
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    errors = {**_COMMON_ERRORS, **(_MODULE_ERRORS if module else {})}
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            extra = {**(_PATH_ERRORS if "{" in path else {})}
            if "requestBody" in operation:
                extra |= _BODY_ERRORS
            _add_error_responses(operation, {**extra, **errors})
    return document


def _add_error_responses(operation: dict[str, Any], errors: dict[str, tuple[str, str]]) -> None:
    if not operation.get("x-permissions"):
        return  # public operations answer none of the key errors
    responses = operation.setdefault("responses", {})
    for status, (text, code) in errors.items():
        if status == "422" or status not in responses:  # ours replaces the framework's 422
            responses[status] = _problem(int(status), text, code)


def _problem(status: int, description: str, code: str) -> dict[str, Any]:
    example = {
        "type": f"https://fleetplane.dev/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": description,
        "code": code,
    }
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": example,
            }
        },
    }
