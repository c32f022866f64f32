from typing import Any

from fastapi import APIRouter, BackgroundTasks, Response
from sqlalchemy import Row

from fleetplane.audit.service import Actor
from fleetplane.channels import service
from fleetplane.channels.models import Channel
from fleetplane.channels.schemas import (
    ChannelCounters,
    ChannelCreate,
    ChannelListener,
    ChannelOut,
    ChannelSummary,
    ChannelUpdate,
)
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate_rows
from fleetplane.runtime import Runtime, RuntimeDep

router = APIRouter(prefix="/api/channels", tags=["Channels"], route_class=PermissionRoute)


def _out(runtime: Runtime, channel: Channel) -> ChannelOut:
    gateway = runtime.gateway
    out = ChannelOut.model_validate(channel)
    counters = gateway.counters(channel.id)
    out.counters = ChannelCounters.model_validate(counters) if counters else None
    listener = gateway.listener_state(channel)
    out.listener = ChannelListener.model_validate(listener) if listener else None
    return out


def _apply_after_commit(runtime: Runtime, tasks: BackgroundTasks) -> None:
    # Background tasks run once the answer is sent, so after the commit: the gateway reads
    # the committed channels and starts, moves or stops listeners to match.
    # A process that runs no listeners (FLEETPLANE_GATEWAY=false) leaves them to one that does.
    if runtime.settings.gateway:
        tasks.add_task(runtime.gateway.reload)


@router.get("", response_model=Page[ChannelSummary], summary="List channels")
async def list_channels(
    ctx: StudioContext = provider_permission("read:channels"),
    page: PageParams = PageDep,
    runtime: Runtime = RuntimeDep,
) -> Response:
    """Channels with the state of their listener, without their live counters; read one
    channel for its counters."""
    gateway = runtime.gateway
    columns = tuple(name for name in ChannelSummary.model_fields if name != "listener")
    statement = service.list_query(ctx.provider_id).with_only_columns(
        *(getattr(Channel, name) for name in columns)
    )

    def shape(row: Row[Any]) -> dict[str, Any]:
        return dict(zip(columns, row, strict=True)) | {"listener": gateway.listener_state(row)}

    return await paginate_rows(ctx.session, statement, Channel.id, page, shape)


@router.post("", status_code=201, response_model=ChannelOut, summary="Create a channel")
async def create_channel(
    body: ChannelCreate,
    response: Response,
    tasks: BackgroundTasks,
    ctx: StudioContext = provider_permission("create:channels"),
    runtime: Runtime = RuntimeDep,
) -> ChannelOut:
    """Starts a listener for the protocol on the port at once. The port must be one of the
    platform's device ports that no channel uses, or the answer is `422 validation_failed` on
    `port` (the same for every reason). A provider has at most a configured number of channels
    (`409 channel_limit_reached`). A port the machine cannot bind shows in `listener`."""
    channel = await service.create(ctx.session, Actor.of(ctx), body, runtime.channel_policy)
    response.headers["Location"] = f"/api/channels/{channel.id}"
    _apply_after_commit(runtime, tasks)
    return _out(runtime, channel)


@router.get("/{channel_id}", response_model=ChannelOut, summary="Get a channel and its counters")
async def get_channel(
    channel_id: str,
    ctx: StudioContext = provider_permission("read:channels"),
    runtime: Runtime = RuntimeDep,
) -> ChannelOut:
    return _out(runtime, await service.get(ctx.session, ctx.provider_id, channel_id))


@router.patch("/{channel_id}", response_model=ChannelOut, summary="Update a channel")
async def update_channel(
    channel_id: str,
    body: ChannelUpdate,
    tasks: BackgroundTasks,
    ctx: StudioContext = provider_permission("update:channels"),
    runtime: Runtime = RuntimeDep,
) -> ChannelOut:
    """`enabled: false` stops the listener; a new `port` moves it; both without a restart. A
    new port follows the rules of `POST /api/channels`."""
    channel = await service.update(
        ctx.session, Actor.of(ctx), channel_id, body, runtime.channel_policy
    )
    _apply_after_commit(runtime, tasks)
    return _out(runtime, channel)


@router.delete("/{channel_id}", status_code=204, summary="Delete a channel")
async def delete_channel(
    channel_id: str,
    tasks: BackgroundTasks,
    ctx: StudioContext = provider_permission("delete:channels"),
    runtime: Runtime = RuntimeDep,
) -> Response:
    """Stops the listener. A channel that still has devices answers `409 conflict`."""
    await service.delete(ctx.session, Actor.of(ctx), channel_id)
    _apply_after_commit(runtime, tasks)
    return Response(status_code=204)
