"""Database: one set of models for SQLite (WAL) and PostgreSQL (asyncpg), Alembic migrations,
and the per-transaction tenant scope that PostgreSQL row-level security reads."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, MetaData, Select, String, TypeDecorator, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from fleetplane.config import Settings
from fleetplane.core.timeutil import as_utc

Result = TypeVar("Result")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes, whatever the engine does."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def json_column_text(value: Any) -> str:
    """JSON columns' text: orjson, several times faster than `json.dumps` on the ingest path
    (every message's `params`). What orjson refuses (integers beyond 64 bits, keys that are not
    strings) goes through `json.dumps` as before; both read back as the same value."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def sqlite_utc_text(value: datetime | None) -> str | None:
    """A `UTCDateTime` value as SQLite stores it (the text SQLAlchemy's SQLite `DATETIME`
    writes, in UTC), in half the time: for writers that bind many rows at once."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = as_utc(value)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def id_column_type() -> String:
    return String(40)


def _prepare_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def _prepare_postgres(engine: AsyncEngine, app_role: str) -> None:
    # Every connection of the application runs as a role that row-level security applies to,
    # even when the configured user owns the tables or is a superuser.
    @event.listens_for(engine.sync_engine, "connect")
    def _set_role(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET ROLE "{app_role}"')
        cursor.close()


def create_engine(
    settings: Settings, *, as_app_role: bool = True, pool_size: int = 20
) -> AsyncEngine:
    """`pool_size` connections are kept open (PostgreSQL), as many more opened when needed."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, json_serializer=json_column_text
        )
        _prepare_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=json_column_text,
    )
    if as_app_role:
        _prepare_postgres(engine, settings.db_app_role)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def set_tenant_scope(
    session: AsyncSession,
    *,
    provider_id: str | None = None,
    customer_id: str | None = None,
    system: bool = False,
) -> None:
    """Tell PostgreSQL's row-level security whose rows this transaction may touch.

    The application filters every query itself; this is the second wall behind it. The settings
    are transaction-local, so a pooled connection never carries one tenant into the next.
    """
    if session.bind.dialect.name != "postgresql":
        return
    await session.execute(
        text(
            "SELECT set_config('app.provider_id', :p, true),"
            " set_config('app.customer_id', :c, true),"
            " set_config('app.system', :s, true)"
        ),
        {"p": provider_id or "", "c": customer_id or "", "s": "on" if system else ""},
    )


async def lock_writers(session: AsyncSession, lock_row: Select[Any]) -> None:
    """Makes the transactions that take this lock go one at a time, from here to their end.

    PostgreSQL locks `lock_row` (`SELECT ... FOR UPDATE`). SQLite lets one writer in at a
    time, but its driver begins a transaction only at the first write, so what the
    transaction read before was read without that lock: the write lock is taken now
    (`BEGIN IMMEDIATE`), unless a write already holds it."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(lock_row.with_for_update())
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    if not raw.driver_connection.in_transaction:
        await connection.exec_driver_sql("BEGIN IMMEDIATE")


async def count_under_lock(
    session: AsyncSession, lock_row: Select[Any], count_statement: Select[tuple[int]]
) -> int:
    """`count_statement`'s count, read under `lock_writers(lock_row)`: a count-then-insert
    limit (live keys per provider) stays exact when requests race, as long as every insert
    of what is counted takes the same lock first (this function does)."""
    await lock_writers(session, lock_row)
    return (await session.execute(count_statement)).scalar_one()


@asynccontextmanager
async def system_session(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A transaction for platform-level work (bootstrap, maintenance jobs) across tenants."""
    async with sessions() as session, session.begin():
        await set_tenant_scope(session, system=True)
        yield session


async def run_platform_work(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[Result]]
) -> Result:
    """Runs `work` in one platform-level transaction on a short-lived engine: the command
    line's bootstrap, test set-up and benchmark set-up all go through here."""
    engine = create_engine(settings)
    try:
        async with system_session(session_factory(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def _alembic_config(settings: Settings) -> Config:
    package_dir = Path(__file__).resolve().parent.parent
    config = Config()
    config.set_main_option("script_location", str(package_dir / "migrations"))
    config.attributes["settings"] = settings
    return config


async def migrate(settings: Settings) -> None:
    """Bring the schema to the newest migration (as the configured user, not the app role)."""
    engine = create_engine(settings, as_app_role=False)
    config = _alembic_config(settings)

    def upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


def migrate_blocking(settings: Settings) -> None:
    asyncio.run(migrate(settings))
