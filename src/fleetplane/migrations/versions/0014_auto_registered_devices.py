"""Devices remember whether their channel registered them by itself (#7: a channel adds at
most a set number of them).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not a batch: on SQLite a batch rebuilds the table and would drop the
# trigger that numbers devices.seq.
def upgrade() -> None:
    op.add_column(
        "devices",
        sa.Column("auto_registered", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("devices", "auto_registered")
