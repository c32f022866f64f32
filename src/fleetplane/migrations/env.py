"""Alembic environment: migrations run on the connection `fleetplane.core.db.migrate` hands in."""

from alembic import context

import fleetplane.messages.models
import fleetplane.registry  # noqa: F401  (imports every domain, so every model is known)
from fleetplane.core.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
