"""The `drivers` module: a customer's drivers, their key codes, and who drove which device."""

from datetime import date
from typing import Annotated, Any

from fastapi import Query, Response

from fleetplane import module_catalog
from fleetplane.audit.service import Actor
from fleetplane.core.auth import CustomerContext
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response
from fleetplane.core.schemas import UtcDateTime, line_query
from fleetplane.drivers import service
from fleetplane.drivers.schemas import (
    AssignmentCreate,
    AssignmentOut,
    AssignmentUpdate,
    DriverCreate,
    DriverOut,
    DriverUpdate,
)

module = Module(module_catalog.DRIVERS)
router = module.router

ASSIGNMENT_RULES = """A device has one driver at a time. A key assignment (`source: key`) is
made by the device's key reader: a message whose driver key (the device's `driver_key` sensor,
else the Wialon IPS `Ibutton` field) is a key code of one of the customer's drivers assigns
that driver from the message's time; another driver's code, an unknown code or an empty reader
ends it. An assignment that starts while another is in effect ends that one at its start
(a manual one wins a tie). Late data (a device's black box) recomputes the key assignments
from its time on. A key code added to a driver later does not assign them retroactively: it
counts from the next reading of the key."""

# Answered by the operations that refuse to change a key assignment (no body, so the
# document's common 409 is not added for them).
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The assignment is a key assignment, which only the key reader changes.",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}


@router.get("", response_model=Page[DriverOut], summary="List the customer's drivers")
async def list_drivers(
    ctx: CustomerContext = module.requires("read:drivers"),
    page: PageParams = PageDep,
    q: Annotated[str | None, line_query(200, description="Part of the name, in any case.")] = None,
    key_code: Annotated[
        str | None, line_query(64, description="The driver who has this key code.")
    ] = None,
    license_expires_before: Annotated[
        date | None, Query(description="Drivers whose licence expires before this day.")
    ] = None,
) -> Response:
    """In creation order, each with `current_assignment`: the device the driver is on now."""
    statement = service.list_query(
        ctx.provider_id,
        ctx.customer_id,
        name=q,
        key_code=key_code,
        license_expires_before=license_expires_before,
    )
    return await service.page_of_drivers(ctx.session, statement, page)


@router.post("", status_code=201, response_model=DriverOut, summary="Create a driver")
async def create_driver(
    body: DriverCreate, ctx: CustomerContext = module.requires("create:drivers")
) -> Response:
    """A key code another of the customer's drivers has is `409 conflict`, naming it."""
    driver = await service.create(ctx.session, Actor.of(ctx), ctx.customer_id, body)
    return await _driver_answer(ctx, driver, 201)


@router.get(
    "/assignments",
    response_model=Page[AssignmentOut],
    summary="Which driver was on which device, when",
    description=ASSIGNMENT_RULES,
)
async def list_assignments(
    ctx: CustomerContext = module.requires("read:drivers"),
    page: PageParams = PageDep,
    driver_id: Annotated[str | None, line_query(40)] = None,
    device_id: Annotated[str | None, line_query(40)] = None,
    from_: Annotated[
        UtcDateTime | None, Query(alias="from", description="Inclusive: those ending after it.")
    ] = None,
    to: Annotated[
        UtcDateTime | None, Query(description="Exclusive: those starting before it.")
    ] = None,
) -> Response:
    """In start order. An assignment overlapping [`from`, `to`) is listed whole."""
    await service.check_filters(ctx.session, ctx.provider_id, ctx.customer_id, driver_id, device_id)
    statement = service.assignments_query(
        ctx.provider_id,
        ctx.customer_id,
        driver_id=driver_id,
        device_id=device_id,
        since=from_,
        until=to,
    )
    return await service.page_of_assignments(ctx.session, statement, page)


