"""The `devices` module: a customer's own devices, their live state and their messages."""

from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Query, Request, Response
from fastapi.responses import StreamingResponse

from fleetplane import module_catalog
from fleetplane.audit.service import Actor
from fleetplane.commands import service as commands
from fleetplane.commands.schemas import CommandCreate, CommandOut
from fleetplane.core.auth import (
    CustomerContext,
    ModuleAccess,
    ModuleAccessWatch,
    answers_from_memory,
)
from fleetplane.core.db import set_tenant_scope
from fleetplane.core.errors import not_found
from fleetplane.core.events import Event, server_sent_events
from fleetplane.core.modules import Module
from fleetplane.core.pagination import (
    Page,
    PageDep,
    PageParams,
    fetch_page,
    json_response,
    plain_page_params,
)
from fleetplane.core.permissions import grants
from fleetplane.core.schemas import UtcDateTime
from fleetplane.devices import live, service
from fleetplane.devices.live_cache import cursor_fits
from fleetplane.devices.live_stream import CustomerDeviceStream, close_reasons_text
from fleetplane.devices.models import Device
from fleetplane.devices.schemas import CustomerDeviceOut
from fleetplane.messages import service as messages
from fleetplane.messages.schemas import MessageOut
from fleetplane.runtime import Runtime, RuntimeDep, get_runtime
from fleetplane.sensors import service as sensors

module = Module(module_catalog.DEVICES)
router = module.router


async def _page_from_memory(request: Request, access: ModuleAccess) -> Response | None:
    params = plain_page_params(request.query_params)
    if params is None or not cursor_fits(params.after):
        return None
    held = get_runtime(request).live_devices.fresh(access.provider_id, access.customer_id)
    return None if held is None else _json_answer(held.page(params.after, params.limit))


@router.get("", response_model=Page[CustomerDeviceOut], summary="List the customer's devices")
@answers_from_memory(_page_from_memory)
async def list_devices(
    ctx: CustomerContext = module.requires("read:devices"),
    page: PageParams = PageDep,
    runtime: Runtime = RuntimeDep,
) -> Response:
    """Each device with its live state: last message, online, position, odometer, ignition,
    sensor values, inputs, outputs and the last value of every parameter."""
    held = await runtime.live_devices.customer_devices(ctx.provider_id, ctx.customer_id)
    if held is not None and cursor_fits(page.after):
        return _json_answer(held.page(page.after, page.limit))
    statement = live.customer_devices_query(ctx.provider_id, ctx.customer_id)
    rows, next_cursor = await fetch_page(ctx.session, statement, Device.id, page)
    items = await live.shape_with_sensors(ctx.session, ctx.provider_id, rows)
    return json_response({"items": items, "next_cursor": next_cursor})


EVENTS_PERMISSION = "read:devices"


