"""The `devices` module: a customer's own devices."""

from fastapi import Response

from fleetplane.core.auth import CustomerContext
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.devices import service
from fleetplane.devices.models import Device
from fleetplane.devices.schemas import CustomerDeviceOut

module = Module(
    "devices",
    "Devices",
    "The customer's devices: what they are and, as telemetry arrives, where they are.",
)
router = module.router


@router.get("", response_model=Page[CustomerDeviceOut], summary="List the customer's devices")
async def list_devices(
    ctx: CustomerContext = module.requires("read:devices"), page: PageParams = PageDep
) -> Response:
    statement = service.customer_list_query(ctx.provider_id, ctx.customer_id)
    return await paginate(ctx.session, statement, Device.id, page, CustomerDeviceOut)


@router.get(
    "/{device_id}", response_model=CustomerDeviceOut, summary="Get one of the customer's devices"
)
async def get_device(
    device_id: str, ctx: CustomerContext = module.requires("read:devices")
) -> CustomerDeviceOut:
    device = await service.get_for_customer(
        ctx.session, ctx.provider_id, ctx.customer_id, device_id
    )
    return CustomerDeviceOut.model_validate(device)
