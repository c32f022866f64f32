"""The `devices` module: a customer's own devices, their live state and their messages."""

from datetime import datetime
from typing import Annotated

from fastapi import Query, Response

from fleetplane.core.auth import CustomerContext
from fleetplane.core.errors import not_found
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response, paginate_rows
from fleetplane.devices import live, service
from fleetplane.devices.models import Device
from fleetplane.devices.schemas import CustomerDeviceOut
from fleetplane.messages import service as messages
from fleetplane.messages.schemas import MessageOut

module = Module(
    "devices",
    "Devices",
    "The customer's devices: what they are, where they are now, and what they reported.",
)
router = module.router


@router.get("", response_model=Page[CustomerDeviceOut], summary="List the customer's devices")
async def list_devices(
    ctx: CustomerContext = module.requires("read:devices"), page: PageParams = PageDep
) -> Response:
    """Each device with its live state: last message, online, position, odometer, inputs,
    outputs and the last value of every parameter."""
    statement = live.customer_devices_query(ctx.provider_id, ctx.customer_id)
    return await paginate_rows(ctx.session, statement, Device.id, page, live.shape)


@router.get(
    "/{device_id}", response_model=CustomerDeviceOut, summary="Get one device and its live state"
)
async def get_device(
    device_id: str, ctx: CustomerContext = module.requires("read:devices")
) -> Response:
    statement = live.customer_devices_query(ctx.provider_id, ctx.customer_id)
    row = (await ctx.session.execute(statement.where(Device.id == device_id))).one_or_none()
    if row is None:
        raise not_found("device")
    return json_response(live.shape(row))


@router.get(
    "/{device_id}/messages",
    response_model=Page[MessageOut],
    summary="A device's messages in a time range",
)
async def list_messages(
    device_id: str,
    ctx: CustomerContext = module.requires("read:messages"),
    page: PageParams = PageDep,
    from_: Annotated[datetime | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[datetime | None, Query(description="Exclusive.")] = None,
) -> Response:
    """Messages in device-time order (late black-box data in its place), as stored."""
    device = await service.get_for_customer(
        ctx.session, ctx.provider_id, ctx.customer_id, device_id
    )
    return await messages.page(ctx.session, device.id, page, since=from_, until=to)
