from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.audit.service import Actor
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.customers import service
from fleetplane.customers.models import Customer
from fleetplane.customers.schemas import CustomerCreate, CustomerOut, CustomerStatus, CustomerUpdate
from fleetplane.devices import service as devices

router = APIRouter(prefix="/api/customers", tags=["Customers"], route_class=PermissionRoute)


@router.get("", response_model=Page[CustomerOut], summary="List customers")
async def list_customers(
    ctx: StudioContext = provider_permission("read:customers"),
    page: PageParams = PageDep,
    status: Annotated[CustomerStatus | None, Query()] = None,
) -> Response:
    statement = service.list_query(ctx.provider_id, status)
    return await paginate(ctx.session, statement, Customer.id, page, CustomerOut)


@router.post("", status_code=201, response_model=CustomerOut, summary="Create a customer")
async def create_customer(
    body: CustomerCreate,
    response: Response,
    ctx: StudioContext = provider_permission("create:customers"),
) -> CustomerOut:
    customer = await service.create(ctx.session, Actor.of(ctx), body)
    response.headers["Location"] = f"/api/customers/{customer.id}"
    return CustomerOut.model_validate(customer)


@router.get("/{customer_id}", response_model=CustomerOut, summary="Get a customer")
async def get_customer(
    customer_id: str, ctx: StudioContext = provider_permission("read:customers")
) -> CustomerOut:
    return CustomerOut.model_validate(await service.get(ctx.session, ctx.provider_id, customer_id))


@router.patch("/{customer_id}", response_model=CustomerOut, summary="Update a customer")
async def update_customer(
    customer_id: str,
    body: CustomerUpdate,
    ctx: StudioContext = provider_permission("update:customers"),
) -> CustomerOut:
    """Changes only the fields sent. `status: suspended` stops all module access at once."""
    customer = await service.update(ctx.session, Actor.of(ctx), customer_id, body)
    return CustomerOut.model_validate(customer)


@router.delete("/{customer_id}", status_code=204, summary="Delete a customer")
async def delete_customer(
    customer_id: str, ctx: StudioContext = provider_permission("delete:customers")
) -> Response:
    """Deletes the customer; its devices return to the provider's unassigned inventory."""
    await service.delete(ctx.session, Actor.of(ctx), customer_id, devices.release_all)
    return Response(status_code=204)
