"""PostgreSQL row-level security: the second wall behind the application's own filters.

These queries deliberately leave out every tenant filter, as a bug would."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db, start_server
from fleetplane.commands.models import Command
from fleetplane.config import Settings
from fleetplane.core.auth import hash_secret
from fleetplane.core.db import create_engine, session_factory, set_tenant_scope
from fleetplane.core.ids import new_id
from fleetplane.devices import service as devices
from fleetplane.messages import codec
from fleetplane.messages import service as messages
from fleetplane.messages.models import DriverChatMessage
from fleetplane.tachograph.models import TachographFile
from fleetplane.telemetry import Message
from fleetplane.video.models import MediaFile


@pytest.fixture(autouse=True)
def _postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only; this is the SQLite run")


def in_session(server: RunningServer, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        engine = create_engine(server.settings)
        try:
            async with session_factory(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def device_ids(server: RunningServer, **scope: Any) -> set[str]:
    async def work(session: AsyncSession) -> set[str]:
        await set_tenant_scope(session, **scope)
        return set((await session.execute(text("SELECT id FROM devices"))).scalars())

    return in_session(server, work)


def all_device_ids(tenant: Tenant) -> set[str]:
    return {d["id"] for devices in tenant.devices.values() for d in devices}


async def current_role(session: AsyncSession) -> tuple[str, bool, bool]:
    """(role, may it bypass row-level security, is it a superuser) of the session."""
    row = (
        await session.execute(
            text(
                "SELECT current_user, rolbypassrls, rolsuper FROM pg_roles"
                " WHERE rolname = current_user"
            )
        )
    ).one()
    return row[0], row[1], row[2]


def test_the_app_runs_as_a_role_that_cannot_bypass_rls(server: RunningServer) -> None:
    assert in_session(server, current_role) == ("fleetplane_app", False, False)


def test_without_a_scope_nothing_is_visible(server: RunningServer, tenant: Tenant) -> None:
    assert device_ids(server) == set()


def test_a_provider_scope_sees_only_its_rows(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    seen = device_ids(server, provider_id=tenant.provider_id)
    assert all_device_ids(tenant) <= seen
    assert not seen & all_device_ids(other_tenant)


def test_a_customer_scope_sees_only_that_customers_rows(
    server: RunningServer, tenant: Tenant
) -> None:
    customer = tenant.customers[0]["id"]
    seen = device_ids(server, provider_id=tenant.provider_id, customer_id=customer)
    assert seen == {d["id"] for d in tenant.devices[customer]}


def test_writing_another_providers_rows_is_refused(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    async def work(session: AsyncSession) -> None:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        await session.execute(
            text(
                "INSERT INTO devices (id, provider_id, unique_id, name, created_at, updated_at)"
                " VALUES ('dev_intruder', :p, 'X', 'x', now(), now())"
            ),
            {"p": other_tenant.provider_id},
        )

    with pytest.raises(DBAPIError, match="row-level security"):
        in_session(server, work)


def test_messages_are_visible_only_with_their_device(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    own = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    foreign = other_tenant.devices[other_tenant.customers[0]["id"]][0]["id"]
    moment = datetime(2024, 5, 1, tzinfo=UTC)

    async def store(session: AsyncSession) -> None:
        seqs = await devices.seqs_of(session, [own, foreign])
        message = Message(device_time=moment, received_at=moment, lat=1.0, lon=2.0)
        await messages.insert_rows(session, [messages.to_row(seqs[own], message)])
        await messages.insert_rows(session, [messages.to_row(seqs[foreign], message)])

    run_in_db(server.settings, store)

    def visible(**scope: Any) -> set[str]:
        async def work(session: AsyncSession) -> set[str]:
            await set_tenant_scope(session, **scope)
            rows = await session.execute(
                text("SELECT d.id FROM messages m JOIN devices d ON d.seq = m.device_seq")
            )
            return set(rows.scalars())

        return in_session(server, work)

    assert visible() == set()
    assert visible(provider_id=tenant.provider_id) == {own}
    assert visible(provider_id=other_tenant.provider_id) == {foreign}
    other_customer = tenant.customers[1]["id"]
    assert visible(provider_id=tenant.provider_id, customer_id=other_customer) == set()


def test_writing_messages_of_another_providers_device_is_refused(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    foreign = other_tenant.devices[other_tenant.customers[0]["id"]][0]["id"]

    seq = run_in_db(server.settings, lambda s: devices.seqs_of(s, [foreign]))[foreign]

    async def work(session: AsyncSession) -> None:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        moment = datetime(2024, 5, 1, tzinfo=UTC)
        row = messages.to_row(seq, Message(device_time=moment, received_at=moment))
        await messages.insert_rows(session, [row])

    with pytest.raises(DBAPIError, match="row-level security"):
        in_session(server, work)


def test_cross_tenant_work_runs_as_its_own_role(server: RunningServer) -> None:
    assert run_in_db(server.settings, current_role) == ("fleetplane_system", False, False)


@pytest.mark.parametrize(
    "statement",
    [
        "SET app.system = 'on'",
        "SET LOCAL app.system = 'on'",
        "SELECT set_config('app.system', 'on', false)",
        "SELECT set_config('app.system', 'on', true)",
    ],
)
def test_a_request_session_setting_app_system_sees_nothing_more(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant, statement: str
) -> None:
    def seen(**scope: Any) -> set[str]:
        async def work(session: AsyncSession) -> set[str]:
            await set_tenant_scope(session, **scope)
            await session.execute(text(statement))
            return set((await session.execute(text("SELECT id FROM devices"))).scalars())

        return in_session(server, work)

    assert seen() == set()
    mine = seen(provider_id=tenant.provider_id)
    assert all_device_ids(tenant) <= mine and not mine & all_device_ids(other_tenant)


@pytest.mark.parametrize(
    "table, provider_column",
    [("providers", "id"), ("api_keys", "provider_id"), ("channels", "provider_id")],
)
def test_provider_tables_show_only_the_scoped_providers_rows(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant, table: str, provider_column: str
) -> None:
    def owners(**scope: Any) -> set[str]:
        async def work(session: AsyncSession) -> set[str]:
            await set_tenant_scope(session, **scope)
            rows = await session.execute(text(f"SELECT {provider_column} FROM {table}"))
            return set(rows.scalars())

        return in_session(server, work)

    assert owners() == set()
    assert owners(provider_id=tenant.provider_id) == {tenant.provider_id}
    assert owners(provider_id=other_tenant.provider_id) == {other_tenant.provider_id}


def test_writing_another_providers_key_or_channel_is_refused(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    async def work(session: AsyncSession) -> None:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        await session.execute(
            text(
                "INSERT INTO channels (id, provider_id, name, protocol, transport, port, enabled,"
                " online_timeout_seconds, auto_register, created_at, updated_at) VALUES"
                " ('chn_intruder', :p, 'x', 'osmand', 'http', 1, false, 60, false, now(), now())"
            ),
            {"p": other_tenant.provider_id},
        )

    with pytest.raises(DBAPIError, match="row-level security"):
        in_session(server, work)

    async def revoke(session: AsyncSession) -> int:
        await set_tenant_scope(session, provider_id=tenant.provider_id)
        result = await session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE provider_id = :p"),
            {"p": other_tenant.provider_id},
        )
        return result.rowcount

    assert in_session(server, revoke) == 0


def test_a_key_is_found_by_its_secrets_hash_alone(
    server: RunningServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    secret, key = tenant.api.new_key(name="looked up")

    def keys_seen(key_hash: str) -> set[str]:
        async def work(session: AsyncSession) -> set[str]:
            await set_tenant_scope(session, key_hash=key_hash)
            return set((await session.execute(text("SELECT id FROM api_keys"))).scalars())

        return in_session(server, work)

    assert keys_seen(hash_secret(secret)) == {key["id"]}
    assert keys_seen(hash_secret(secret + "x")) == set()


def test_the_app_warns_at_start_when_the_database_user_is_a_superuser(
    server: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def is_superuser(session: AsyncSession) -> bool:
        return bool(
            (
                await session.execute(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = session_user")
                )
            ).scalar_one()
        )

    if not run_in_db(server.settings, is_superuser):
        pytest.skip("the test database user is not a superuser")
    settings = Settings(**{**server.settings.model_dump(), "gateway": False, "data_dir": tmp_path})
    with caplog.at_level(logging.WARNING, logger="fleetplane"):
        started = start_server(settings)
        started.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SUPERUSER" in record.getMessage() for record in warnings), warnings


def test_a_moved_devices_history_before_the_move_is_hidden_from_its_new_customer(
    server: RunningServer, tenant: Tenant
) -> None:
    old, new = (c["id"] for c in tenant.customers)
    device = tenant.devices[old][0]["id"]
    run_in_db(server.settings, lambda s: add_history(s, tenant.provider_id, device, old, "before"))
    moved = tenant.api.patch(f"/api/devices/{device}", json={"customer_id": new})
    assert moved.status_code == 200, moved.text
    run_in_db(server.settings, lambda s: add_history(s, tenant.provider_id, device, new, "after"))

    def marks(**scope: Any) -> dict[str, set[str]]:
        async def work(session: AsyncSession) -> dict[str, set[str]]:
            await set_tenant_scope(session, provider_id=tenant.provider_id, **scope)
            return {table: await history_marks(session, table) for table in HISTORY_TABLES}

        return in_session(server, work)

    everything = {table: {"before", "after"} for table in HISTORY_TABLES}
    assert marks() == everything
    assert marks(customer_id=new) == {table: {"after"} for table in HISTORY_TABLES}
    assert marks(customer_id=old) == {table: set() for table in HISTORY_TABLES}


HISTORY_TABLES = ("messages", "commands", "driver_chat_messages", "media_files", "tachograph_files")


async def add_history(
    session: AsyncSession, provider_id: str, device_id: str, customer_id: str, mark: str
) -> None:
    """One row of every history table for the device, timed now, each carrying `mark`."""
    now = datetime.now(UTC)
    seq = (await devices.seqs_of(session, [device_id]))[device_id]
    message = Message(device_time=now, received_at=now, params={"mark": mark})
    await messages.insert_rows(session, [messages.to_row(seq, message)])
    owner = {"provider_id": provider_id, "device_id": device_id}
    file = {**owner, "name": mark, "size": 1, "sha256": "0" * 64, "path": mark, "received_at": now}
    session.add_all(
        [
            Command(
                id=new_id("cmd"), customer_id=customer_id, type="driver_message", text=mark,
                status="queued", created_by="test", created_at=now, expires_at=now, **owner,
            ),
            DriverChatMessage(id=new_id("chat"), device_id=device_id, text=mark, received_at=now),
            MediaFile(
                id=new_id("med"), kind="image", content_type="image/jpeg", taken_at=now, **file
            ),
            TachographFile(id=new_id("ddd"), driver_id="D1", downloaded_at=now, **file),
        ]
    )  # fmt: skip
    await session.flush()


async def history_marks(session: AsyncSession, table: str) -> set[str]:
    """The marks of the rows of a history table this transaction sees."""
    if table == "messages":
        rows = await session.execute(text("SELECT device_time, packed FROM messages"))
        return {str(codec.unpack(row[0], row[1]).params.get("mark")) for row in rows}
    column = {"commands": "text", "driver_chat_messages": "text"}.get(table, "name")
    return set((await session.execute(text(f"SELECT {column} FROM {table}"))).scalars())


REQUEST_LOGIN = "fleetplane_request_login"


def test_a_request_login_of_the_app_role_alone_cannot_leave_it(
    server: RunningServer, tenant: Tenant
) -> None:
    """With `request_database_url` naming a login that is a member of the app role only,
    a request connection can neither become the system role nor drop back to a role with
    more rights: the guarantee that a shared login cannot give (docs/decisions.md)."""

    async def create_login(session: AsyncSession) -> None:
        # Roles belong to the whole cluster, which other test runs share: create it once.
        await session.execute(
            text(
                f"""
                DO $$
                BEGIN
                    CREATE ROLE {REQUEST_LOGIN} LOGIN NOINHERIT;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL;
                END $$;
                """
            )
        )
        await session.execute(text(f"GRANT fleetplane_app TO {REQUEST_LOGIN}"))

    owner = create_engine(server.settings, as_app_role=False)

    async def as_owner() -> None:
        try:
            async with session_factory(owner)() as session, session.begin():
                await create_login(session)
        finally:
            await owner.dispose()

    asyncio.run(as_owner())
    url = make_url(server.settings.resolved_database_url).set(username=REQUEST_LOGIN)
    request_url = url.render_as_string(hide_password=False)
    settings = Settings(**{**server.settings.model_dump(), "request_database_url": request_url})

    def run(*statements: str) -> Any:
        async def main() -> Any:
            engine = create_engine(settings)
            try:
                async with session_factory(engine)() as session, session.begin():
                    await set_tenant_scope(session, provider_id=tenant.provider_id)
                    for statement in statements:
                        result = await session.execute(text(statement))
                    return set(result.scalars())
            finally:
                await engine.dispose()

        return asyncio.run(main())

    assert run("SELECT id FROM devices") == all_device_ids(tenant)
    for escape in ("SET ROLE fleetplane_system", "SET ROLE postgres"):
        with pytest.raises(DBAPIError, match="permission denied to set role"):
            run(escape)
    with pytest.raises(DBAPIError, match="permission denied for table devices"):
        run("RESET ROLE", "SELECT id FROM devices")
