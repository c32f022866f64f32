"""Room for a device password's scrypt hash (salt and digest in hex: 168 characters).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "password_hash", type_=sa.String(255), existing_type=sa.String(128), nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "password_hash", type_=sa.String(128), existing_type=sa.String(255), nullable=True
        )
