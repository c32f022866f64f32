"""Row-level security for PostgreSQL, shared by migrations.

The application runs as a role (`fleetplane_app`) that owns nothing and cannot bypass RLS. Each
transaction says whose rows it may touch with `set_config('app.provider_id' / 'app.customer_id'
/ 'app.system', ..., true)`; an unset value is '' and NULLIF turns it into NULL, so a transaction
that said nothing sees nothing (fails closed).
"""

from alembic import op

APP_ROLE = "fleetplane_app"

_PROVIDER = "NULLIF(current_setting('app.provider_id', true), '')"
_CUSTOMER = "NULLIF(current_setting('app.customer_id', true), '')"
_SYSTEM = "current_setting('app.system', true) = 'on'"


def is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def ensure_app_role() -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN NOBYPASSRLS;
            END IF;
            EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot manage role {APP_ROLE}; ask an administrator to create it';
        END $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")


def grant_tables(*tables: str) -> None:
    for table in tables:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")


def protect(table: str, customer_column: str | None) -> None:
    """Forced RLS on a tenant table: rows of the scoped provider, and of the scoped customer
    when one is set (a customer-level request)."""
    condition = f"provider_id = {_PROVIDER}"
    if customer_column:
        condition += f" AND ({_CUSTOMER} IS NULL OR {customer_column} = {_CUSTOMER})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING ({_SYSTEM} OR ({condition})) WITH CHECK ({_SYSTEM} OR ({condition}))"
    )


def protect_through_device(
    table: str, column: str = "device_id", device_column: str = "id"
) -> None:
    """Forced RLS on a table keyed by device (`column` holds the device's `device_column`): a
    row is visible when its device is, so the devices policy (provider, and customer when
    scoped) decides."""
    visible_device = f"EXISTS (SELECT 1 FROM devices d WHERE d.{device_column} = {table}.{column})"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING ({_SYSTEM} OR {visible_device}) WITH CHECK ({_SYSTEM} OR {visible_device})"
    )


def act_as_system() -> None:
    """Lets a data migration see and write every tenant's rows (forced RLS applies to the
    tables' owner too), for the rest of the migration's transaction."""
    op.execute("SELECT set_config('app.system', 'on', true)")
