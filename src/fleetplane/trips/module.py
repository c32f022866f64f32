"""The `trips` module: each device's trips, stops and parkings, their tracks, and the
settings they are detected with."""

from typing import Annotated

from fastapi import Query, Response

from fleetplane import module_catalog
from fleetplane.audit.service import Actor
from fleetplane.core.auth import CustomerContext
from fleetplane.core.errors import validation_error
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, fetch_page, json_response
from fleetplane.core.schemas import DeviceIdsQuery, UtcDateTime, distinct_device_ids
from fleetplane.devices import service as devices
from fleetplane.trips import service
from fleetplane.trips.detector import Kind
from fleetplane.trips.models import TripInterval
from fleetplane.trips.schemas import IntervalOut, TrackOut, TripSettingsBody, TripSettingsOut

module = Module(module_catalog.TRIPS)
router = module.router


@router.get("/intervals", response_model=Page[IntervalOut], summary="Trips, stops and parkings")
async def list_intervals(
    ctx: CustomerContext = module.requires("read:trips"),
    page: PageParams = PageDep,
    device_id: DeviceIdsQuery = None,
    from_: Annotated[UtcDateTime | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[UtcDateTime | None, Query(description="Exclusive.")] = None,
    kind: Annotated[Kind | None, Query(description="`trip`, `parking` or `stop`.")] = None,
) -> Response:
    """The intervals that overlap `from`..`to`, ordered by start (ties by device): an interval
    the range cuts is returned whole, with `clipped`. Only intervals that began since the
    device was assigned to the customer."""
    if from_ is not None and to is not None and from_ > to:
        raise validation_error(["query", "from"], "`from` is after `to`.")
    device_ids = distinct_device_ids(device_id)
    await devices.require_customer_devices(
        ctx.session, ctx.provider_id, ctx.customer_id, device_ids
    )
    statement = service.intervals_query(
        ctx.provider_id, ctx.customer_id, device_ids=device_ids, since=from_, until=to, kind=kind
    )
    rows, next_cursor = await fetch_page(ctx.session, statement, TripInterval.id, page)
    items = await service.shape_intervals(
        ctx.session, ctx.provider_id, ctx.customer_id, rows, from_, to
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get(
    "/intervals/{interval_id}/track",
    response_model=TrackOut,
    summary="The track of a trip, stop or parking (GeoJSON)",
)
async def interval_track(
    interval_id: str, ctx: CustomerContext = module.requires("read:trips")
) -> Response:
    """A GeoJSON `Feature` whose `LineString` joins the fixes the detection used (`[lon,
    lat]`), with their times in `properties.times`."""
    found = await service.track(ctx.session, ctx.provider_id, ctx.customer_id, interval_id)
    return json_response(found)


@router.get(
    "/settings/{device_id}",
    response_model=TripSettingsOut,
    summary="A device's trip detection settings",
)
async def get_settings(
    device_id: str, ctx: CustomerContext = module.requires("read:trips")
) -> Response:
    found = await service.settings_out(ctx.session, ctx.provider_id, ctx.customer_id, device_id)
    return json_response(TripSettingsOut.model_validate(found).model_dump(mode="json"))


@router.put(
    "/settings/{device_id}",
    response_model=TripSettingsOut,
    summary="Set a device's trip detection settings (its intervals are detected again)",
)
async def put_settings(
    device_id: str,
    body: TripSettingsBody,
    ctx: CustomerContext = module.requires("update:trips"),
) -> Response:
    """Replaces the settings (a field left out takes its default). The device's intervals are
    then detected again from its first message with them, in the background: the list shows
    the new ones as they come."""
    found = await service.put_settings(ctx.session, Actor.of(ctx), ctx.customer_id, device_id, body)
    return json_response(TripSettingsOut.model_validate(found).model_dump(mode="json"))
