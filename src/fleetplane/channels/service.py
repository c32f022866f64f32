"""Channel rules: ports from the platform's device range, one channel per port on the whole
platform, a limited number of channels per provider; a channel with devices stays."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

from sqlalchemy import Select, Subquery, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.channels.models import Channel
from fleetplane.channels.schemas import TRANSPORTS, ChannelCreate, ChannelUpdate, Protocol
from fleetplane.config import Settings
from fleetplane.core.changes import Change, note
from fleetplane.core.db import count_under_lock
from fleetplane.core.errors import ApiError, conflict, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.providers import service as providers

# Binding below this needs root; a provider's channel must never take a system service's port.
FIRST_UNPRIVILEGED_PORT = 1024
# The kind of change notice (core.changes) raised when a channel changes.
CHANNEL_CHANGE = "channel"


def _note_changed(session: AsyncSession, channel: Channel, *, has_devices: bool) -> None:
    # A channel's online timeout shows in the reads of its devices, of any of the provider's
    # customers; a channel without devices changes no customer's.
    customers = None if has_devices else ()
    note(session, Change(CHANNEL_CHANGE, (channel.id,), channel.provider_id, customers))


@dataclass(frozen=True)
class ChannelPolicy:
    """What the platform lets providers' channels have: which ports, and how many channels."""

    device_ports: tuple[tuple[int, int], ...]
    http_port: int
    max_per_provider: int

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(settings.device_port_ranges, settings.port, settings.max_channels_per_provider)

    def why_not(self, port: int) -> str | None:
        """Why no channel may listen on `port` (for the operator), or None when one may."""
        if port < FIRST_UNPRIVILEGED_PORT:
            return f"port {port} is privileged (below {FIRST_UNPRIVILEGED_PORT})"
        if port == self.http_port:
            return f"port {port} is the HTTP API's own port (FLEETPLANE_PORT)"
        if not any(low <= port <= high for low, high in self.device_ports):
            return f"port {port} is outside FLEETPLANE_DEVICE_PORTS ({self.described})"
        return None

    def ports_from(self, first: int) -> Iterator[int]:
        """Every port a channel may use: `first` and upwards, then from the lowest."""
        allowed = sorted(self.device_ports)
        for low, high in allowed:
            yield from (p for p in range(max(low, first), high + 1) if self.why_not(p) is None)
        for low, high in allowed:
            yield from (p for p in range(low, min(high, first - 1) + 1) if self.why_not(p) is None)

    @property
    def described(self) -> str:
        return ", ".join(
            str(low) if low == high else f"{low}-{high}" for low, high in self.device_ports
        )


def list_query(provider_id: str) -> Select[Channel]:
    return select(Channel).where(Channel.provider_id == provider_id)


def online_timeouts() -> Subquery:
    """Each channel's `id` and `online_timeout_seconds`, for a query of devices to join on
    their channel and tell whether they are online."""
    return select(Channel.id, Channel.online_timeout_seconds).subquery("channel_timeouts")


async def all_channels(session: AsyncSession) -> list[Channel]:
    """Every channel of the platform (for the gateway, which serves all providers)."""
    return list((await session.execute(select(Channel).order_by(Channel.id))).scalars())


async def by_id(session: AsyncSession, channel_id: str) -> Channel | None:
    """Any provider's channel (for the gateway, which serves them all)."""
    return await session.get(Channel, channel_id)


def lock_row(channel_id: str) -> Select[str]:
    """The channel's row: the lock under which the devices it registers by itself are
    counted and added (`core.db.count_under_lock`)."""
    return select(Channel.id).where(Channel.id == channel_id)


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


async def create(
    session: AsyncSession, actor: Actor, data: ChannelCreate, policy: ChannelPolicy
) -> Channel:
    values = data.model_dump(mode="json")
    await _require_room(session, actor.provider_id, policy)
    await _require_free_port(session, data.port, policy)
    channel = Channel(id=new_id("chn"), provider_id=actor.provider_id, **values)
    session.add(channel)
    await audit.record(session, actor, "channel.create", "channel", channel.id, values)
    await _flush_port(session, data.port, policy)
    _note_changed(session, channel, has_devices=False)
    return channel


async def update(
    session: AsyncSession,
    actor: Actor,
    channel_id: str,
    data: ChannelUpdate,
    policy: ChannelPolicy,
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
        await _require_free_port(session, changes["port"], policy)
    for field, value in changes.items():
        setattr(channel, field, value)
    await audit.record(session, actor, "channel.update", "channel", channel.id, changes)
    await _flush_port(session, channel.port, policy)
    _note_changed(session, channel, has_devices=True)
    return channel


async def delete(session: AsyncSession, actor: Actor, channel_id: str) -> None:
    channel = await get(session, actor.provider_id, channel_id)
    await session.delete(channel)
    await audit.record(session, actor, "channel.delete", "channel", channel.id)
    try:
        await session.flush()
    except IntegrityError as error:
        # Devices refer to their channel by a foreign key without a delete action: the
        # database refuses while any device is on it, even one added a moment ago.
        raise conflict("The channel still has devices; move or delete them first.") from error
    _note_changed(session, channel, has_devices=False)  # refused above when it has any


async def first_free_port(session: AsyncSession, policy: ChannelPolicy, wanted: int) -> int:
    """`wanted`, or the next port after it that the policy allows and no channel uses."""
    taken = await used_ports(session)
    return next(port for port in policy.ports_from(wanted) if port not in taken)


async def used_ports(session: AsyncSession) -> set[int]:
    """The ports of every provider's channels (ports are platform-wide)."""
    return set((await session.execute(select(Channel.port))).scalars())


async def _require_room(session: AsyncSession, provider_id: str, policy: ChannelPolicy) -> None:
    # Concurrent creates of one provider count one after the other (under the provider's
    # lock), so they cannot pass the limit together.
    count = select(func.count()).where(Channel.provider_id == provider_id)
    if await count_under_lock(session, providers.lock_row(provider_id), count) >= (
        policy.max_per_provider
    ):
        raise ApiError(
            409,
            "channel_limit_reached",
            f"A provider can have at most {policy.max_per_provider} channels; delete one first.",
        )


def _port_unavailable(port: int, policy: ChannelPolicy) -> ApiError:
    # One answer for every reason (outside the range, privileged, the API's port, another
    # channel's), so nobody learns whether, or whose, channel has a port.
    return validation_error(
        ["body", "port"],
        f"Port {port} is not available for a channel; use a free port in {policy.described}.",
    )


async def _require_free_port(session: AsyncSession, port: int, policy: ChannelPolicy) -> None:
    if policy.why_not(port) is not None:
        raise _port_unavailable(port, policy)
    taken = await session.execute(select(func.count()).where(Channel.port == port))
    if taken.scalar_one():
        raise _port_unavailable(port, policy)


async def _flush_port(session: AsyncSession, port: int, policy: ChannelPolicy) -> None:
    try:
        await session.flush()
    except IntegrityError as error:  # a concurrent channel took the port after the check
        raise _port_unavailable(port, policy) from error
