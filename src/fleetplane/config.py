"""Settings, read from FLEETPLANE_* environment variables; command-line options win."""

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
        default=True, description="Run the device listeners (channels) in this process."
    )
    default_retention_days: int = Field(
        default=365, ge=1, description="How long messages of devices of no customer are kept."
    )
    retention_interval_seconds: float = Field(
        default=3600, ge=1, description="How often expired messages are purged."
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
    # PostgreSQL only: the role every request runs as, so row-level security applies to it.
    db_app_role: str = "fleetplane_app"

    @field_validator("device_ports")
    @classmethod
    def _port_ranges_parse(cls, value: str) -> str:
        parse_port_ranges(value)
        return value

    @property
    def device_port_ranges(self) -> tuple[tuple[int, int], ...]:
        return parse_port_ranges(self.device_ports)

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'fleetplane.db').resolve()}"

    @property
    def is_postgres(self) -> bool:
        return self.resolved_database_url.startswith("postgresql")


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
