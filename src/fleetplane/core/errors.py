"""Every error leaves the platform as application/problem+json with a stable `code`."""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("fleetplane.errors")

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error with a status, a stable machine code and a human sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers


class BodyTooLarge(Exception):
    """Raised while a request body streams in, once it passes the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")
        self.limit = limit


def payload_too_large(limit: int) -> Response:
    return problem_response(
        413,
        "payload_too_large",
        f"The request body is larger than the limit of {limit} bytes.",
        headers={"Connection": "close"},
    )


def unsupported_media_type(request: Request) -> Response:
    sent = request.headers.get("content-type") or "no content type"
    return problem_response(
        415,
        "unsupported_media_type",
        f"The request body must be application/json, not {sent}.",
    )


def unreadable_json(error: ValueError | RecursionError) -> Response:
    """JSON that is well formed but that the decoder refuses: nesting deeper than it recurses,
    an integer of more digits than Python converts."""
    reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
    msg = f"Malformed JSON: {reason}"
    errors = [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]
    return problem_response(422, "validation_failed", f"body: {msg}", errors=errors)


def not_found(what: str = "object") -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.")


def conflict(detail: str) -> ApiError:
    return ApiError(409, "conflict", detail)


def validation_error(loc: list[str | int], msg: str) -> ApiError:
    return ApiError(422, "validation_failed", msg, errors=[{"loc": loc, "msg": msg}])


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://fleetplane.dev/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    cleaned = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        msg = error.get("msg", "invalid value")
        if error.get("type") == "json_invalid":
            msg = f"Malformed JSON: {error.get('ctx', {}).get('error', msg)}"
        cleaned.append({"loc": loc, "msg": msg, "type": error.get("type")})
    return cleaned


def _summarise(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return problem_response(
            exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def request_validation(request: Request, exc: RequestValidationError) -> Response:
        if isinstance(exc.body, bytes):  # the framework decodes only JSON; this was not
            return unsupported_media_type(request)
        errors = _clean_validation_errors(exc)
        return problem_response(422, "validation_failed", _summarise(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, BodyTooLarge):  # the framework wraps body-reading errors
            return payload_too_large(exc.__cause__.limit)
        if isinstance(exc.__cause__, ValueError | RecursionError):  # JSON beyond the decoder
            return unreadable_json(exc.__cause__)
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route matches {request.url.path}."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        return problem_response(exc.status_code, code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal_error", "An internal error occurred.")
