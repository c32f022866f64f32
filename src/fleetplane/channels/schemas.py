from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from fleetplane.core.schemas import RequestBody, ResponseBody, name_field


class Protocol(StrEnum):
    WIALON_IPS = "wialon_ips"
    OSMAND = "osmand"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    TCP_UDP = "tcp_udp"
    HTTP = "http"


TRANSPORTS: dict[Protocol, tuple[Transport, ...]] = {
    Protocol.WIALON_IPS: (Transport.TCP_UDP, Transport.TCP, Transport.UDP),
    Protocol.OSMAND: (Transport.HTTP,),
}

PORT_DESCRIPTION = (
    "Port the listener binds (TCP and/or UDP): one of the platform's device ports "
    "(FLEETPLANE_DEVICE_PORTS, by default 20000-29999 and 5055) that no other channel uses."
)
PORT = Field(ge=1, le=65535, description=PORT_DESCRIPTION)


class ChannelCreate(RequestBody):
    name: str = name_field()
    protocol: Protocol
    transport: Transport | None = Field(
        default=None, description="Default: the protocol's usual one (tcp_udp, http)."
    )
    port: int = PORT
    enabled: bool = True
    online_timeout_seconds: int = Field(
        default=600, ge=10, le=86_400, description="A device is online this long after a message."
    )
    auto_register: bool = Field(
        default=False, description="Add unknown devices to the inventory at their first login."
    )

    @model_validator(mode="after")
    def _transport_fits_protocol(self) -> Self:
        allowed = TRANSPORTS[self.protocol]
        if self.transport is None:
            self.transport = allowed[0]
        elif self.transport not in allowed:
            names = ", ".join(t.value for t in allowed)
            raise ValueError(f"transport of a {self.protocol.value} channel must be one of {names}")
        return self


class ChannelUpdate(RequestBody):
    name: str | None = name_field(default=None)
    transport: Transport | None = None
    port: int | None = Field(default=None, ge=1, le=65535, description=PORT_DESCRIPTION)
    enabled: bool | None = None
    online_timeout_seconds: int | None = Field(default=None, ge=10, le=86_400)
    auto_register: bool | None = None


class ChannelCounters(ResponseBody):
    connections: int = Field(description="Open device connections now.")
    connections_refused: int = Field(
        default=0, description="Connections closed at once: over the channel's limits."
    )
    connections_timed_out: int = Field(
        default=0, description="Connections closed for not logging in in time, or for silence."
    )
    messages_accepted: int
    messages_rejected: int
    bytes_received: int
    last_error: str | None
    listening: bool = Field(description="Whether the listener is bound right now.")


class ListenerState(StrEnum):
    LISTENING = "listening"
    STARTING = "starting"
    FAILED = "failed"
    STOPPED = "stopped"


class ChannelListener(ResponseBody):
    """The state of this process's listener for the channel."""

    state: ListenerState = Field(
        description="`listening`: bound, devices can connect. `starting`: just created, moved "
        "or enabled, binding now. `failed`: the port cannot be used (see `reason`); tried again "
        "every few seconds. `stopped`: the channel is disabled."
    )
    reason: str | None = Field(
        description="Why the listener failed or is stopped; null when listening or starting."
    )


class ChannelSummary(ResponseBody):
    """A channel as listed (read one channel for its live counters)."""

    id: str
    name: str
    protocol: Protocol
    transport: Transport
    port: int
    enabled: bool
    online_timeout_seconds: int
    auto_register: bool
    created_at: datetime
    updated_at: datetime
    listener: ChannelListener | None = Field(
        default=None,
        description="This process's listener; null when this process runs no device "
        "listeners (FLEETPLANE_GATEWAY=false).",
    )


class ChannelOut(ChannelSummary):
    counters: ChannelCounters | None = Field(
        default=None, description="Live figures of this process's listener; null if none yet."
    )
