"""The `geofences` module: a customer's geofences (circles, polygons, corridors), their groups,
which geofences hold a position, and import and export as GeoJSON."""

from typing import Annotated, Any

from fastapi import Query, Response

from fleetplane import module_catalog
from fleetplane.audit.service import Actor
from fleetplane.core.auth import CustomerContext
from fleetplane.core.errors import validation_error
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response, paginate
from fleetplane.core.schemas import (
    DeviceIdsQuery,
    UtcDateTime,
    distinct_device_ids,
    line_query,
)
from fleetplane.devices import service as devices
from fleetplane.geofences import service
from fleetplane.geofences.models import GeofenceGroup
from fleetplane.geofences.schemas import (
    FeatureCollectionIn,
    FeatureCollectionOut,
    GeofenceCreate,
    GeofenceList,
    GeofenceOut,
    GeofenceUpdate,
    GroupCreate,
    GroupOut,
    GroupUpdate,
    ImportResult,
    Shape,
    VisitOut,
)

module = Module(module_catalog.GEOFENCES)
router = module.router

INSIDE_RULES = """A position is inside a circle when its distance from the centre along the WGS
84 ellipsoid is at most `radius_m`, inside a corridor when it is within `width_m / 2` of the
line, inside a polygon when it is inside the outline and outside every hole; a position on an
edge counts as inside. Geofences across the antimeridian and round a pole are supported."""


@router.get("", response_model=Page[GeofenceOut], summary="List the customer's geofences")
async def list_geofences(
    ctx: CustomerContext = module.requires("read:geofences"),
    page: PageParams = PageDep,
    q: Annotated[str | None, line_query(200, description="Part of the name, in any case.")] = None,
    group_id: Annotated[
        str | None, line_query(40, description="Those in this geofence group.")
    ] = None,
    shape: Annotated[Shape | None, Query(description="`circle`, `polygon` or `corridor`.")] = None,
    is_address: Annotated[bool | None, Query(description="Those (not) used as addresses.")] = None,
) -> Response:
    """In creation order."""
    statement = service.list_query(
        ctx.provider_id,
        ctx.customer_id,
        name=q,
        group_id=group_id,
        shape=shape,
        is_address=is_address,
    )
    return json_response(await service.page_of_geofences(ctx.session, statement, page))


@router.post("", status_code=201, response_model=GeofenceOut, summary="Create a geofence")
async def create_geofence(
    body: GeofenceCreate, ctx: CustomerContext = module.requires("create:geofences")
) -> Response:
    """A geometry that is no usable geofence (a ring not closed or crossing itself, a
    position out of range, a circle without a positive `radius_m`, a corridor without a
    positive `width_m`) is `422`, naming the field and the part of the geometry."""
    geofence = await service.create(ctx.session, Actor.of(ctx), ctx.customer_id, body)
    return await _geofence_answer(ctx, geofence, 201)


@router.get(
    "/contains",
    response_model=GeofenceList,
    summary="The geofences a position is inside",
    description=INSIDE_RULES,
)
async def contains(
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False, description="Degrees.")],
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False, description="Degrees.")],
    ctx: CustomerContext = module.requires("read:geofences"),
) -> Response:
    """In creation order."""
    items = await service.containing(ctx.session, ctx.provider_id, ctx.customer_id, lat, lon)
    return json_response({"items": items})


@router.get(
    "/export",
    response_model=FeatureCollectionOut,
    summary="The customer's geofences as a GeoJSON FeatureCollection",
)
async def export_geofences(
    ctx: CustomerContext = module.requires("read:geofences"),
    group_id: Annotated[
        str | None, line_query(40, description="Only those in this geofence group.")
    ] = None,
) -> Response:
    """Each geofence is a `Feature` with its geometry and, in `properties`, its fields
    (`radius_m` of a circle, `width_m` of a corridor, `groups` by name): what `POST
    /module/geofences/import` takes back."""
    collection = await service.export_collection(
        ctx.session, ctx.provider_id, ctx.customer_id, group_id
    )
    return json_response(collection)


@router.post(
    "/import",
    response_model=ImportResult,
    summary="Create geofences from a GeoJSON FeatureCollection",
)
async def import_geofences(
    body: FeatureCollectionIn, ctx: CustomerContext = module.requires("create:geofences")
) -> Response:
    """Every feature becomes a new geofence, all or none: one that is not a valid geofence
    is `422` naming it (`features.<n>...`). From `properties`: `name` (none: `Geofence
    <n>`), `description`, `radius_m` (a `Point`), `width_m` (a `LineString`), `color`,
    `is_address`, `speed_limit`, `groups` (names: the customer's group of that name, made
    when there is none). Other properties are ignored."""
    ids = await service.import_collection(ctx.session, Actor.of(ctx), ctx.customer_id, body)
    return json_response({"created": len(ids), "ids": ids})


