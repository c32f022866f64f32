"""Database: one set of models for SQLite (WAL) and PostgreSQL (asyncpg), Alembic migrations,
and the per-transaction tenant scope that PostgreSQL row-level security reads."""

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    CursorResult,
    DateTime,
    MetaData,
    Select,
    String,
    Table,
    TypeDecorator,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_only

from fleetplane.config import Settings
from fleetplane.core.changes import ChangeHub, sessions_info
from fleetplane.core.timeutil import as_utc

Result = TypeVar("Result")
Item = TypeVar("Item")

log = logging.getLogger("fleetplane.db")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # SQLAlchemy types it as any FROM clause (a class may map a join or a select); every
        # model here declares a table.
        __table__: ClassVar[Table]


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

    event.listen(engine.sync_engine, "before_cursor_execute", _take_turn_before_write)


def _prepare_postgres(engine: AsyncEngine, role: str) -> None:
    # Every connection of the engine runs as `role` from the moment it opens: row-level
    # security applies to it even when the configured user owns the tables or is a superuser.
    @event.listens_for(engine.sync_engine, "connect")
    def _set_role(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET ROLE "{role}"')
        cursor.close()


def create_engine(
    settings: Settings, *, as_app_role: bool = True, pool_size: int = 20
) -> AsyncEngine:
    """The engine requests use: on PostgreSQL its connections (as the request login,
    `request_database_url`, by default the configured user) run as the app role, which sees
    only the rows of the tenant scope each transaction sets (`set_tenant_scope`).
    `as_app_role=False` is the configured user itself (migrations). `pool_size` connections
    are kept open (PostgreSQL), as many more opened when needed."""
    if not as_app_role:
        return _engine(settings.resolved_database_url, None, pool_size)
    return _engine(settings.resolved_request_database_url, settings.db_app_role, pool_size)


def create_system_engine(
    settings: Settings, *, shared: AsyncEngine | None = None, pool_size: int = 10
) -> AsyncEngine:
    """The engine of cross-tenant work (the gateway, the pipeline, retention, the command
    line's platform work): on PostgreSQL its connections run as the system role, which
    row-level security lets see every tenant's rows. SQLite has no roles: there `shared` (the
    process's request engine), when given, is returned instead of a second engine."""
    if shared is not None and not settings.is_postgres:
        return shared
    return _engine(settings.resolved_database_url, settings.db_system_role, pool_size)


def _engine(url: str, role: str | None, pool_size: int) -> AsyncEngine:
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
    if role is not None:
        _prepare_postgres(engine, role)
    return engine


async def warn_if_superuser(engine: AsyncEngine) -> bool:
    """Logs a loud warning when `engine`'s PostgreSQL login (requests': the request login) is
    a superuser: any of its connections can leave the app role (`RESET ROLE`) and then
    ignores row-level security. True when it warned."""
    if engine.dialect.name != "postgresql":
        return False
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT session_user, rolsuper FROM pg_roles WHERE rolname = session_user")
            )
        ).one()
    if not row.rolsuper:
        return False
    log.warning(
        "!!! The database user %r is a SUPERUSER. Row-level security holds only while a "
        "connection stays in its role, and a superuser's connection can leave it (RESET ROLE). "
        "Run Fleetplane as an ordinary user that owns the tables (see README, PostgreSQL). !!!",
        row.session_user,
    )
    return True


