"""Device assignment periods, and row-level security without a way around it (#7).

- `device_assignments`: when each device belonged to which customer. A customer sees a
  device's history from the start of its current period; existing assignments get a period
  from the device's last assignment in the audit log, or else from its creation.
- PostgreSQL: cross-tenant work runs as the role `fleetplane_system`, which every protected
  table lets through by a policy of its own; the `app.system` setting no longer opens anything.
  Providers, API keys and channels get provider policies (a key is found at authentication by
  the hash of its secret), and the tables of device history apply the customer's window.

Revision ID: 0013
Revises: 0012
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.core.ids import new_id
from fleetplane.migrations import rls

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.String(40)

# Every table of the schema with its policy, as `rls.protect*` arguments.
_PROTECTED: dict[str, dict[str, Any]] = {
    "providers": {"customer_column": None, "provider_column": "id"},
    "api_keys": {"customer_column": None},
    "channels": {"customer_column": None},
    "customers": {"customer_column": "id"},
    "devices": {"customer_column": "customer_id"},
    "device_assignments": {"customer_column": "customer_id"},
    "audit_log": {"customer_column": "customer_id"},
    "sensors": {"customer_column": None},
    "commands": {"customer_column": "customer_id", "history_time_column": "created_at"},
}
_PROTECTED_THROUGH_DEVICE: dict[str, dict[str, Any]] = {
    "device_states": {},  # the live state, not history: the device's customer sees it
    "messages": {
        "column": "device_seq",
        "device_column": "seq",
        "history_time_column": "device_time",
    },
    "driver_chat_messages": {"history_time_column": "received_at"},
    "media_files": {"history_time_column": "taken_at"},
    "tachograph_files": {"history_time_column": "downloaded_at"},
}
_NEWLY_PROTECTED = ("providers", "api_keys", "channels", "device_assignments")

_devices = sa.table(
    "devices",
    sa.column("id", sa.String()),
    sa.column("provider_id", sa.String()),
    sa.column("customer_id", sa.String()),
    sa.column("created_at", UTCDateTime()),
)
_audit = sa.table(
    "audit_log",
    sa.column("object_type", sa.String()),
    sa.column("object_id", sa.String()),
    sa.column("action", sa.String()),
    sa.column("changes", sa.JSON()),
    sa.column("at", UTCDateTime()),
)
_assignments = sa.table(
    "device_assignments",
    sa.column("id", sa.String()),
    sa.column("device_id", sa.String()),
    sa.column("customer_id", sa.String()),
    sa.column("provider_id", sa.String()),
    sa.column("started_at", UTCDateTime()),
    sa.column("ended_at", UTCDateTime()),
    sa.column("history_from", UTCDateTime()),
)


def upgrade() -> None:
    if rls.is_postgres():
        rls.act_as_system()  # the policies of 0012 still stand until replaced below
        rls.ensure_roles()
    op.create_table(
        "device_assignments",
        sa.Column("id", ID, primary_key=True),
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("history_from", UTCDateTime()),
    )
    op.create_index(
        "ix_device_assignments_device_id_started_at",
        "device_assignments",
        ["device_id", "started_at"],
    )
    op.create_index(
        "uq_device_assignments_open",
        "device_assignments",
        ["device_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    _backfill_current_assignments()
    if rls.is_postgres():
        rls.grant_tables(*_PROTECTED, *_PROTECTED_THROUGH_DEVICE)
        _replace_policies()


def downgrade() -> None:
    if rls.is_postgres():
        for table in (*_PROTECTED, *_PROTECTED_THROUGH_DEVICE):
            op.execute(f"DROP POLICY IF EXISTS system_access ON {table}")
            op.execute(f"REVOKE ALL ON {table} FROM {rls.SYSTEM_ROLE}")
        op.execute("DROP POLICY IF EXISTS key_lookup ON api_keys")
        for table in _NEWLY_PROTECTED:
            if table != "device_assignments":
                op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
                op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
                op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        _restore_0012_policies()
    op.drop_table("device_assignments")


def _backfill_current_assignments() -> None:
    """One open period for every assigned device, from its last assignment or move recorded
    in the audit log, or else from its creation. A device whose log shows no earlier customer
    is in its first period: its whole history is visible (`history_from` null)."""
    bind = op.get_bind()
    starts: dict[str, list[Any]] = {}  # device id -> times a customer got it
    log = sa.select(_audit.c.object_id, _audit.c.action, _audit.c.changes, _audit.c.at).where(
        _audit.c.object_type == "device",
        _audit.c.action.in_(("device.create", "device.assign", "device.move")),
    )
    for device_id, action, changes, at in bind.execute(log):
        if action != "device.create" or (changes or {}).get("customer_id"):
            starts.setdefault(device_id, []).append(at)
    assigned = sa.select(
        _devices.c.id, _devices.c.customer_id, _devices.c.provider_id, _devices.c.created_at
    ).where(_devices.c.customer_id.is_not(None))
    rows = []
    for device_id, customer_id, provider_id, created_at in bind.execute(assigned):
        times = starts.get(device_id, [])
        started_at = max([created_at, *times])
        rows.append(
            {
                "id": new_id("das"),
                "device_id": device_id,
                "customer_id": customer_id,
                "provider_id": provider_id,
                "started_at": started_at,
                "ended_at": None,
                "history_from": None if len(times) <= 1 else started_at,
            }
        )
    if rows:
        op.bulk_insert(_assignments, rows)


def _replace_policies() -> None:
    for table, arguments in _PROTECTED.items():
        rls.protect(table, **arguments)
    for table, arguments in _PROTECTED_THROUGH_DEVICE.items():
        rls.protect_through_device(table, **arguments)
    rls.protect_key_lookup("api_keys")


_SYSTEM_0012 = "current_setting('app.system', true) = 'on'"
_PROVIDER = "NULLIF(current_setting('app.provider_id', true), '')"
_CUSTOMER = "NULLIF(current_setting('app.customer_id', true), '')"


def _restore_0012_policies() -> None:
    """The policies as 0012 left them: the tenant conditions, or `app.system = on`."""
    conditions = {
        "customers": f"provider_id = {_PROVIDER} AND ({_CUSTOMER} IS NULL OR id = {_CUSTOMER})",
        "devices": f"provider_id = {_PROVIDER}"
        f" AND ({_CUSTOMER} IS NULL OR customer_id = {_CUSTOMER})",
        "audit_log": f"provider_id = {_PROVIDER}"
        f" AND ({_CUSTOMER} IS NULL OR customer_id = {_CUSTOMER})",
        "commands": f"provider_id = {_PROVIDER}"
        f" AND ({_CUSTOMER} IS NULL OR customer_id = {_CUSTOMER})",
        "sensors": f"provider_id = {_PROVIDER}",
        "device_states": "EXISTS (SELECT 1 FROM devices d WHERE d.id = device_states.device_id)",
        "messages": "EXISTS (SELECT 1 FROM devices d WHERE d.seq = messages.device_seq)",
    }
    for table in ("driver_chat_messages", "media_files", "tachograph_files"):
        conditions[table] = f"EXISTS (SELECT 1 FROM devices d WHERE d.id = {table}.device_id)"
    for table, condition in conditions.items():
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING ({_SYSTEM_0012} OR ({condition})) WITH CHECK ({_SYSTEM_0012} OR ({condition}))"
        )
