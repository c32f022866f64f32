"""Foundation: providers, customers, API keys, devices, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "customers",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("modules", sa.JSON(), nullable=False),
        sa.Column("plan", sa.String(100)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("contact", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_customers_provider_id", "customers", ["provider_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("secret_hint", sa.String(16), nullable=False),
        sa.Column("provider_permissions", sa.JSON(), nullable=False),
        sa.Column("customer_permissions", sa.JSON(), nullable=False),
        sa.Column("customer_ids", sa.JSON()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_api_keys_provider_id", "api_keys", ["provider_id"])
    op.create_table(
        "devices",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("customer_id", ID, sa.ForeignKey("customers.id", ondelete="SET NULL")),
        sa.Column("unique_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(40)),
        sa.Column("password_hash", sa.String(128)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider_id", "unique_id", name="uq_devices_provider_id_unique_id"),
    )
    op.create_index("ix_devices_customer_id", "devices", ["customer_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("customer_id", ID),
        sa.Column("api_key_id", ID),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("object_type", sa.String(40), nullable=False),
        sa.Column("object_id", ID, nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_audit_log_provider_at", "audit_log", ["provider_id", "at"])
    op.create_index(
        "ix_audit_log_provider_object", "audit_log", ["provider_id", "object_type", "object_id"]
    )

    if rls.is_postgres():
        rls.ensure_app_role()
        rls.grant_tables("providers", "customers", "api_keys", "devices", "audit_log")
        rls.protect("customers", customer_column="id")
        rls.protect("devices", customer_column="customer_id")
        rls.protect("audit_log", customer_column="customer_id")


def downgrade() -> None:
    for table in ("audit_log", "devices", "api_keys", "customers", "providers"):
        op.drop_table(table)
