"""The migrated schema against the code: the models the migration environment sees are the
tables the migrations made, and every tenant table is behind forced row-level security."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncSession

import fleetplane.migrations
from conftest import RunningServer, run_in_db

# Columns that make a row a tenant's: the provider's, the customer's, or a device's (by id, or
# by its compact key in the messages table).
TENANT_COLUMNS = ("provider_id", "customer_id", "device_id", "device_seq")

# Runs the migration environment as Alembic runs it, in an interpreter of its own (so only what
# env.py imports is loaded), and prints the tables of the metadata it hands to Alembic, which
# autogenerate compares with the database (a table missing there would be dropped), and which
# of the tables named on the command line its `include_name` leaves out of the comparison.
_ENV_METADATA_TABLES = """
import json, sys
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

config = Config()
config.set_main_option("script_location", sys.argv[1])
script = ScriptDirectory.from_config(config)
seen = {}

def keep_metadata(revision, context):
    seen["models"] = sorted(context.opts["target_metadata"].tables)
    include = context.opts.get("include_name") or (lambda name, type_, parents: True)
    seen["ignored"] = [name for name in sys.argv[2:] if not include(name, "table", {})]
    return []  # nothing to run

with create_engine("sqlite://").connect() as connection:
    config.attributes["connection"] = connection
    with EnvironmentContext(config, script, fn=keep_metadata):
        script.run_env()
print(json.dumps(seen))
"""


def tables_env_py_sees(tables: set[str]) -> tuple[set[str], set[str]]:
    """The tables of env.py's metadata, and which of `tables` it tells autogenerate to leave
    alone."""
    location = Path(fleetplane.migrations.__file__).parent
    result = subprocess.run(
        [sys.executable, "-c", _ENV_METADATA_TABLES, str(location), *sorted(tables)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    return set(seen["models"]), set(seen["ignored"])


def migrated_tables(server: RunningServer) -> set[str]:
    async def read(session: AsyncSession) -> set[str]:
        connection = await session.connection()
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        return set(names) - {"alembic_version"}

    return run_in_db(server.settings, read)


def test_the_migration_environment_sees_every_table(server: RunningServer) -> None:
    migrated = migrated_tables(server)
    seen, ignored = tables_env_py_sees(migrated)
    migrated -= ignored
    assert not migrated - seen, f"tables without a model env.py imports: {migrated - seen}"
    assert not seen - migrated, f"models without a migration: {seen - migrated}"


_TENANT_TABLES_RLS = text(
    """
    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname = current_schema()
      AND c.relname IN (
        SELECT table_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND column_name = ANY(:columns)
      )
    ORDER BY c.relname
    """
)


def test_every_tenant_table_has_forced_row_level_security(
    backend: str, server: RunningServer
) -> None:
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only; this is the SQLite run")

    async def read(session: AsyncSession) -> list[tuple[str, bool, bool]]:
        result = await session.execute(_TENANT_TABLES_RLS, {"columns": list(TENANT_COLUMNS)})
        return [(row[0], row[1], row[2]) for row in result]

    tables = run_in_db(server.settings, read)
    assert {"devices", "channels", "messages"} <= {name for name, _, _ in tables}
    unprotected = [name for name, enabled, forced in tables if not (enabled and forced)]
    assert not unprotected, f"tenant tables without forced row-level security: {unprotected}"
