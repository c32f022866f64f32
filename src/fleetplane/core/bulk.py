"""Batches of rows written in one statement, handed to the driver as they are.

SQLAlchemy's per-row parameter handling (execution context, type processing row by row, cache
keys) costs more than the database's own work for a batch of thousands of small rows. Here each
column's values are encoded once, column by column, with the column type's own bind
processing, and the batch goes to the driver in one call: SQLite gets `executemany` with one
tuple per row, PostgreSQL one array per column, unnested into a single `INSERT ... SELECT`.
The rows are dicts keyed by column name; every column of the table is written. Updates of
many rows by a key go the same way (`update_rows`).
"""

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BindParameter, Column, DateTime, Table, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetplane.core.db import UTCDateTime, sqlite_utc_text

Encoder = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    names: tuple[str, ...]
    encoders: tuple[Encoder | None, ...]
    one_array_per_column: bool
    times: frozenset[str]  # rows of a batch often share a time (a packet's receive time)

    def parameters(self, rows: Sequence[dict[str, Any]]) -> Any:
        columns = [
            _encoded([row[name] for row in rows], encoder, name in self.times)
            for name, encoder in zip(self.names, self.encoders, strict=True)
        ]
        if self.one_array_per_column:
            return tuple(columns)  # one execution, one parameter per column
        return list(zip(*columns, strict=True))  # executemany, one tuple per row


async def write_rows(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    update_on: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
) -> None:
    """Inserts `rows` into `table` in one statement. A row that conflicts with one stored (or
    an earlier one of the batch) is skipped; with `update_on` (the columns of a unique key),
    the stored row takes the new row's other columns instead, but for those in `keep` (which
    another writer owns: a new row brings them, a stored one keeps its own)."""
    if not rows:
        return
    dialect = connection.dialect
    statements = _STATEMENTS.setdefault(dialect, {})
    key = (table, update_on, keep)
    if key not in statements:
        statements[key] = _statement(dialect, table, update_on, keep)
    statement = statements[key]
    if statement is None:  # a dialect without a bulk form: Core's executemany
        await connection.execute(insert(table), list(rows))
        return
    await connection.exec_driver_sql(statement.sql, statement.parameters(rows))


async def update_rows(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    where: tuple[str, ...],
) -> None:
    """Updates stored rows in one statement: each row (a dict, every row with the same
    columns) sets its other columns on the stored row whose `where` columns equal its own; a
    row that matches none changes nothing."""
    if not rows:
        return
    dialect = connection.dialect
    statements = _STATEMENTS.setdefault(dialect, {})
    names = tuple(rows[0])
    key = ("update", table, names, where)
    if key not in statements:
        statements[key] = _update_statement(dialect, table, names, where)
    statement = statements[key]
    if statement is None:  # a dialect without a bulk form: Core's executemany
        binds: dict[str, BindParameter[Any]] = {n: bindparam(f"new_{n}") for n in names}
        core = update(table).where(*(table.c[name] == binds[name] for name in where))
        core = core.values({name: binds[name] for name in names if name not in where})
        renamed = [{f"new_{name}": value for name, value in row.items()} for row in rows]
        await connection.execute(core, renamed)
        return
    await connection.exec_driver_sql(statement.sql, statement.parameters(rows))


