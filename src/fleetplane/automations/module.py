"""The `automations` module: a customer's rules (trigger, conditions, actions), what they
fired and how each delivery went."""

from typing import Annotated

from fastapi import Query, Response
from sqlalchemy import select

from fleetplane import module_catalog
from fleetplane.automations.models import Automation
from fleetplane.core.auth import CustomerContext
from fleetplane.core.errors import not_found, validation_error
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response
from fleetplane.core.schemas import UtcDateTime, line_query
from fleetplane.notifications import service as notifications
from fleetplane.notifications.schemas import NotificationOut, TestFired

module = Module(module_catalog.AUTOMATIONS)
router = module.router


# --- what the rules fired, and the test of a rule --------------------------------------------


@router.get(
    "/notifications",
    response_model=Page[NotificationOut],
    summary="What the customer's automations fired, with each delivery's attempts",
)
async def list_notifications(
    ctx: CustomerContext = module.requires("read:notifications"),
    page: PageParams = PageDep,
    automation_id: Annotated[str | None, line_query(64)] = None,
    device_id: Annotated[str | None, line_query(64)] = None,
    from_: Annotated[
        UtcDateTime | None, Query(alias="from", description="Inclusive, on `time`.")
    ] = None,
    to: Annotated[UtcDateTime | None, Query(description="Exclusive.")] = None,
) -> Response:
    """The notifications, oldest first. `deliveries` lists the attempts of the webhook, e-mail
    and command actions (oldest first): each `action`, `attempt` (from 1), `status`
    (`delivered` or `failed`; `pending` for the next attempt of a delivery still pending, `at`
    then being when it is due), `status_code` (a webhook's HTTP status), `latency_ms`, `at`,
    `error`, and the delivery's own `delivery_status` (`failed` once given up)."""
    if from_ is not None and to is not None and from_ > to:
        raise validation_error(["query", "from"], "`from` is after `to`.")
    statement = notifications.list_query(
        ctx.provider_id,
        ctx.customer_id,
        automation_id=automation_id,
        device_id=device_id,
        since=from_,
        until=to,
    )
    found = await notifications.list_page(
        ctx.session, ctx.provider_id, ctx.customer_id, statement, page
    )
    return json_response(found)


@router.post(
    "/{automation_id}/test",
    status_code=202,
    response_model=TestFired,
    summary="Fire a sample event through the automation's actions",
)
async def test_automation(
    automation_id: str, ctx: CustomerContext = module.requires("update:automations")
) -> Response:
    """Records a notification of type `test` on the customer's first device (none if it has
    none), with `data` `{"test": true, ...}`, and delivers it through the automation's
    actions as a firing would be (whether or not the automation is enabled). Answers `202`
    with the notification's id; `GET /module/automations/notifications` shows how each
    delivery goes."""
    statement = select(Automation.actions).where(
        Automation.provider_id == ctx.provider_id,
        Automation.customer_id == ctx.customer_id,
        Automation.id == automation_id,
    )
    actions = (await ctx.session.execute(statement)).scalar_one_or_none()
    if actions is None:
        raise not_found("automation")
    notification_id = await notifications.fire_test(
        ctx.session, ctx.provider_id, ctx.customer_id, automation_id, actions
    )
    return json_response({"notification_id": notification_id}, status_code=202)
