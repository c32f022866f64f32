"""Settings, read from FLEETPLANE_* environment variables; command-line options win."""

import ipaddress
import resource
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETPLANE_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default a SQLite file in data_dir"
    )
    request_database_url: str | None = Field(
        default=None,
        description="PostgreSQL: the login requests connect as; default database_url. A login "
        "that is a member of the app role only keeps requests from switching roles",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    rate_limit: float = Field(
        default=100.0, ge=0, description="requests per second per key; bursts of twice that"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="largest request line plus headers; larger requests get 431, connection closed",
    )
    max_headers: int = Field(
        default=100, ge=10, description="most headers in one request; more get 431"
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="time a client has to send a request's line and headers (408, closed)",
    )
    max_http_connections: int | None = Field(
        default=None,
        ge=1,
        description="open HTTP connections (event streams included); more are closed at once. "
        "Default: an eighth of the open-file limit, half of what device connections leave",
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="time a client has, from the end of a request's headers, to send its body "
        "(408, closed)",
    )
    api_key_cache_seconds: float = Field(
        default=2.0, ge=0, description="how long a checked key is trusted before re-reading it"
    )
    live_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how long a customer's devices read from the database answer the module's "
        "device reads before being read again (changes made in this process show at once); "
        "0 reads the database on every call",
    )
    gateway: bool = Field(
        default=True,
        description="Run the device listeners (channels), the retention job, the column store's "
        "builder, the delivery of automations' actions and their connection watch in this "
        "process.",
    )
    default_retention_days: int = Field(
        default=365, ge=1, description="How long messages of devices of no customer are kept."
    )
    retention_interval_seconds: float = Field(
        default=3600, ge=1, description="How often expired messages are purged."
    )
    connection_check_seconds: float = Field(
        default=5.0,
        ge=0.01,
        description="How often the automations' connection watch looks for devices that have "
        "sent nothing for a `connection_lost` rule's time",
    )
    column_build_interval_seconds: float = Field(
        default=60,
        ge=0.01,
        description="How often the days of messages that are over are packed as columns for "
        "analytics (messages.column_builder); until then they are read from the rows",
    )
    step_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A pipeline step that failed on a device is tried again after this long, "
        "twice as long after each further failure in a row",
    )
    step_retry_max_seconds: float = Field(
        default=600.0, gt=0, description="The longest wait before a failing step is tried again."
    )
    step_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Shortest time between two passes of the pipeline steps over the devices "
        "with new messages: longer gives each step more messages at once (cheaper per "
        "message), shorter gives fresher derived data",
    )
    steps_process: bool = Field(
        default=True,
        description="Run the pipeline steps in a process of their own, started and watched by "
        "the server: the steps' work then takes nothing from the intake's share of the CPU "
        "(false: in the server's own process)",
    )
    step_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the database is asked which devices a pipeline step is behind on "
        "(besides the devices this process has just stored messages of)",
    )
    # The delivery of automations' actions (notifications.delivery): webhooks, e-mails, commands.
    delivery_concurrency: int = Field(
        default=8, ge=1, le=256, description="Deliveries carried out at once"
    )
    delivery_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long one attempt (a webhook's request and answer, an e-mail) may take "
        "before it counts as failed",
    )
    delivery_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A failed delivery is tried again after this long, twice as long after each "
        "further failure",
    )
    delivery_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="The longest wait before a failed delivery is retried"
    )
    delivery_max_attempts: int = Field(
        default=10, ge=1, le=100, description="Attempts before a delivery is given up as failed"
    )
    delivery_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the outbox is looked at besides when a delivery is recorded in "
        "this server (or its steps process) and when a retry falls due",
    )
    webhook_private_addresses: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private, link-local and other addresses that "
        "are not public (a receiver on this host or its network); off, a customer's rule "
        "cannot reach the provider's own services",
    )
    smtp_url: str | None = Field(
        default=None,
        description="The SMTP server e-mail actions are sent through: smtp://user:password@host:"
        "port (STARTTLS when offered, see smtp_starttls) or smtps://... (TLS from the start); "
        "none: e-mail actions fail",
    )
    smtp_from: str = Field(default="fleetplane@localhost", description="E-mails' From address")
    smtp_starttls: bool | None = Field(
        default=None,
        description="smtp://: true requires STARTTLS, false never uses it; unset uses it when "
        "the server offers it",
    )
    device_host: str = Field(default="0.0.0.0", description="Address device listeners bind.")
    device_ports: str = Field(
        default="20000-29999,5055",
        description="Ports channels may use: ports and inclusive ranges, comma-separated. Ports "
        "below 1024 and the HTTP port are never used, whatever this says.",
    )
    max_channels_per_provider: int = Field(
        default=20, ge=1, description="How many channels one provider may have."
    )
    # Device-port limits (#7): anyone can reach a device port, so what one address, one
    # channel or one anonymous sender can hold is capped. Why these defaults: docs/decisions.md.
    device_connections_total: int | None = Field(
        default=None,
        ge=1,
        description="Open device connections of this process, all channels together; default: "
        "three quarters of the open-file limit (the rest stays for the API, database and files)",
    )
    device_connections_per_channel: int | None = Field(
        default=None, ge=1, description="Open connections of one channel; default: half the total"
    )
    device_connections_per_address: int = Field(
        default=500, ge=1, description="Open connections of one remote address on one channel"
    )
    device_connections_unlimited_networks: str = Field(
        default="127.0.0.0/8,::1",
        description="Comma-separated networks the per-address limit does not apply to (a local "
        "proxy, the simulator); the channel and process limits still do",
    )
    device_login_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="A TCP connection that has not logged in by then (OsmAnd: not sent a whole "
        "request) is closed",
    )
    device_idle_timeout_seconds: float = Field(
        default=600,
        gt=0,
        description="A TCP connection that has sent nothing for this long is closed",
    )
    device_unfinished_file_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Bytes of unfinished images and tachograph files one device may have on disk",
    )
    osmand_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    osmand_max_header_bytes: int = Field(default=8 * 1024, ge=1024)
    auto_register_per_minute: int = Field(
        default=20, ge=0, description="New devices one auto-registering channel adds per minute"
    )
    auto_register_max_devices: int = Field(
        default=1000, ge=0, description="Auto-registered devices one channel holds at most"
    )
    # PostgreSQL only: the role every request runs as, so row-level security applies to it.
    db_app_role: str = "fleetplane_app"
    # PostgreSQL only: the role cross-tenant work (gateway, pipeline, jobs) runs as.
    db_system_role: str = "fleetplane_system"

    @field_validator("device_ports")
    @classmethod
    def _port_ranges_parse(cls, value: str) -> str:
        parse_port_ranges(value)
        return value

    @property
    def device_port_ranges(self) -> tuple[tuple[int, int], ...]:
        return parse_port_ranges(self.device_ports)

    @field_validator("device_connections_unlimited_networks")
    @classmethod
    def _networks_are_readable(cls, value: str) -> str:
        parse_networks(value)  # a typo fails at start, not on the first connection
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'fleetplane.db').resolve()}"

    @cached_property
    def resolved_request_database_url(self) -> str:
        if self.request_database_url:
            return normalise_database_url(self.request_database_url)
        return self.resolved_database_url

    @property
    def is_postgres(self) -> bool:
        return self.resolved_database_url.startswith("postgresql")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`"127.0.0.0/8, ::1"` as networks; a bare address is a network of one."""
    return tuple(
        ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()
    )


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite://); use async drivers."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def parse_port_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """`20000-29999,5055` as ((20000, 29999), (5055, 5055)): ports and inclusive ranges."""
    ranges = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(
                f"{part.strip()!r} is neither a port nor a range of ports like 20000-29999"
            ) from None
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"{part.strip()!r}: ports go from 1 to 65535, the lower one first")
        ranges.append((low, high))
    return tuple(ranges)


def open_file_limit() -> int:
    """The process's open-file limit (`ulimit -n`): every connection holds one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
