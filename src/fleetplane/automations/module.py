"""The `automations` module: a customer's rules (trigger, conditions, actions), what they
fired and how each delivery went."""

from typing import Annotated

from fastapi import Query, Response

from fleetplane import module_catalog
from fleetplane.audit.service import Actor
from fleetplane.automations import service
from fleetplane.automations.models import Automation
from fleetplane.automations.schemas import (
    AutomationCreate,
    AutomationCreated,
    AutomationOut,
    AutomationUpdate,
    SecretOut,
)
from fleetplane.core.auth import CustomerContext
from fleetplane.core.errors import validation_error
from fleetplane.core.modules import Module
from fleetplane.core.pagination import Page, PageDep, PageParams, json_response, paginate
from fleetplane.core.schemas import UtcDateTime, line_query
from fleetplane.notifications import service as notifications
from fleetplane.notifications.schemas import NotificationOut, TestFired

module = Module(module_catalog.AUTOMATIONS)
router = module.router

RULES = """A rule fires when its trigger's condition becomes true on one of the devices it
watches (`conditions.device_ids`, empty: all the customer's devices) and has held for
`conditions.min_duration_s` (device time; instantaneous triggers such as `ignition_on` fire at
once), at most once per spell of the condition, not within `conditions.cooldown_s` of its
previous firing on the device, and only when the message's time is inside
`conditions.schedule` (week days and local times in the customer's time zone). Messages older
than those a rule has evaluated on a device (late black-box data) are not evaluated again.
`maintenance_due`, `maintenance_overdue`, `checklist_failed`, `fuel_fill` and `fuel_drain` are
refused (`422` on `trigger.type`) until their modules exist."""


@router.get("", response_model=Page[AutomationOut], summary="List the customer's automations")
async def list_automations(
    ctx: CustomerContext = module.requires("read:automations"),
    page: PageParams = PageDep,
    enabled: Annotated[bool | None, Query(description="Only those (not) enabled.")] = None,
    type: Annotated[
        str | None, line_query(40, description="Only those whose trigger is of this type.")
    ] = None,
) -> Response:
    """In creation order."""
    statement = service.list_query(ctx.provider_id, ctx.customer_id, enabled=enabled, type_=type)
    return await paginate(ctx.session, statement, Automation.id, page, AutomationOut)


@router.post(
    "",
    status_code=201,
    response_model=AutomationCreated,
    summary="Create an automation",
    description=RULES,
)
async def create_automation(
    body: AutomationCreate, ctx: CustomerContext = module.requires("create:automations")
) -> Response:
    """The answer holds `webhook_secret`, which signs the rule's webhooks; it is shown only
    here (`POST /module/automations/{id}/secret` makes a new one). A device, geofence or
    sensor that is not the customer's is `422` naming the field."""
    automation = await service.create(ctx.session, Actor.of(ctx), ctx.customer_id, body)
    item = service.shape(automation) | {"webhook_secret": automation.webhook_secret}
    response = json_response(item, 201)
    response.headers["Location"] = f"/module/automations/{automation.id}"
    return response


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
    automation = await service.get(ctx.session, ctx.provider_id, ctx.customer_id, automation_id)
    notification_id = await notifications.fire_test(
        ctx.session, ctx.provider_id, ctx.customer_id, automation_id, automation.actions
    )
    return json_response({"notification_id": notification_id}, status_code=202)


# --- one automation ---------------------------------------------------------------------------


@router.get("/{automation_id}", response_model=AutomationOut, summary="Get an automation")
async def get_automation(
    automation_id: str, ctx: CustomerContext = module.requires("read:automations")
) -> Response:
    automation = await service.get(ctx.session, ctx.provider_id, ctx.customer_id, automation_id)
    return _answer(automation)


@router.patch(
    "/{automation_id}",
    response_model=AutomationOut,
    summary="Update an automation",
    description=RULES,
)
async def update_automation(
    automation_id: str,
    body: AutomationUpdate,
    ctx: CustomerContext = module.requires("update:automations"),
) -> Response:
    """Changes only the fields sent; `trigger`, `conditions` and `actions` are replaced
    whole. A new trigger starts the rule afresh on every device."""
    automation = await service.update(
        ctx.session, Actor.of(ctx), ctx.customer_id, automation_id, body
    )
    return _answer(automation)


@router.delete("/{automation_id}", status_code=204, summary="Delete an automation")
async def delete_automation(
    automation_id: str, ctx: CustomerContext = module.requires("delete:automations")
) -> Response:
    """What it fired stays listed."""
    await service.delete_automation(ctx.session, Actor.of(ctx), ctx.customer_id, automation_id)
    return Response(status_code=204)


@router.post(
    "/{automation_id}/secret",
    response_model=SecretOut,
    summary="Make a new webhook secret for an automation",
)
async def rotate_secret(
    automation_id: str, ctx: CustomerContext = module.requires("update:automations")
) -> Response:
    """The new secret signs the rule's webhooks from now on; it is shown only here."""
    secret = await service.rotate_secret(ctx.session, Actor.of(ctx), ctx.customer_id, automation_id)
    return json_response({"webhook_secret": secret})


def _answer(automation: Automation) -> Response:
    return json_response(service.shape(automation))