@router.get("/visits", response_model=Page[VisitOut], summary="Visits of the customer's devices")
async def list_visits(
    ctx: CustomerContext = module.requires("read:geofences"),
    page: PageParams = PageDep,
    device_id: DeviceIdsQuery = None,
    geofence_id: Annotated[
        str | None, line_query(40, description="Only the visits of this geofence.")
    ] = None,
    from_: Annotated[UtcDateTime | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[UtcDateTime | None, Query(description="Exclusive.")] = None,
) -> Response:
    """The visits that overlap `from`..`to` (one still open goes on to now), ordered by enter
    time. A device is inside or outside a geofence by its last valid fix: a visit enters at
    the first message inside and exits at the first message outside (`exit` null while
    inside); `distance_m` sums the geodesic segments between consecutive messages inside. With
    the geofence's `dwell_s`, a visit shorter than that is not one. Visits are found by the
    pipeline in the background, and found again when late (black box) data arrives."""
    if from_ is not None and to is not None and from_ > to:
        raise validation_error(["query", "from"], "`from` is after `to`.")
    device_ids = distinct_device_ids(device_id)
    await devices.require_customer_devices(
        ctx.session, ctx.provider_id, ctx.customer_id, device_ids
    )
    if geofence_id is not None:
        await service.get(ctx.session, ctx.provider_id, ctx.customer_id, geofence_id)
    statement = service.visits_query(
        ctx.provider_id,
        ctx.customer_id,
        device_ids=device_ids,
        geofence_id=geofence_id,
        since=from_,
        until=to,
    )
    return json_response(await service.page_of_visits(ctx.session, statement, page))


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


@router.get("/groups", response_model=Page[GroupOut], summary="List the geofence groups")
async def list_groups(
    ctx: CustomerContext = module.requires("read:geofences"),
    page: PageParams = PageDep,
    q: Annotated[str | None, line_query(200, description="Part of the name, in any case.")] = None,
) -> Response:
    """In creation order."""
    statement = service.group_list_query(ctx.provider_id, ctx.customer_id, name=q)
    return await paginate(ctx.session, statement, GeofenceGroup.id, page, GroupOut)


@router.post("/groups", status_code=201, response_model=GroupOut, summary="Create a geofence group")
async def create_group(
    body: GroupCreate, ctx: CustomerContext = module.requires("create:geofences")
) -> Response:
    group = await service.create_group(ctx.session, Actor.of(ctx), ctx.customer_id, body)
    response = _group_answer(group, 201)
    response.headers["Location"] = f"/module/geofences/groups/{group.id}"
    return response


@router.get("/groups/{group_id}", response_model=GroupOut, summary="Get a geofence group")
async def get_group(
    group_id: str, ctx: CustomerContext = module.requires("read:geofences")
) -> Response:
    group = await service.get_group(ctx.session, ctx.provider_id, ctx.customer_id, group_id)
    return _group_answer(group)


@router.patch("/groups/{group_id}", response_model=GroupOut, summary="Update a geofence group")
async def update_group(
    group_id: str, body: GroupUpdate, ctx: CustomerContext = module.requires("update:geofences")
) -> Response:
    group = await service.update_group(ctx.session, Actor.of(ctx), ctx.customer_id, group_id, body)
    return _group_answer(group)


@router.delete("/groups/{group_id}", status_code=204, summary="Delete a geofence group")
async def delete_group(
    group_id: str, ctx: CustomerContext = module.requires("delete:geofences")
) -> Response:
    """The group's geofences stay (in their other groups)."""
    await service.delete_group(ctx.session, Actor.of(ctx), ctx.customer_id, group_id)
    return Response(status_code=204)


# --------------------------------------------------------------------------------------------
# One geofence
# --------------------------------------------------------------------------------------------


@router.get("/{geofence_id}", response_model=GeofenceOut, summary="Get a geofence")
async def get_geofence(
    geofence_id: str, ctx: CustomerContext = module.requires("read:geofences")
) -> Response:
    geofence = await service.get(ctx.session, ctx.provider_id, ctx.customer_id, geofence_id)
    return await _geofence_answer(ctx, geofence)


@router.patch("/{geofence_id}", response_model=GeofenceOut, summary="Update a geofence")
async def update_geofence(
    geofence_id: str,
    body: GeofenceUpdate,
    ctx: CustomerContext = module.requires("update:geofences"),
) -> Response:
    """Changes only the fields sent; `group_ids` is replaced whole. A new `geometry` of
    another shape needs its own `radius_m` or `width_m`; the old shape's is dropped."""
    geofence = await service.update(ctx.session, Actor.of(ctx), ctx.customer_id, geofence_id, body)
    return await _geofence_answer(ctx, geofence)


@router.delete("/{geofence_id}", status_code=204, summary="Delete a geofence")
async def delete_geofence(
    geofence_id: str, ctx: CustomerContext = module.requires("delete:geofences")
) -> Response:
    await service.delete(ctx.session, Actor.of(ctx), ctx.customer_id, geofence_id)
    return Response(status_code=204)


async def _geofence_answer(ctx: CustomerContext, geofence: Any, status: int = 200) -> Response:
    [item] = await service.shape_geofences(ctx.session, [geofence])
    response = json_response(item, status)
    if status == 201:
        response.headers["Location"] = f"/module/geofences/{item['id']}"
    return response


def _group_answer(group: GeofenceGroup, status: int = 200) -> Response:
    return json_response(GroupOut.model_validate(group).model_dump(), status)