@router.get(
    "/events",
    summary="Live events of the customer's devices (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream."}},
    description=f"""A `text/event-stream`: an `event: state` each time one of the customer's
devices reports, whose data is the device's new live state exactly as `GET /module/devices/{{id}}`
shows it (every field but the device's own: `id`, `unique_id`, `name`, `phone`, `created_at`),
with `type` (`state`) and `device_id`; a comment line every 15 s when idle.

What the pipeline finds comes too, each with `type` and `device_id` (times RFC 3339 UTC), when
the customer has the module that finds it and the key may read it:

- `event: geofence_enter` and `event: geofence_exit` (geofences, `read:geofences`): `geofence_id`,
  `geofence_name`, `visit_id`, `time` (of the first message inside, or outside), `lat`, `lon`.
  An enter comes once a geofence's `dwell_s` has passed.
- `event: trip_start` (trips, `read:trips`): `trip_id`, `time`, `lat`, `lon`; `event: trip_end`
  also `start_time`, `duration_s`, `distance_m`, `max_speed`.

These are sent when found, which may be a little after the messages (a trip starts once it is
long enough to be one); what is found again after late data older than 10 minutes before the
device's newest message is not sent again.

With the `automations` module and `read:notifications`, an `event: notification` each time one
of the customer's automations with the in-app `notification` action fires:
`{{"type": "notification", "device_id": ..., "notification": {{"id", "automation_id",
"device_id", "type", "time", "data", "position"}}}}` (the notification as
`GET /module/automations/notifications` lists it, without its deliveries; `device_id` null for
a test without a device).

The stream keeps to the access a new call would have. A change to its key, its customer or one
of its devices made through this server process applies at once; a change to its key or
customer made through another process, within `FLEETPLANE_API_KEY_CACHE_SECONDS` (the stream
checks every half of it, at most twice a second); a device moved through another process, at
its next report. Events of a device that is no longer the customer's are never sent. When the
access is gone, the stream ends with a last event, `event: closed`, whose data is
`{{"type": "closed", "reason": ..., "detail": ...}}` (and
`device_id` for `device_moved`); `reason` is the `code` a new call would now be refused with,
or `device_moved`:

{close_reasons_text()}""",
)
async def device_events(
    ctx: CustomerContext = module.requires(EVENTS_PERMISSION), runtime: Runtime = RuntimeDep
) -> Response:
    device_ids = await service.customer_device_ids(ctx.session, ctx.provider_id, ctx.customer_id)
    stream = CustomerDeviceStream(
        ctx,
        module.name,
        (EVENTS_PERMISSION,),
        set(device_ids),
        sessions=runtime.sessions,
        events=runtime.events,
    )
    return StreamingResponse(
        server_sent_events(
            stream.subscription,
            stream,
            shape=_state_events_for(
                runtime, ctx.provider_id, ctx.customer_id, lambda: _withheld(stream.access)
            ),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# The events a module adds to the stream: (event types, the module, the permission to see them).
_MODULE_EVENTS = (
    (("geofence_enter", "geofence_exit"), module_catalog.GEOFENCES.name, "read:geofences"),
    (("trip_start", "trip_end"), module_catalog.TRIPS.name, "read:trips"),
    (("notification",), module_catalog.AUTOMATIONS.name, "read:notifications"),
)


def _withheld(access: ModuleAccessWatch) -> set[str]:
    """The events a stream may not send now: a module's, without the module enabled for the
    customer or the permission that reads them, as of the stream's last access check (a
    change to its key or customer holds the stream until it is checked again)."""
    return {
        kind
        for kinds, module_name, permission in _MODULE_EVENTS
        if module_name not in access.customer.modules
        or not grants(access.key.customer_permissions, permission)
        for kind in kinds
    }


def _state_events_for(
    runtime: Runtime,
    provider_id: str,
    customer_id: str,
    withheld: Callable[[], Collection[str]] = frozenset,
) -> Callable[[Event], Awaitable[Event | None]]:
    """Shapes the changed states the pipeline announces for the customer's stream, as the
    device reads shape them: from the devices held in memory, else from the database. Other
    events go as they are, unless of a kind `withheld()` names."""
    cache, sessions = runtime.live_devices, runtime.sessions

    async def shape(event: Event) -> Event | None:
        if event["type"] != "state":
            # What other steps announce (enters, trips, notifications) goes as it is.
            return None if event["type"] in withheld() else event
        held = await cache.customer_devices(provider_id, customer_id)
        if held is not None:
            return held.state_event(event["state"])
        async with sessions() as session:
            await set_tenant_scope(session, provider_id=provider_id, customer_id=customer_id)
            return await live.read_state_event(session, provider_id, customer_id, event["state"])

    return shape


async def _device_from_memory(request: Request, access: ModuleAccess) -> Response | None:
    held = get_runtime(request).live_devices.fresh(access.provider_id, access.customer_id)
    answer = None if held is None else held.one(request.path_params["device_id"])
    return None if answer is None else _json_answer(answer)  # not found: the endpoint says so


@router.get(
    "/{device_id}", response_model=CustomerDeviceOut, summary="Get one device and its live state"
)
@answers_from_memory(_device_from_memory)
async def get_device(
    device_id: str,
    ctx: CustomerContext = module.requires("read:devices"),
    runtime: Runtime = RuntimeDep,
) -> Response:
    held = await runtime.live_devices.customer_devices(ctx.provider_id, ctx.customer_id)
    if held is not None:
        answer = held.one(device_id)
        if answer is None:
            raise not_found("device")
        return _json_answer(answer)
    statement = live.customer_devices_query(ctx.provider_id, ctx.customer_id)
    row = (await ctx.session.execute(statement.where(Device.id == device_id))).one_or_none()
    if row is None:
        raise not_found("device")
    [item] = await live.shape_with_sensors(ctx.session, ctx.provider_id, [row])
    return json_response(item)


def _json_answer(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.get(
    "/{device_id}/messages",
    response_model=Page[MessageOut],
    summary="A device's messages in a time range",
)
async def list_messages(
    device_id: str,
    ctx: CustomerContext = module.requires("read:messages"),
    page: PageParams = PageDep,
    from_: Annotated[UtcDateTime | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[UtcDateTime | None, Query(description="Exclusive.")] = None,
) -> Response:
    """Messages in device-time order (late black-box data in its place), as stored, each with
    the values of the device's sensors in it. Only messages from the time the device was
    assigned to the customer on."""
    window = await service.history_window(ctx.session, ctx.provider_id, ctx.customer_id, device_id)
    device = window.device
    definitions = await sensors.values_for_devices(ctx.session, ctx.provider_id, [device.id])
    return await messages.page(
        ctx.session,
        device.id,
        page,
        since=window.clamp(from_),
        until=to,
        sensors=definitions[device.id],
    )


@router.post(
    "/{device_id}/commands",
    status_code=201,
    response_model=CommandOut,
    summary="Send a command to a device",
)
async def send_command(
    device_id: str,
    body: CommandCreate,
    response: Response,
    ctx: CustomerContext = module.requires("create:commands"),
    runtime: Runtime = RuntimeDep,
) -> CommandOut:
    """Written to the device at once when it is connected (`sent`); otherwise `queued` and
    sent at its next login, unless it expires first. Types: `driver_message` (text to the
    driver), `snapshot_request` (a photo), `tachograph_request` (text: the driver id), `raw`
    (a device-specific command line)."""
    device = await service.get_for_customer(
        ctx.session, ctx.provider_id, ctx.customer_id, device_id
    )
    command = await commands.create(ctx.session, Actor.of(ctx), ctx.customer_id, device.id, body)
    runtime.gateway.connected.send_now(command)
    response.headers["Location"] = f"/module/devices/{device.id}/commands/{command.id}"
    return CommandOut.model_validate(command)


@router.get(
    "/{device_id}/commands",
    response_model=Page[CommandOut],
    summary="A device's commands and their status",
)
async def list_commands(
    device_id: str,
    ctx: CustomerContext = module.requires("read:commands"),
    page: PageParams = PageDep,
) -> Response:
    """Oldest first, each `queued`, `sent`, `answered`, `failed` or `expired`. Only the
    customer's own commands, sent since the device was assigned to them."""
    window = await service.history_window(ctx.session, ctx.provider_id, ctx.customer_id, device_id)
    return await commands.customer_history_page(ctx.session, window, page)