def _update_statement(
    dialect: Dialect, table: Table, names: tuple[str, ...], where: tuple[str, ...]
) -> _Statement | None:
    columns = [table.c[name] for name in (*[n for n in names if n not in where], *where)]
    ordered = tuple(column.name for column in columns)
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    encoders = tuple(_encoder(column, dialect) for column in columns)
    times = frozenset(c.name for c in columns if isinstance(c.type, DateTime | UTCDateTime))
    changed = [name for name in ordered if name not in where]
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        sets = ", ".join(f"{quote(name)} = ?" for name in changed)
        matches = " AND ".join(f"{quote(name)} = ?" for name in where)
        sql = f"UPDATE {target} SET {sets} WHERE {matches}"
        return _Statement(sql, ordered, encoders, one_array_per_column=False, times=times)
    if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
        arrays = ", ".join(
            f"${number}::{_array_type(column, dialect)}"
            for number, column in enumerate(columns, start=1)
        )
        listed = ", ".join(quote(name) for name in ordered)

        def value(column: Column[Any]) -> str:
            cast = f"::{column.type.compile(dialect=dialect)}"
            return f"batch.{quote(column.name)}{cast if isinstance(column.type, JSON) else ''}"

        sets = ", ".join(f"{quote(c.name)} = {value(c)}" for c in columns if c.name in changed)
        matches = " AND ".join(f"{target}.{quote(name)} = batch.{quote(name)}" for name in where)
        sql = (
            f"UPDATE {target} SET {sets} FROM unnest({arrays}) AS batch ({listed}) WHERE {matches}"
        )
        return _Statement(sql, ordered, encoders, one_array_per_column=True, times=times)
    return None


# Per engine dialect (its JSON serializer is part of the encoding), built on first use.
_STATEMENTS: "weakref.WeakKeyDictionary[Dialect, dict[Any, _Statement | None]]" = (
    weakref.WeakKeyDictionary()
)


def _statement(
    dialect: Dialect, table: Table, update_on: tuple[str, ...], keep: tuple[str, ...]
) -> _Statement | None:
    columns = list(table.columns)
    names = tuple(column.name for column in columns)
    quote = dialect.identifier_preparer.quote
    listed = ", ".join(quote(name) for name in names)
    target = dialect.identifier_preparer.format_table(table)
    encoders = tuple(_encoder(column, dialect) for column in columns)
    times = frozenset(c.name for c in columns if isinstance(c.type, DateTime | UTCDateTime))
    conflict = _on_conflict(names, update_on, keep, quote)
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in names)
        sql = f"INSERT INTO {target} ({listed}) VALUES ({marks}) {conflict}"
        return _Statement(sql, names, encoders, one_array_per_column=False, times=times)
    if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
        arrays = ", ".join(
            f"${number}::{_array_type(column, dialect)}"
            for number, column in enumerate(columns, start=1)
        )
        # JSON travels as text (the encoder made it) and is cast back row by row.
        selected = ", ".join(
            f"{quote(column.name)}::{column.type.compile(dialect=dialect)}"
            if isinstance(column.type, JSON)
            else quote(column.name)
            for column in columns
        )
        sql = (
            f"INSERT INTO {target} ({listed}) SELECT {selected}"
            f" FROM unnest({arrays}) AS batch ({listed}) {conflict}"
        )
        return _Statement(sql, names, encoders, one_array_per_column=True, times=times)
    if update_on:
        raise NotImplementedError(f"no bulk upsert for {dialect.name}")
    return None


def _on_conflict(
    names: tuple[str, ...],
    update_on: tuple[str, ...],
    keep: tuple[str, ...],
    quote: Callable[[str], str],
) -> str:
    if not update_on:
        return "ON CONFLICT DO NOTHING"
    keys = ", ".join(quote(name) for name in update_on)
    updates = ", ".join(
        f"{quote(name)} = excluded.{quote(name)}"
        for name in names
        if name not in update_on and name not in keep
    )
    return f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"


def _array_type(column: Column[Any], dialect: Dialect) -> str:
    if isinstance(column.type, JSON):
        return "text[]"
    return f"{column.type.compile(dialect=dialect)}[]"


def _encoded(values: list[Any], encoder: Encoder | None, repeats: bool) -> list[Any]:
    if encoder is None:
        return values
    if repeats:  # each distinct value encoded once
        encoded = {value: encoder(value) for value in set(values)}
        return list(map(encoded.__getitem__, values))
    return list(map(encoder, values))


def _encoder(column: Column[Any], dialect: Dialect) -> Encoder | None:
    """The column type's bind processing, or a faster one proven to give the same values."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    if dialect.name == "sqlite" and isinstance(column.type, UTCDateTime) and processor:
        probes = (datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(1999, 12, 31, 23, 59))
        if all(sqlite_utc_text(probe) == processor(probe) for probe in probes):
            return sqlite_utc_text
    return processor
