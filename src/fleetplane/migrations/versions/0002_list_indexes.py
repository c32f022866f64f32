"""Indexes that match the list queries: a customer's devices in id order.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_devices_customer_id", "devices")
    op.create_index("ix_devices_customer_id_id", "devices", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_devices_customer_id_id", "devices")
    op.create_index("ix_devices_customer_id", "devices", ["customer_id"])
