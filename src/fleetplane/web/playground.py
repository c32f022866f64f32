"""The API playground: one page with two Swagger UIs (Studio and FleetSpace) sharing one key.

Everything the page loads comes from this router: our page, script and styles from
`web/static` and `web/templates`, and Swagger UI from the `fastapi_offline` package. So the
playground works on a machine with no network but the platform's own.
"""

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from fleetplane.core.auth import API_KEY_HEADER, CUSTOMER_HEADER, PermissionRoute, public
from fleetplane.core.errors import not_found
from fleetplane.registry import MODULES

router = APIRouter(prefix="/playground", route_class=PermissionRoute, include_in_schema=False)

OWN_STATIC = files("fleetplane.web") / "static"
PAGE_TEMPLATE = files("fleetplane.web") / "templates" / "playground.html"
SWAGGER_UI_STATIC = files("fastapi_offline") / "static"
ASSET_FOLDERS: dict[str, Traversable] = {"own": OWN_STATIC, "swagger-ui": SWAGGER_UI_STATIC}
# Only what the page uses; the package also ships ReDoc, which the playground does not need.
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})
CONFIG_MARKER = "{{ config }}"

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

# The page handles an API key, so it may run only our own scripts and talk only to us.
# Swagger UI sets inline styles and shows data: images; image answers (report charts) are
# shown from blob: URLs of the bytes already fetched. It needs nothing else.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@router.get("", dependencies=[public()])
async def page(request: Request) -> HTMLResponse:
    """The playground page, with its configuration built from the registry inlined."""
    html = _page_template().replace(CONFIG_MARKER, _script_safe_json(playground_config(request)))
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/static/{name}", dependencies=[public()])
async def own_asset(name: str, request: Request) -> Response:
    if name not in _own_static_names():
        raise not_found("file")
    return _asset_response(request, _load_asset("own", name))


@router.get("/swagger-ui/{name}", dependencies=[public()])
async def swagger_ui_asset(name: str, request: Request) -> Response:
    if name not in SWAGGER_UI_FILES:
        raise not_found("file")
    return _asset_response(request, _load_asset("swagger-ui", name))


def playground_config(request: Request) -> dict[str, Any]:
    """What the page needs to know; URLs come from the app's routes, not from literals."""
    return {
        "headers": {"api_key": API_KEY_HEADER, "customer": CUSTOMER_HEADER},
        "studio": {"openapi_url": request.app.url_path_for("studio_document")},
        "customers_url": request.app.url_path_for("list_customers"),
        "modules": [
            {
                "name": module.name,
                "title": module.title,
                "description": module.description,
                "openapi_url": module.openapi_url,
            }
            for module in MODULES
        ],
    }


def _script_safe_json(value: Any) -> str:
    # Inlined in a <script> element: `</script>` or `<!--` inside a string must not end it.
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def _own_static_names() -> frozenset[str]:
    return frozenset(
        entry.name
        for entry in OWN_STATIC.iterdir()
        if entry.is_file() and not entry.name.startswith(".")
    )


@cache
def _page_template() -> str:
    return PAGE_TEMPLATE.read_text(encoding="utf-8")


@cache
def _load_asset(folder: str, name: str) -> Asset:
    """Reads a file once per process; the files are part of the installed packages."""
    body = (ASSET_FOLDERS[folder] / name).read_bytes()
    suffix = name[name.rfind(".") :]
    media_type = MEDIA_TYPES.get(suffix, "application/octet-stream")
    return Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _asset_response(request: Request, asset: Asset) -> Response:
    # no-cache means "revalidate": after an upgrade the browser gets the new file at once.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if asset.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
