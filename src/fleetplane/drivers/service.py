"""Driver rules: drivers and their key codes, a customer's own; assignments of drivers to
devices, made by the device's key reader (the pipeline step, `drivers.processor`) or by hand,
kept by the rules of `drivers.timeline`; who drove a device at given times (`drivers_at`)."""

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from fastapi import Response
from sqlalchemy import (
    Row,
    Select,
    and_,
    bindparam,
    insert,
    or_,
    select,
    tuple_,
)
from sqlalchemy import delete as delete_rows
from sqlalchemy import update as update_rows
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks, lock_writers, values_by_key
from fleetplane.core.errors import ApiError, not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.pagination import PageParams, encode_cursor, fetch_page, json_response
from fleetplane.core.timeutil import checked_utc, utcnow
from fleetplane.devices import service as devices
from fleetplane.drivers.models import Driver, DriverAssignment, DriverKeyCode
from fleetplane.drivers.schemas import (
    AssignmentCreate,
    AssignmentUpdate,
    DriverCreate,
    DriverUpdate,
)
from fleetplane.drivers.timeline import (
    DeviceTimeline,
    NoReading,
    Source,
    Span,
    key_end,
    key_reading,
    manual_end,
    match_key,
)
from fleetplane.sensors.calculation import SensorDefinition
from fleetplane.telemetry import Message

# The kinds of change notice (core.changes) of this domain: a driver (its details or key
# codes), and a device's driver assignments (made by hand or by its key reader).
DRIVER_CHANGE = "driver"
ASSIGNMENT_CHANGE = "driver_assignment"
# Ids per `IN (...)` list.
_REQUIRED_FIELDS = ("name", "key_codes", "custom_fields")


class DriverAt(NamedTuple):
    driver_id: str
    driver_name: str


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------

_DRIVER_COLUMNS = tuple(Driver.__table__.c)


