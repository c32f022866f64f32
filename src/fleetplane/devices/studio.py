from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.audit.service import Actor
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.core.schemas import line_query
from fleetplane.devices import service
from fleetplane.devices.models import Device
from fleetplane.devices.schemas import DeviceCreate, DeviceOut, DeviceUpdate

router = APIRouter(prefix="/api/devices", tags=["Devices"], route_class=PermissionRoute)


@router.get("", response_model=Page[DeviceOut], summary="List devices")
async def list_devices(
    ctx: StudioContext = provider_permission("read:devices"),
    page: PageParams = PageDep,
    customer_id: Annotated[str | None, line_query(40)] = None,
    unassigned: Annotated[bool, Query(description="Only devices of no customer.")] = False,
    unique_id: Annotated[str | None, line_query(64)] = None,
    channel_id: Annotated[str | None, line_query(40)] = None,
) -> Response:
    statement = service.list_query(
        ctx.provider_id,
        customer_id=customer_id,
        unassigned=unassigned,
        unique_id=unique_id,
        channel_id=channel_id,
    )
    return await paginate(ctx.session, statement, Device.id, page, DeviceOut)


@router.post("", status_code=201, response_model=DeviceOut, summary="Add a device")
async def create_device(
    body: DeviceCreate,
    response: Response,
    ctx: StudioContext = provider_permission("create:devices"),
) -> DeviceOut:
    """Adds a tracker to the inventory, optionally assigned to a customer at once.
    A `unique_id` already on the channel answers `409 conflict`."""
    device = await service.create(ctx.session, Actor.of(ctx), body)
    response.headers["Location"] = f"/api/devices/{device.id}"
    return DeviceOut.model_validate(device)


@router.get("/{device_id}", response_model=DeviceOut, summary="Get a device")
async def get_device(
    device_id: str, ctx: StudioContext = provider_permission("read:devices")
) -> DeviceOut:
    return DeviceOut.model_validate(await service.get(ctx.session, ctx.provider_id, device_id))


@router.patch(
    "/{device_id}", response_model=DeviceOut, summary="Update, assign, move or unassign a device"
)
async def update_device(
    device_id: str, body: DeviceUpdate, ctx: StudioContext = provider_permission("update:devices")
) -> DeviceOut:
    """`customer_id` assigns the device to a customer, moves it to another, or (null) returns
    it to the unassigned inventory; each is recorded in the audit log as such."""
    device = await service.update(ctx.session, Actor.of(ctx), device_id, body)
    return DeviceOut.model_validate(device)


@router.delete("/{device_id}", status_code=204, summary="Delete a device")
async def delete_device(
    device_id: str, ctx: StudioContext = provider_permission("delete:devices")
) -> Response:
    await service.delete(ctx.session, Actor.of(ctx), device_id)
    return Response(status_code=204)
