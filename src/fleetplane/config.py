"""Settings, read from FLEETPLANE_* environment variables; command-line options win."""

from functools import cached_property
from pathlib import Path

from pydantic import Field
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
    # PostgreSQL only: the role every request runs as, so row-level security applies to it.
    db_app_role: str = "fleetplane_app"
    # PostgreSQL only: the role cross-tenant work (gateway, pipeline, jobs) runs as.
    db_system_role: str = "fleetplane_system"

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


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite://); use async drivers."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url
