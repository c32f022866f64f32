"""Channel rules: one channel per port on the whole platform; a channel with devices stays."""

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.channels.models import Channel
from fleetplane.channels.schemas import TRANSPORTS, ChannelCreate, ChannelUpdate, Protocol
from fleetplane.core.errors import conflict, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id


def list_query(provider_id: str) -> Select[tuple[Channel]]:
    return select(Channel).where(Channel.provider_id == provider_id)


async def all_channels(session: AsyncSession) -> list[Channel]:
    """Every channel of the platform (for the gateway, which serves all providers)."""
    return list((await session.execute(select(Channel).order_by(Channel.id))).scalars())


async def by_id(session: AsyncSession, channel_id: str) -> Channel | None:
    """Any provider's channel (for the gateway, which serves them all)."""
    return await session.get(Channel, channel_id)


async def find(session: AsyncSession, provider_id: str, channel_id: str) -> Channel | None:
    if not looks_like_id(channel_id):
        return None
    statement = list_query(provider_id).where(Channel.id == channel_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def get(session: AsyncSession, provider_id: str, channel_id: str) -> Channel:
    channel = await find(session, provider_id, channel_id)
    if channel is None:
        raise not_found("channel")
    return channel


async def create(session: AsyncSession, actor: Actor, data: ChannelCreate) -> Channel:
    values = data.model_dump(mode="json")
    await _require_free_port(session, data.port)
    channel = Channel(id=new_id("chn"), provider_id=actor.provider_id, **values)
    session.add(channel)
    await audit.record(session, actor, "channel.create", "channel", channel.id, values)
    await _flush_port(session, data.port)
    return channel


async def update(
    session: AsyncSession, actor: Actor, channel_id: str, data: ChannelUpdate
) -> Channel:
    channel = await get(session, actor.provider_id, channel_id)
    changes: dict[str, Any] = {
        k: v for k, v in data.model_dump(mode="json", exclude_unset=True).items() if v is not None
    }
    if (
        "transport" in changes
        and changes["transport"] not in TRANSPORTS[Protocol(channel.protocol)]
    ):
        raise validation_error(
            ["body", "transport"], f"not a transport of a {channel.protocol} channel"
        )
    if "port" in changes and changes["port"] != channel.port:
        await _require_free_port(session, changes["port"])
    for field, value in changes.items():
        setattr(channel, field, value)
    await audit.record(session, actor, "channel.update", "channel", channel.id, changes)
    await _flush_port(session, channel.port)
    return channel


async def delete(session: AsyncSession, actor: Actor, channel_id: str) -> None:
    from fleetplane.devices import service as devices  # devices refer to channels

    channel = await get(session, actor.provider_id, channel_id)
    count = await devices.count_on_channel(session, channel.id)
    if count:
        raise conflict(f"The channel still has {count} devices; move or delete them first.")
    await session.delete(channel)
    await audit.record(session, actor, "channel.delete", "channel", channel.id)
    await session.flush()


async def first_free_port(session: AsyncSession, wanted: int) -> int:
    """`wanted`, or the next port above it that no channel uses."""
    taken = set(
        (await session.execute(select(Channel.port).where(Channel.port >= wanted))).scalars()
    )
    port = wanted
    while port in taken:
        port += 1
    return port


async def _require_free_port(session: AsyncSession, port: int) -> None:
    # Ports are platform-wide, so this looks across providers, and says only "taken".
    taken = await session.execute(select(func.count()).where(Channel.port == port))
    if taken.scalar_one():
        raise conflict(f"Port {port} is already used by a channel.")


async def _flush_port(session: AsyncSession, port: int) -> None:
    try:
        await session.flush()
    except IntegrityError as error:
        raise conflict(f"Port {port} is already used by a channel.") from error