@router.post(
    "/assignments",
    status_code=201,
    response_model=AssignmentOut,
    summary="Assign a driver to a device by hand",
    description=ASSIGNMENT_RULES,
)
async def create_assignment(
    body: AssignmentCreate, ctx: CustomerContext = module.requires("create:drivers")
) -> Response:
    """Ends the device's assignment in effect at `start` there. An assignment of the device
    that starts at or after `start` and before `end` (or at all, without an `end`) is `409
    conflict`. Another customer's driver or device is `404`."""
    assignment_id = await service.create_assignment(
        ctx.session, Actor.of(ctx), ctx.customer_id, body
    )
    return await _assignment_answer(ctx, assignment_id, 201)


@router.get(
    "/assignments/{assignment_id}", response_model=AssignmentOut, summary="Get an assignment"
)
async def get_assignment(
    assignment_id: str, ctx: CustomerContext = module.requires("read:drivers")
) -> Response:
    return await _assignment_answer(ctx, assignment_id)


@router.patch(
    "/assignments/{assignment_id}",
    response_model=AssignmentOut,
    summary="End a manual assignment (or change its end)",
)
async def update_assignment(
    assignment_id: str,
    body: AssignmentUpdate,
    ctx: CustomerContext = module.requires("update:drivers"),
) -> Response:
    """`end`: a time after the start, or null (until further notice). It may not reach past
    the start of the device's next manual assignment; a key assignment starting before it
    ends the assignment there all the same. A key assignment cannot be changed (`409`)."""
    await service.update_assignment(
        ctx.session, Actor.of(ctx), ctx.customer_id, assignment_id, body
    )
    return await _assignment_answer(ctx, assignment_id)


@router.delete(
    "/assignments/{assignment_id}",
    status_code=204,
    summary="Delete a manual assignment",
    responses=_CONFLICT,
)
async def delete_assignment(
    assignment_id: str, ctx: CustomerContext = module.requires("delete:drivers")
) -> Response:
    """A key assignment it had ended goes on as if it had never been. A key assignment
    cannot be deleted (`409`)."""
    await service.delete_assignment(ctx.session, Actor.of(ctx), ctx.customer_id, assignment_id)
    return Response(status_code=204)


@router.get("/{driver_id}", response_model=DriverOut, summary="Get a driver")
async def get_driver(
    driver_id: str, ctx: CustomerContext = module.requires("read:drivers")
) -> Response:
    driver = await service.get(ctx.session, ctx.provider_id, ctx.customer_id, driver_id)
    return await _driver_answer(ctx, driver)


@router.patch("/{driver_id}", response_model=DriverOut, summary="Update a driver")
async def update_driver(
    driver_id: str, body: DriverUpdate, ctx: CustomerContext = module.requires("update:drivers")
) -> Response:
    """Changes only the fields sent; `key_codes` and `custom_fields` are replaced whole. A
    driver's assignments stay as they are; changed key codes count from the next reading."""
    driver = await service.update(ctx.session, Actor.of(ctx), ctx.customer_id, driver_id, body)
    return await _driver_answer(ctx, driver)


@router.delete("/{driver_id}", status_code=204, summary="Delete a driver")
async def delete_driver(
    driver_id: str, ctx: CustomerContext = module.requires("delete:drivers")
) -> Response:
    """Deletes the driver with their key codes and assignments."""
    await service.delete(ctx.session, Actor.of(ctx), ctx.customer_id, driver_id)
    return Response(status_code=204)


async def _driver_answer(ctx: CustomerContext, driver: Any, status: int = 200) -> Response:
    [item] = await service.shape_drivers(ctx.session, [driver])
    response = json_response(item, status)
    if status == 201:
        response.headers["Location"] = f"/module/drivers/{item['id']}"
    return response


async def _assignment_answer(
    ctx: CustomerContext, assignment_id: str, status: int = 200
) -> Response:
    item = await service.get_assignment(
        ctx.session, ctx.provider_id, ctx.customer_id, assignment_id
    )
    response = json_response(item, status)
    if status == 201:
        response.headers["Location"] = f"/module/drivers/assignments/{assignment_id}"
    return response
