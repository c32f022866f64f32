from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.api_keys import service
from fleetplane.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ApiKeyUpdate
from fleetplane.audit.service import Actor
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response

router = APIRouter(prefix="/api/api-keys", tags=["API keys"], route_class=PermissionRoute)


@router.get("", response_model=Page[ApiKeyOut], summary="List API keys")
async def list_keys(
    ctx: StudioContext = provider_permission("read:api_keys"),
    page: PageParams = PageDep,
    include_inactive: Annotated[
        bool, Query(description="Also list revoked and expired keys.")
    ] = False,
) -> Response:
    """Only the keys within this key's reach (see `POST`)."""
    statement = service.list_query(ctx.provider_id, include_inactive)
    keys, next_cursor = await service.page_within_reach(ctx.session, statement, page, ctx.key)
    items = [ApiKeyOut.model_validate(key).model_dump() for key in keys]
    return json_response({"items": items, "next_cursor": next_cursor})


@router.post("", status_code=201, response_model=ApiKeyCreated, summary="Create an API key")
async def create_key(
    body: ApiKeyCreate,
    response: Response,
    ctx: StudioContext = provider_permission("create:api_keys"),
) -> ApiKeyCreated:
    """The answer holds `secret`, the key itself, once: it is stored only as a hash. A provider
    has at most 50 live keys (`409 api_key_limit_reached`).

    A key reaches the keys with no permission it lacks, only customers it reaches (all of
    them only if it reaches all), and an expiry no later than its own (none only if it has
    none). It lists, reads, changes and revokes only those (any other answers `404`), and
    creates or changes a key only into one of those, itself included: beyond it answers
    `403 permission_denied` naming the field in `errors`."""
    key, secret = await service.create(ctx.session, Actor.of(ctx), body, granter=ctx.key)
    response.headers["Location"] = f"/api/api-keys/{key.id}"
    return ApiKeyCreated.model_validate(
        {**ApiKeyOut.model_validate(key).model_dump(), "secret": secret}
    )


@router.get("/{key_id}", response_model=ApiKeyOut, summary="Get an API key")
async def get_key(
    key_id: str, ctx: StudioContext = provider_permission("read:api_keys")
) -> ApiKeyOut:
    key = await service.get(ctx.session, ctx.provider_id, key_id, ctx.key)
    return ApiKeyOut.model_validate(key)


@router.patch("/{key_id}", response_model=ApiKeyOut, summary="Update an API key")
async def update_key(
    key_id: str, body: ApiKeyUpdate, ctx: StudioContext = provider_permission("update:api_keys")
) -> ApiKeyOut:
    """The key must be within this key's reach and stay within it (see `POST`)."""
    key = await service.update(ctx.session, Actor.of(ctx), key_id, body, granter=ctx.key)
    return ApiKeyOut.model_validate(key)


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(
    key_id: str, ctx: StudioContext = provider_permission("delete:api_keys")
) -> Response:
    """The key stops working at once; later calls with it get `401 api_key_revoked`. Only
    keys within this key's reach (see `POST`)."""
    await service.revoke(ctx.session, Actor.of(ctx), key_id, ctx.key)
    return Response(status_code=204)
