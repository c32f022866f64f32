"""Alembic environment: migrations run on the connection `fleetplane.core.db.migrate` hands in.

The metadata must hold every table: autogenerate would drop one it lacks. So every domain's
`models.py` is imported, found by its place in the package: a new domain needs no line here."""

import importlib
from pathlib import Path

from alembic import context

import fleetplane
from fleetplane.core.db import Base

for models_file in sorted(Path(fleetplane.__file__).parent.glob("*/models.py")):
    importlib.import_module(f"fleetplane.{models_file.parent.name}.models")

# Tables the migrations keep with no model: on SQLite, the counter behind `devices.seq`.
TABLES_WITHOUT_MODEL = {"device_seq_counter"}


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """What autogenerate compares: everything but the tables without a model."""
    return not (type_ == "table" and name in TABLES_WITHOUT_MODEL)


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_name=include_name,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