def list_query(
    provider_id: str,
    customer_id: str,
    *,
    name: str | None = None,
    key_code: str | None = None,
    license_expires_before: date | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's drivers (their columns), optionally those whose name contains `name`
    (any case), who have `key_code`, or whose licence expires before a day."""
    statement = select(*_DRIVER_COLUMNS).where(
        Driver.provider_id == provider_id, Driver.customer_id == customer_id
    )
    if name:
        statement = statement.where(Driver.name.icontains(name, autoescape=True))
    if key_code is not None:
        holder = select(DriverKeyCode.driver_id).where(
            DriverKeyCode.customer_id == customer_id,
            DriverKeyCode.match_key == match_key(key_code),
        )
        statement = statement.where(Driver.id.in_(holder.scalar_subquery()))
    if license_expires_before is not None:
        statement = statement.where(Driver.license_expires < license_expires_before)
    return statement


async def page_of_drivers(
    session: AsyncSession, statement: Select[*tuple[Any, ...]], page: PageParams
) -> Response:
    rows, next_cursor = await fetch_page(session, statement, Driver.id, page)
    items = await shape_drivers(session, rows)
    return json_response({"items": items, "next_cursor": next_cursor})


async def get(session: AsyncSession, provider_id: str, customer_id: str, driver_id: str) -> Driver:
    driver = None
    if looks_like_id(driver_id):
        statement = select(Driver).where(
            Driver.provider_id == provider_id,
            Driver.customer_id == customer_id,
            Driver.id == driver_id,
        )
        driver = (await session.execute(statement)).scalar_one_or_none()
    if driver is None:
        raise not_found("driver")
    return driver


async def shape_drivers(
    session: AsyncSession, drivers: Sequence[Row[*tuple[Any, ...]] | Driver]
) -> list[dict[str, Any]]:
    """Drivers as the API shows them (`DriverOut`), with their key codes and where each is
    now: two queries for any number of drivers."""
    ids = [driver.id for driver in drivers]
    codes = await _key_codes_of(session, ids)
    current = await _current_assignments(session, ids)
    return [
        {
            "id": driver.id,
            "name": driver.name,
            "key_codes": codes.get(driver.id, []),
            "phone": driver.phone,
            "email": driver.email,
            "license_number": driver.license_number,
            "license_expires": driver.license_expires,
            "notes": driver.notes,
            "custom_fields": driver.custom_fields or {},
            "current_assignment": current.get(driver.id),
            "created_at": driver.created_at,
            "updated_at": driver.updated_at,
        }
        for driver in drivers
    ]


async def _key_codes_of(session: AsyncSession, driver_ids: list[str]) -> dict[str, list[str]]:
    return await values_by_key(
        session, DriverKeyCode.driver_id, DriverKeyCode.code, driver_ids, DriverKeyCode.position
    )


async def _current_assignments(
    session: AsyncSession, driver_ids: list[str]
) -> dict[str, dict[str, Any]]:
    now = utcnow()
    found: dict[str, dict[str, Any]] = {}
    for chunk in id_chunks(driver_ids):
        statement = (
            select(
                DriverAssignment.driver_id,
                DriverAssignment.id,
                DriverAssignment.device_id,
                DriverAssignment.started_at,
                DriverAssignment.ended_at,
                DriverAssignment.source,
            )
            .where(
                DriverAssignment.driver_id.in_(chunk),
                DriverAssignment.started_at <= now,
                or_(DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > now),
            )
            .order_by(DriverAssignment.started_at)
        )
        for row in await session.execute(statement):  # the latest start wins
            found[row.driver_id] = {
                "id": row.id,
                "device_id": row.device_id,
                "start": row.started_at,
                "end": row.ended_at,
                "source": row.source,
            }
    return found


async def create(
    session: AsyncSession, actor: Actor, customer_id: str, data: DriverCreate
) -> Driver:
    values = data.model_dump(exclude={"key_codes"})
    await _check_key_codes(session, customer_id, None, data.key_codes)
    driver = Driver(
        id=new_id("drv"), provider_id=actor.provider_id, customer_id=customer_id, **values
    )
    session.add(driver)
    await session.flush()
    await _write_key_codes(session, driver, data.key_codes)
    changes = data.model_dump(mode="json")
    await audit.record(session, actor, "driver.create", "driver", driver.id, changes, customer_id)
    _note_driver(session, driver)
    return driver


async def update(
    session: AsyncSession, actor: Actor, customer_id: str, driver_id: str, data: DriverUpdate
) -> Driver:
    driver = await get(session, actor.provider_id, customer_id, driver_id)
    changes = data.model_dump(exclude_unset=True)
    for field in _REQUIRED_FIELDS:
        if field in changes and changes[field] is None:
            raise validation_error(["body", field], "may not be null")
    codes = changes.pop("key_codes", None)
    if codes is not None:
        await _check_key_codes(session, customer_id, driver.id, codes)
        await session.execute(
            delete_rows(DriverKeyCode).where(DriverKeyCode.driver_id == driver.id)
        )
        await _write_key_codes(session, driver, codes)
    for field, value in changes.items():
        setattr(driver, field, value)
    driver.updated_at = utcnow()
    await session.flush()
    logged = data.model_dump(mode="json", exclude_unset=True)
    await audit.record(session, actor, "driver.update", "driver", driver.id, logged, customer_id)
    _note_driver(session, driver)
    return driver


async def delete(session: AsyncSession, actor: Actor, customer_id: str, driver_id: str) -> None:
    """Deletes the driver with their key codes and assignments; the device's other
    assignments keep their times."""
    driver = await get(session, actor.provider_id, customer_id, driver_id)
    devices_driven = select(DriverAssignment.device_id).where(
        DriverAssignment.driver_id == driver.id
    )
    device_ids = list((await session.execute(devices_driven.distinct())).scalars())
    await session.delete(driver)
    await session.flush()
    details = {"name": driver.name}
    await audit.record(session, actor, "driver.delete", "driver", driver.id, details, customer_id)
    _note_driver(session, driver)
    if device_ids:
        _note_assignments(session, actor.provider_id, customer_id, device_ids)


async def _check_key_codes(
    session: AsyncSession, customer_id: str, driver_id: str | None, codes: Sequence[str]
) -> None:
    """Each code once in the list and on no other driver of the customer (409, naming it)."""
    keys = [match_key(code) for code in codes]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            message = f"repeats key code {codes[index]!r}"
            raise validation_error(["body", "key_codes", index], message)
    if not keys:
        return
    statement = (
        select(DriverKeyCode.match_key, DriverKeyCode.driver_id, Driver.name)
        .join(Driver, Driver.id == DriverKeyCode.driver_id)
        .where(DriverKeyCode.customer_id == customer_id, DriverKeyCode.match_key.in_(keys))
    )
    for row in await session.execute(statement):
        if row.driver_id != driver_id:
            index = keys.index(row.match_key)
            raise _key_code_taken(codes[index], index, f"driver {row.name!r} ({row.driver_id})")


def _key_code_taken(code: str, index: int, holder: str) -> ApiError:
    detail = f"Key code {code!r} is already a key code of {holder}."
    return ApiError(
        409, "conflict", detail, errors=[{"loc": ["body", "key_codes", index], "msg": detail}]
    )


async def _write_key_codes(session: AsyncSession, driver: Driver, codes: Sequence[str]) -> None:
    if not codes:
        return
    rows = [
        {
            "customer_id": driver.customer_id,
            "match_key": match_key(code),
            "provider_id": driver.provider_id,
            "driver_id": driver.id,
            "code": code,
            "position": position,
        }
        for position, code in enumerate(codes)
    ]
    try:
        await session.execute(insert(DriverKeyCode), rows)
    except IntegrityError:  # another driver took one of them at the same moment
        raise _key_code_taken(", ".join(codes), 0, "another driver") from None


def _note_driver(session: AsyncSession, driver: Driver) -> None:
    note(session, Change(DRIVER_CHANGE, (driver.id,), driver.provider_id, (driver.customer_id,)))


def _note_assignments(
    session: AsyncSession, provider_id: str, customer_id: str | None, device_ids: Iterable[str]
) -> None:
    ids = tuple(dict.fromkeys(device_ids))
    customers = None if customer_id is None else (customer_id,)
    note(session, Change(ASSIGNMENT_CHANGE, ids, provider_id, customers, device_ids=ids))


# --------------------------------------------------------------------------------------------
# Assignments, as the API shows them
# --------------------------------------------------------------------------------------------

# Zero-length assignments (a key reading at the very moment a manual assignment starts) are
# kept, as the state of the key reading, but never shown.
_VISIBLE = or_(
    DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > DriverAssignment.started_at
)


def assignments_query(
    provider_id: str,
    customer_id: str,
    *,
    driver_id: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's assignments, those of a driver or a device, those overlapping
    [`since`, `until`)."""
    statement = (
        select(
            DriverAssignment.id,
            DriverAssignment.driver_id,
            Driver.name.label("driver_name"),
            DriverAssignment.device_id,
            DriverAssignment.started_at,
            DriverAssignment.ended_at,
            DriverAssignment.source,
            DriverAssignment.created_at,
        )
        .join(Driver, Driver.id == DriverAssignment.driver_id)
        .where(
            DriverAssignment.provider_id == provider_id,
            DriverAssignment.customer_id == customer_id,
            _VISIBLE,
        )
    )
    if driver_id is not None:
        statement = statement.where(DriverAssignment.driver_id == driver_id)
    if device_id is not None:
        statement = statement.where(DriverAssignment.device_id == device_id)
    if until is not None:
        statement = statement.where(DriverAssignment.started_at < until)
    if since is not None:
        statement = statement.where(
            or_(DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > since)
        )
    return statement


def shape_assignment(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """An assignment as the API shows it (`AssignmentOut`), from a row of `assignments_query`."""
    return {
        "id": row.id,
        "driver_id": row.driver_id,
        "driver_name": row.driver_name,
        "device_id": row.device_id,
        "start": row.started_at,
        "end": row.ended_at,
        "source": row.source,
        "created_at": row.created_at,
    }


async def page_of_assignments(
    session: AsyncSession, statement: Select[*tuple[Any, ...]], page: PageParams
) -> Response:
    """One page in start order (then id); the cursor is the last (start, id)."""
    if page.after is not None:
        after = _assignment_cursor(page.after)
        statement = statement.where(
            tuple_(DriverAssignment.started_at, DriverAssignment.id) > tuple_(*after)
        )
    ordered = statement.order_by(DriverAssignment.started_at, DriverAssignment.id)
    rows = list((await session.execute(ordered.limit(page.limit + 1))).all())
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        last = rows[-1]
        next_cursor = encode_cursor(f"{last.started_at.isoformat()}|{last.id}")
    return json_response(
        {"items": [shape_assignment(row) for row in rows], "next_cursor": next_cursor}
    )


def _assignment_cursor(after: str) -> tuple[datetime, str]:
    time_text, _, assignment_id = after.partition("|")
    try:
        return checked_utc(datetime.fromisoformat(time_text)), assignment_id
    except ValueError:
        raise validation_error(
            ["query", "cursor"], "Invalid cursor; use a next_cursor you got."
        ) from None


async def get_assignment(
    session: AsyncSession, provider_id: str, customer_id: str, assignment_id: str
) -> dict[str, Any]:
    row = None
    if looks_like_id(assignment_id):
        statement = assignments_query(provider_id, customer_id).where(
            DriverAssignment.id == assignment_id
        )
        row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise not_found("assignment")
    return shape_assignment(row)


async def check_filters(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    driver_id: str | None,
    device_id: str | None,
) -> None:
    """A driver or device named in a filter is the customer's, or the answer is 404."""
    if driver_id is not None:
        await get(session, provider_id, customer_id, driver_id)
    if device_id is not None:
        await devices.get_for_customer(session, provider_id, customer_id, device_id)


# --------------------------------------------------------------------------------------------
# Manual assignments
# --------------------------------------------------------------------------------------------


async def create_assignment(
    session: AsyncSession, actor: Actor, customer_id: str, data: AssignmentCreate
) -> str:
    """A manual assignment; ends the assignment in effect at its start. One that would
    overlap a later assignment of the device is refused (409). Returns its id."""
    driver = await get(session, actor.provider_id, customer_id, data.driver_id)
    device = await devices.get_for_customer(session, actor.provider_id, customer_id, data.device_id)
    start, end = data.start, data.end
    spans = await _spans_from(session, customer_id, device.id, start)
    for span in spans:
        if span.start >= start and (end is None or span.start < end):
            raise _overlaps(span)
    for span in spans:
        if span.start < start:  # in effect at the start: ended there
            if span.source is Source.MANUAL:
                span.own_end = start
            span.end_at(start)
    await _write_back(session, [span for span in spans if span.changed])
    assignment = DriverAssignment(
        id=new_id("dra"),
        provider_id=actor.provider_id,
        customer_id=customer_id,
        driver_id=driver.id,
        device_id=device.id,
        source=Source.MANUAL.value,
        started_at=start,
        ended_at=end,
        own_end=end,
    )
    session.add(assignment)
    await _flush_current(session)
    details = data.model_dump(mode="json")
    await audit.record(
        session, actor, "driver_assignment.create", "driver_assignment", assignment.id,
        details, customer_id,
    )  # fmt: skip
    _note_assignments(session, actor.provider_id, customer_id, [device.id])
    return assignment.id


async def update_assignment(
    session: AsyncSession,
    actor: Actor,
    customer_id: str,
    assignment_id: str,
    data: AssignmentUpdate,
) -> None:
    """A manual assignment's new end (null: open again), kept clear of later manual ones."""
    assignment = await _manual_assignment(session, actor.provider_id, customer_id, assignment_id)
    if "end" not in data.model_fields_set:
        return
    end = data.end
    if end is not None and end <= assignment.started_at:
        raise validation_error(["body", "end"], "must be after start")
    timeline = (customer_id, assignment.device_id)
    later = await _first_start_after(
        session, timeline, Source.MANUAL, assignment.started_at, inclusive=False
    )
    if later is not None and (end is None or end > later.start):
        raise _overlaps(later)
    first_key = await _first_start_after(
        session, timeline, Source.KEY, assignment.started_at, inclusive=False
    )
    assignment.own_end = end
    key_starts = [] if first_key is None else [first_key.start]
    assignment.ended_at = manual_end(end, assignment.started_at, key_starts)
    await _flush_current(session)
    details = data.model_dump(mode="json")
    await audit.record(
        session, actor, "driver_assignment.update", "driver_assignment", assignment.id,
        details, customer_id,
    )  # fmt: skip
    _note_assignments(session, actor.provider_id, customer_id, [assignment.device_id])


async def delete_assignment(
    session: AsyncSession, actor: Actor, customer_id: str, assignment_id: str
) -> None:
    """Deletes a manual assignment; a key assignment it had ended goes on as if it had never
    been (it ends by its own reading, or at the next manual start)."""
    assignment = await _manual_assignment(session, actor.provider_id, customer_id, assignment_id)
    device_id, start = assignment.device_id, assignment.started_at
    await session.delete(assignment)
    await session.flush()
    cut = select(*_SPAN_COLUMNS).where(
        DriverAssignment.customer_id == customer_id,
        DriverAssignment.device_id == device_id,
        DriverAssignment.source == Source.KEY.value,
        DriverAssignment.started_at <= start,
        DriverAssignment.ended_at == start,
    )
    restored = []
    for row in await session.execute(cut):
        span = _span(row)
        later = await _first_start_after(
            session, (customer_id, device_id), Source.MANUAL, span.start
        )
        span.end = key_end(span.own_end, span.start, [] if later is None else [later.start])
        span.changed = True
        restored.append(span)
    await _write_back(session, restored)
    await _flush_current(session)
    details = {"device_id": device_id, "driver_id": assignment.driver_id}
    await audit.record(
        session, actor, "driver_assignment.delete", "driver_assignment", assignment.id,
        details, customer_id,
    )  # fmt: skip
    _note_assignments(session, actor.provider_id, customer_id, [device_id])


async def _manual_assignment(
    session: AsyncSession, provider_id: str, customer_id: str, assignment_id: str
) -> DriverAssignment:
    assignment = None
    if looks_like_id(assignment_id):
        statement = select(DriverAssignment).where(
            DriverAssignment.provider_id == provider_id,
            DriverAssignment.customer_id == customer_id,
            DriverAssignment.id == assignment_id,
            _VISIBLE,
        )
        assignment = (await session.execute(statement)).scalar_one_or_none()
    if assignment is None:
        raise not_found("assignment")
    await _lock_timeline(session, customer_id, assignment.device_id)
    if assignment.source != Source.MANUAL.value:
        raise ApiError(
            409,
            "conflict",
            "A key assignment follows the device's key readings: it cannot be changed or "
            "deleted. A manual assignment from a later time ends it.",
        )
    return assignment


def _overlaps(span: Span) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"The device has a {span.source.value} assignment from {span.start.isoformat()} "
        f"({span.id}) that this one would overlap; give an end before it.",
    )


async def _flush_current(session: AsyncSession) -> None:
    """Flushes; two current assignments of one device made at the same moment (a request and
    the device's key reader) give a clean 409."""
    try:
        await session.flush()
    except IntegrityError as error:
        raise ApiError(
            409, "conflict", "The device's assignments changed meanwhile; try again."
        ) from error


# --------------------------------------------------------------------------------------------
# A device's timeline, as the rules of `drivers.timeline` see it
# --------------------------------------------------------------------------------------------

_SPAN_COLUMNS = (
    DriverAssignment.id,
    DriverAssignment.device_id,
    DriverAssignment.driver_id,
    DriverAssignment.customer_id,
    DriverAssignment.source,
    DriverAssignment.started_at,
    DriverAssignment.ended_at,
    DriverAssignment.own_end,
)


def _span(row: Row[*tuple[Any, ...]]) -> Span:
    return Span(
        row.id,
        row.driver_id,
        row.customer_id,
        Source(row.source),
        row.started_at,
        row.ended_at,
        row.own_end,
    )


def _locked(session: AsyncSession, statement: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update()
    return statement


async def _lock_timeline(session: AsyncSession, customer_id: str, device_id: str) -> None:
    """Changes to one device's assignments go one at a time (SQLite: the writer lock now)."""
    current = select(DriverAssignment.id).where(
        DriverAssignment.customer_id == customer_id,
        DriverAssignment.device_id == device_id,
        DriverAssignment.ended_at.is_(None),
    )
    await lock_writers(session, current)


async def _spans_from(
    session: AsyncSession, customer_id: str, device_id: str, start: datetime
) -> list[Span]:
    """The customer's assignments of the device in effect at or after `start`, locked."""
    await _lock_timeline(session, customer_id, device_id)
    statement = select(*_SPAN_COLUMNS).where(
        DriverAssignment.customer_id == customer_id,
        DriverAssignment.device_id == device_id,
        or_(DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > start),
    )
    rows = await session.execute(_locked(session, statement.order_by(DriverAssignment.started_at)))
    return [_span(row) for row in rows]


async def _first_start_after(
    session: AsyncSession,
    timeline: tuple[str, str],
    source: Source,
    at: datetime,
    *,
    inclusive: bool = True,
) -> Span | None:
    """The first assignment of `source` of a (customer, device) starting at (or after) `at`."""
    later = DriverAssignment.started_at >= at if inclusive else DriverAssignment.started_at > at
    customer_id, device_id = timeline
    statement = (
        select(*_SPAN_COLUMNS)
        .where(
            DriverAssignment.customer_id == customer_id,
            DriverAssignment.device_id == device_id,
            DriverAssignment.source == source.value,
            later,
        )
        .order_by(DriverAssignment.started_at)
        .limit(1)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else _span(row)


async def _write_back(session: AsyncSession, spans: Sequence[Span]) -> None:
    """The new ends of stored assignments, in one statement."""
    if not spans:
        return
    table = DriverAssignment.__table__
    statement = (
        update_rows(table)
        .where(table.c.id == bindparam("span_id"))
        .values(ended_at=bindparam("new_end"), own_end=bindparam("new_own_end"))
    )
    rows = [{"span_id": s.id, "new_end": s.end, "new_own_end": s.own_end} for s in spans]
    connection = await session.connection()
    await connection.execute(statement, rows)


async def timelines_of(
    session: AsyncSession,
    first_times: Mapping[str, datetime],
    customers: Mapping[str, str | None],
) -> dict[str, DeviceTimeline]:
    """For the pipeline step: each device's timeline from its first new reading on: its
    ongoing key assignment (of whichever customer), and the manual ones of its customer
    (`customers`) ending after that time; locked, one query."""
    found: dict[str, DeviceTimeline] = {
        device_id: DeviceTimeline(device_id, None, []) for device_id in first_times
    }
    if not first_times:
        return found
    earliest = min(first_times.values())
    current_key = and_(
        DriverAssignment.source == Source.KEY.value, DriverAssignment.own_end.is_(None)
    )
    relevant_manual = and_(
        DriverAssignment.source == Source.MANUAL.value,
        or_(DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > earliest),
    )
    currents: dict[str, Span] = {}
    manuals: dict[str, list[Span]] = {}
    for chunk in id_chunks(list(first_times)):
        statement = (
            select(*_SPAN_COLUMNS)
            .where(DriverAssignment.device_id.in_(chunk), or_(current_key, relevant_manual))
            .order_by(DriverAssignment.device_id, DriverAssignment.started_at)
        )
        for row in await session.execute(_locked(session, statement)):
            span = _span(row)
            if span.source is Source.KEY:
                currents[row.device_id] = span
            elif span.customer_id == customers.get(row.device_id) and (
                span.end is None or span.end > first_times[row.device_id]
            ):
                manuals.setdefault(row.device_id, []).append(span)
    return {
        device_id: DeviceTimeline(device_id, currents.get(device_id), manuals.get(device_id, []))
        for device_id in first_times
    }


def reader_key(message: Message, sensor: SensorDefinition | None) -> tuple[bool, str | None]:
    """A message's key reader as the key assignments read it (`timeline.key_reading`): (the
    message reads it at all, the key's match key or None when the reader is empty)."""
    reading = key_reading(message, sensor)
    if isinstance(reading, NoReading):
        return False, None
    return True, reading


async def drivers_by_code(
    session: AsyncSession, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(customer id, match key) -> (driver id, customer id) for the codes that are a key code
    of one of the customer's drivers; one query."""
    pairs = set(wanted)
    if not pairs:
        return {}
    customer_ids = sorted({customer for customer, _ in pairs})
    keys = sorted({key for _, key in pairs})
    statement = select(
        DriverKeyCode.customer_id, DriverKeyCode.match_key, DriverKeyCode.driver_id
    ).where(DriverKeyCode.customer_id.in_(customer_ids), DriverKeyCode.match_key.in_(keys))
    return {
        (row.customer_id, row.match_key): (row.driver_id, row.customer_id)
        for row in await session.execute(statement)
    }


async def save_timelines(
    session: AsyncSession, provider_of: Mapping[str, str], timelines: Iterable[DeviceTimeline]
) -> None:
    """What the step changed: stored assignments' new ends (one statement), then the new key
    assignments (one statement)."""
    timelines = list(timelines)
    changed = [span for timeline in timelines for span in timeline.changed()]
    new_rows = [
        {
            "id": span.id,
            "provider_id": provider_of[timeline.device_id],
            "customer_id": span.customer_id,
            "driver_id": span.driver_id,
            "device_id": timeline.device_id,
            "source": span.source.value,
            "started_at": span.start,
            "ended_at": span.end,
            "own_end": span.own_end,
            "created_at": utcnow(),
        }
        for timeline in timelines
        for span in timeline.new
    ]
    await _write_back(session, changed)
    if new_rows:
        await session.execute(insert(DriverAssignment), new_rows)
    touched: dict[tuple[str, str], list[str]] = {}
    for timeline in timelines:
        spans = [*timeline.changed(), *timeline.new]
        for customer in {span.customer_id for span in spans}:
            key = (provider_of[timeline.device_id], customer)
            touched.setdefault(key, []).append(timeline.device_id)
    for (provider_id, customer), device_ids in touched.items():
        _note_assignments(session, provider_id, customer, device_ids)


async def rewind(session: AsyncSession, device_id: str, from_time: datetime) -> None:
    """Late data: undoes what the device's key readings at or after `from_time` did. Key
    assignments starting there are deleted; the one whose reading was going on then goes on
    (its end is the next manual start, if any, until the readings are taken in again); manual
    assignments ended by a deleted one get their own end back."""
    of_device = DriverAssignment.device_id == device_id
    is_key = DriverAssignment.source == Source.KEY.value
    await session.execute(
        delete_rows(DriverAssignment).where(
            of_device, is_key, DriverAssignment.started_at >= from_time
        )
    )
    going_on = select(*_SPAN_COLUMNS).where(
        of_device,
        is_key,
        DriverAssignment.started_at < from_time,
        or_(DriverAssignment.own_end.is_(None), DriverAssignment.own_end >= from_time),
    )
    spans = [_span(row) for row in await session.execute(going_on)]
    for span in spans:
        timeline = (span.customer_id, device_id)
        later = await _first_start_after(session, timeline, Source.MANUAL, span.start)
        span.own_end = None
        span.end = key_end(None, span.start, [] if later is None else [later.start])
    await session.execute(
        update_rows(DriverAssignment)
        .where(
            of_device,
            DriverAssignment.source == Source.MANUAL.value,
            DriverAssignment.ended_at >= from_time,
            or_(
                DriverAssignment.own_end.is_(None),
                DriverAssignment.ended_at < DriverAssignment.own_end,
            ),
        )
        .values(ended_at=DriverAssignment.own_end)
    )
    await _write_back(session, spans)


# --------------------------------------------------------------------------------------------
# Who drove
# --------------------------------------------------------------------------------------------


async def drivers_at(
    session: AsyncSession, customer_id: str, pairs: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], DriverAt]:
    """Who drove each (device, time): the driver assigned to the device at that time, for the
    pairs that had one. One query for a page of pairs: the customer's assignments of those
    devices between the earliest and the latest time."""
    if not pairs:
        return {}
    device_ids = sorted({device_id for device_id, _ in pairs})
    earliest = min(at for _, at in pairs)
    latest = max(at for _, at in pairs)
    by_device: dict[str, list[Row[*tuple[Any, ...]]]] = {}
    for chunk in id_chunks(device_ids):
        statement = (
            select(
                DriverAssignment.device_id,
                DriverAssignment.started_at,
                DriverAssignment.ended_at,
                DriverAssignment.driver_id,
                Driver.name,
            )
            .join(Driver, Driver.id == DriverAssignment.driver_id)
            .where(
                DriverAssignment.customer_id == customer_id,
                DriverAssignment.device_id.in_(chunk),
                DriverAssignment.started_at <= latest,
                or_(DriverAssignment.ended_at.is_(None), DriverAssignment.ended_at > earliest),
                _VISIBLE,
            )
            .order_by(DriverAssignment.device_id, DriverAssignment.started_at)
        )
        for row in await session.execute(statement):
            by_device.setdefault(row.device_id, []).append(row)
    starts = {device_id: [row.started_at for row in rows] for device_id, rows in by_device.items()}
    found: dict[tuple[str, datetime], DriverAt] = {}
    for device_id, at in pairs:
        rows = by_device.get(device_id, [])
        index = bisect_right(starts.get(device_id, []), at) - 1
        if index >= 0 and (rows[index].ended_at is None or at < rows[index].ended_at):
            found[(device_id, at)] = DriverAt(rows[index].driver_id, rows[index].name)
    return found