def session_factory(
    engine: AsyncEngine, changes: ChangeHub | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`; the change notices they raise reach `changes` once committed."""
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, info=sessions_info(changes)
    )


async def set_tenant_scope(
    session: AsyncSession,
    *,
    provider_id: str | None = None,
    customer_id: str | None = None,
    key_hash: str | None = None,
) -> None:
    """Tell PostgreSQL's row-level security whose rows this transaction may touch: a
    provider's, one customer of it, or (`key_hash`, at authentication) the one API key whose
    secret has that hash.

    The application filters every query itself; this is the second wall behind it. The settings
    are transaction-local, so a pooled connection never carries one tenant into the next.
    Seeing every tenant is not a scope: it is the system engine's role (`system_session`).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(
        text(
            "SELECT set_config('app.provider_id', :p, true),"
            " set_config('app.customer_id', :c, true),"
            " set_config('app.key_hash', :k, true)"
        ),
        {"p": provider_id or "", "c": customer_id or "", "k": key_hash or ""},
    )


async def lock_writers(session: AsyncSession, lock_row: Select[*tuple[Any, ...]]) -> None:
    """Makes the transactions that take this lock go one at a time, from here to their end.

    PostgreSQL locks `lock_row` (`SELECT ... FOR UPDATE`). SQLite lets one writer in at a
    time, but its driver begins a transaction only at the first write, so what the
    transaction read before was read without that lock: the write lock is taken now
    (`BEGIN IMMEDIATE`), unless a write already holds it."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(lock_row.with_for_update())
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None  # a connection checked out of the pool is open
    if not driver.in_transaction:
        await connection.exec_driver_sql("BEGIN IMMEDIATE")


# Ids bound into one `IN (...)` at most: SQLite's limit on a statement's parameters is far above,
# and the statements stay short.
IDS_PER_QUERY = 1000


async def rows_changed(session: AsyncSession, statement: Executable) -> int:
    """Runs an UPDATE or DELETE; how many rows it changed. (Such a statement gives a
    CursorResult, which counts them; the session's `execute` is typed for any statement.)"""
    result = await session.execute(statement)
    return cast(CursorResult[Any], result).rowcount or 0


def id_chunks(ids: Sequence[Item], size: int = IDS_PER_QUERY) -> Iterator[Sequence[Item]]:
    """`ids` in runs of at most `size`, for reads that bind them into `IN (...)`."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


async def values_by_key(
    session: AsyncSession,
    key: Any,
    value: Any,
    keys: Sequence[str],
    *order_by: Any,
) -> dict[str, list[Any]]:
    """Each key's values of a table holding many per key (a driver's key codes, a geofence's
    groups): `value` of the rows whose `key` is one of `keys`, in `order_by` order."""
    found: dict[str, list[Any]] = {}
    for chunk in id_chunks(keys):
        statement = select(key, value).where(key.in_(chunk)).order_by(key, *order_by)
        for owner, item in await session.execute(statement):
            found.setdefault(owner, []).append(item)
    return found


async def count_under_lock(
    session: AsyncSession, lock_row: Select[*tuple[Any, ...]], count_statement: Select[int]
) -> int:
    """`count_statement`'s count, read under `lock_writers(lock_row)`: a count-then-insert
    limit (live keys or channels per provider, devices a channel registers) stays exact when
    requests race, as long as every insert of what is counted is preceded by this call with
    the same `lock_row`."""
    await lock_writers(session, lock_row)
    return (await session.execute(count_statement)).scalar_one()


@asynccontextmanager
async def system_session(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A transaction for platform-level work across tenants (bootstrap, the gateway, jobs).
    `sessions` must be made from `create_system_engine`: on PostgreSQL, a session of the
    request engine sees nothing here (no tenant scope is set)."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def writer_session(
    sessions: async_sessionmaker[AsyncSession], *, urgent: bool = False
) -> AsyncIterator[AsyncSession]:
    """`system_session` for the process's steady writers (the message intake, the pipeline
    steps, the column builder), which take turns here on SQLite: its one writer lock, when
    taken, makes the other wait in the driver's busy handler, which sleeps in steps of up to
    100 ms, while a turn here passes the moment the last writer commits. PostgreSQL has row
    locks: no turns.

    `urgent` (the intake, whose devices wait for the commit): the turn is taken at the start,
    ahead of any other writer waiting. Otherwise it is taken at the transaction's first write,
    after every urgent writer waiting: SQLite's driver starts the transaction (and takes the
    database's lock) only there, so reads and work before it need no turn, and the intake
    waits at most for another writer's writes, not for its reads and computation."""
    bind = sessions.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        async with system_session(sessions) as session:
            yield session
        return
    turns = writer_turns(bind)
    if urgent:
        await turns.take(urgent=True)
        try:
            async with system_session(sessions) as session:
                yield session
        finally:
            turns.give_back()
        return
    taken = False

    async def take() -> None:
        nonlocal taken
        await turns.take(urgent=False)
        taken = True

    try:
        async with system_session(sessions) as session:
            info = (await session.connection()).sync_connection.info  # type: ignore[union-attr]
            info[_TURN_BEFORE_WRITE] = take
            try:
                yield session
            finally:
                info.pop(_TURN_BEFORE_WRITE, None)
    finally:
        if taken:
            turns.give_back()


def writer_turns(engine: AsyncEngine) -> "Turns":
    """The writer turns of this SQLite engine (made on first use)."""
    turns = _WRITER_TURNS.get(engine)
    if turns is None:
        turns = _WRITER_TURNS[engine] = WriterTurns()
    return turns


def use_writer_turns(engine: AsyncEngine, turns: "Turns") -> None:
    """Makes this engine's writers take `turns` instead of turns of their own: a process whose
    writes must wait for another process's turns (the pipeline steps' process)."""
    _WRITER_TURNS[engine] = turns


class Turns(Protocol):
    """What a writer needs of its turns: to wait for one, and to give it back."""

    async def take(self, *, urgent: bool) -> None: ...

    def give_back(self) -> None: ...


class WriterTurns:
    """Turns on one SQLite database's writer lock within a process: one writer at a time,
    urgent writers (the intake) before the others waiting, each kind first come first
    served."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()

    async def take(self, *, urgent: bool) -> None:
        if not self._held and not self._urgent and (urgent or not self._others):
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._others).append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed over just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    (self._urgent if urgent else self._others).remove(waiter)
            raise

    def give_back(self) -> None:
        for waiting in (self._urgent, self._others):
            while waiting:
                waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the turn passes on: still held
                    return
        self._held = False


# One set of turns per SQLite engine (an engine belongs to one event loop).
_WRITER_TURNS: "weakref.WeakKeyDictionary[AsyncEngine, Turns]" = weakref.WeakKeyDictionary()
# In a connection's `info` while a writer that has no turn yet uses it: what takes the turn.
_TURN_BEFORE_WRITE = "fleetplane_turn_before_write"


def _take_turn_before_write(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """Before a statement on SQLite: a writer without its turn takes it before its first
    statement that is not a plain read (the driver begins the transaction there)."""
    take = connection.info.get(_TURN_BEFORE_WRITE)
    if take is not None and statement.lstrip()[:6].upper() != "SELECT":
        del connection.info[_TURN_BEFORE_WRITE]
        await_only(take())


async def run_platform_work(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[Result]]
) -> Result:
    """Runs `work` in one platform-level transaction on a short-lived engine: the command
    line's bootstrap, test set-up and benchmark set-up all go through here."""
    engine = create_system_engine(settings)
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
