"""Row-level security for PostgreSQL, shared by migrations.

Two roles, neither of which owns anything or logs in:

- `fleetplane_app`: what requests run as. Each transaction says whose rows it may touch with
  `set_config('app.provider_id' / 'app.customer_id', ..., true)`; an unset value is '' and
  NULLIF turns it into NULL, so a transaction that said nothing sees nothing (fails closed).
- `fleetplane_system`: what cross-tenant work runs as (the gateway, the pipeline, retention,
  the command line's platform work), on connections of its own. Every protected table has a
  policy for this role alone that lets it see and write every row. No setting gives a session
  of another role more: being the system is a matter of role, not of a value a session sets.

Roles belong to the whole cluster, and several databases may be migrated at once: creating and
granting them tolerates another migration doing the same at the same moment.
"""

from alembic import op

APP_ROLE = "fleetplane_app"
SYSTEM_ROLE = "fleetplane_system"

_PROVIDER = "NULLIF(current_setting('app.provider_id', true), '')"
_CUSTOMER = "NULLIF(current_setting('app.customer_id', true), '')"
_KEY_HASH = "NULLIF(current_setting('app.key_hash', true), '')"


def is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def ensure_roles() -> None:
    """Creates both roles if missing and grants them to the migrating user (who must be able
    to `SET ROLE` to them). A role created or granted by a concurrent migration counts as done;
    a user without the right to manage roles gets a notice: an administrator creates them."""
    for role in (APP_ROLE, SYSTEM_ROLE):
        op.execute(
            f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                    BEGIN
                        CREATE ROLE {role} NOLOGIN NOBYPASSRLS;
                    EXCEPTION WHEN duplicate_object OR unique_violation THEN
                        NULL;  -- created by a concurrent migration
                    END;
                END IF;
                IF NOT EXISTS (
                    SELECT 1 FROM pg_auth_members m
                    JOIN pg_roles r ON r.oid = m.roleid AND r.rolname = '{role}'
                    JOIN pg_roles u ON u.oid = m.member AND u.rolname = current_user
                ) THEN
                    BEGIN
                        EXECUTE format('GRANT {role} TO %I', current_user);
                    EXCEPTION WHEN duplicate_object OR unique_violation THEN
                        NULL;  -- granted by a concurrent migration
                    END;
                END IF;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot manage role {role}; ask an administrator to create it';
            END $$;
            """
        )
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")


def ensure_app_role() -> None:
    """The first migration's name for `ensure_roles`."""
    ensure_roles()


def grant_tables(*tables: str) -> None:
    for table in tables:
        for role in (APP_ROLE, SYSTEM_ROLE):
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")


def in_history_window(time_expression: str, device_id_expression: str) -> str:
    """For a customer-scoped transaction, a device's history row is visible only inside the
    window of the customer's current assignment of the device (from its `history_from`, or
    all of it when null; the rule of `devices.service.history_window`); provider-scoped
    transactions see all of it."""
    return (
        f"({_CUSTOMER} IS NULL OR EXISTS (SELECT 1 FROM device_assignments a"
        f" WHERE a.device_id = {device_id_expression} AND a.customer_id = {_CUSTOMER}"
        f" AND a.ended_at IS NULL"
        f" AND (a.history_from IS NULL OR {time_expression} >= a.history_from)))"
    )


def protect(
    table: str,
    customer_column: str | None,
    *,
    provider_column: str = "provider_id",
    history_time_column: str | None = None,
) -> None:
    """Forced RLS on a tenant table: rows of the scoped provider, and of the scoped customer
    when one is set (a customer-level request). A table of device history names its time
    column, and a customer sees only the rows of its window."""
    condition = f"{provider_column} = {_PROVIDER}"
    if customer_column:
        condition += f" AND ({_CUSTOMER} IS NULL OR {customer_column} = {_CUSTOMER})"
    if history_time_column:
        condition += " AND " + in_history_window(
            f"{table}.{history_time_column}", f"{table}.device_id"
        )
    _enable(table, condition)


def protect_through_device(
    table: str,
    column: str = "device_id",
    device_column: str = "id",
    *,
    history_time_column: str | None = None,
) -> None:
    """Forced RLS on a table keyed by device (`column` holds the device's `device_column`): a
    row is visible when its device is, so the devices policy (provider, and customer when
    scoped) decides; for a table of device history, also the customer's window."""
    window = ""
    if history_time_column:
        window = " AND " + in_history_window(f"{table}.{history_time_column}", "d.id")
    visible_device = (
        f"EXISTS (SELECT 1 FROM devices d WHERE d.{device_column} = {table}.{column}{window})"
    )
    _enable(table, visible_device)


def protect_key_lookup(table: str = "api_keys") -> None:
    """Lets a transaction read the one key whose secret's hash it names in `app.key_hash`
    (authentication, before anyone knows whose key it is). Knowing the hash of a key is
    knowing the key, and reading is all it allows."""
    op.execute(f"DROP POLICY IF EXISTS key_lookup ON {table}")
    op.execute(f"CREATE POLICY key_lookup ON {table} FOR SELECT USING (secret_hash = {_KEY_HASH})")


def _enable(table: str, condition: str) -> None:
    """Forced RLS with the tenant condition for everyone and every row for the system role.
    Replaces the table's policies of an earlier migration."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} USING ({condition}) WITH CHECK ({condition})"
    )
    op.execute(f"DROP POLICY IF EXISTS system_access ON {table}")
    op.execute(
        f"CREATE POLICY system_access ON {table} TO {SYSTEM_ROLE} USING (true) WITH CHECK (true)"
    )


def act_as_system() -> None:
    """Lets a data migration see and write every tenant's rows for the rest of its transaction
    (forced RLS applies to the tables' owner too). Policies from 0013 on give every row to
    members of the system role, which the migrating user is; the policies of the migrations
    before 0013 read this setting instead."""
    op.execute("SELECT set_config('app.system', 'on', true)")
