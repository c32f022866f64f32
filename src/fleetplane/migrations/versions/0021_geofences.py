"""Geofences: a customer's circles, polygons and corridors, and their groups.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from fleetplane.core.db import UTCDateTime
from fleetplane.migrations import rls

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

ID = sa.String(40)
TABLES = ("geofences", "geofence_groups", "geofence_group_members")


def _owner_columns() -> list[sa.Column[str]]:
    return [
        sa.Column(
            "provider_id", ID, sa.ForeignKey("providers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "customer_id", ID, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "geofences",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000)),
        sa.Column("color", sa.String(7)),
        sa.Column("shape", sa.String(10), nullable=False),
        sa.Column("geometry", sa.JSON(), nullable=False),
        sa.Column("radius_m", sa.Float()),
        sa.Column("width_m", sa.Float()),
        sa.Column("is_address", sa.Boolean(), nullable=False),
        sa.Column("speed_limit", sa.Float()),
        sa.Column("area", sa.LargeBinary(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_geofences_customer_id_id", "geofences", ["customer_id", "id"])
    op.create_table(
        "geofence_groups",
        sa.Column("id", ID, primary_key=True),
        *_owner_columns(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000)),
        sa.Column("color", sa.String(7)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_geofence_groups_customer_id_id", "geofence_groups", ["customer_id", "id"])
    op.create_table(
        "geofence_group_members",
        sa.Column(
            "geofence_id", ID, sa.ForeignKey("geofences.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "group_id", ID, sa.ForeignKey("geofence_groups.id", ondelete="CASCADE"), nullable=False
        ),
        *_owner_columns(),
        sa.PrimaryKeyConstraint("geofence_id", "group_id", name="pk_geofence_group_members"),
    )
    op.create_index("ix_geofence_group_members_group_id", "geofence_group_members", ["group_id"])
    if rls.is_postgres():
        rls.ensure_roles()
        rls.grant_tables(*TABLES)
        for table in TABLES:
            rls.protect(table, "customer_id")


def downgrade() -> None:
    op.drop_table("geofence_group_members")
    op.drop_table("geofence_groups")
    op.drop_table("geofences")
