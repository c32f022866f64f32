"""Geofence rules: a customer's geofences and their groups, the geometry checked and turned
into the area positions are tested against (`geometry.build_area`) when it is written; which
geofences hold a position (`customer_index`, `containing`); import and export as GeoJSON."""

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import shapely
from sqlalchemy import Row, Select, and_, func, insert, or_, select
from sqlalchemy import delete as delete_rows
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks, rows_changed, values_by_key
from fleetplane.core.errors import not_found, validation_error
from fleetplane.core.events import EventHub, publish_each
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.pagination import PageParams, fetch_page
from fleetplane.core.timeutil import utcnow
from fleetplane.geofences.geometry import GeofenceIndex, GeometryError, area_m2, build_area, kind_of
from fleetplane.geofences.models import (
    Geofence,
    GeofenceGroup,
    GeofenceGroupMember,
    GeofenceVisit,
)
from fleetplane.geofences.schemas import (
    MAX_DWELL_S,
    FeatureCollectionIn,
    GeofenceCreate,
    GeofenceUpdate,
    GroupCreate,
    GroupUpdate,
)

# The kinds of change notice (core.changes) of this domain: a geofence (its geometry or
# details), a geofence group.
GEOFENCE_CHANGE = "geofence"
GEOFENCE_GROUP_CHANGE = "geofence_group"
_REQUIRED_FIELDS = ("name", "geometry", "is_address", "group_ids", "dwell_s")
_SHOWN_COLUMNS = tuple(
    column for column in Geofence.__table__.c if column.name not in ("area", "provider_id")
)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def checked_area(
    geometry: dict[str, Any],
    radius_m: float | None,
    width_m: float | None,
    loc: Sequence[str | int] = ("body",),
) -> tuple[str, shapely.Geometry]:
    """The shape and area of a geometry, or a 422 naming the field: `geometry` and the part
    of it, or `radius_m` / `width_m` beside it (`loc` is where the geofence's fields are)."""
    try:
        return kind_of(geometry["type"]), build_area(geometry, radius_m, width_m)
    except GeometryError as error:
        field = [] if error.loc[0] in ("radius_m", "width_m") else ["geometry"]
        raise validation_error([*loc, *field, *error.loc], error.msg) from None


def _geometry_values(
    geometry: dict[str, Any],
    radius_m: float | None,
    width_m: float | None,
    loc: Sequence[str | int],
) -> dict[str, Any]:
    shape, area = checked_area(geometry, radius_m, width_m, loc)
    return {
        "shape": shape,
        "geometry": {"type": geometry["type"], "coordinates": geometry["coordinates"]},
        "radius_m": radius_m,
        "width_m": width_m,
        "area": shapely.to_wkb(area),
        "area_m2": area_m2(area),
    }


# --------------------------------------------------------------------------------------------
# Geofences
# --------------------------------------------------------------------------------------------


def list_query(
    provider_id: str,
    customer_id: str,
    *,
    name: str | None = None,
    group_id: str | None = None,
    shape: str | None = None,
    is_address: bool | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's geofences (the columns shown), optionally those whose name contains
    `name` (any case), in a group, of a shape, or (not) used as addresses."""
    statement = select(*_SHOWN_COLUMNS).where(
        Geofence.provider_id == provider_id, Geofence.customer_id == customer_id
    )
    if name:
        statement = statement.where(Geofence.name.icontains(name, autoescape=True))
    if group_id is not None:
        members = select(GeofenceGroupMember.geofence_id).where(
            GeofenceGroupMember.customer_id == customer_id,
            GeofenceGroupMember.group_id == group_id,
        )
        statement = statement.where(Geofence.id.in_(members.scalar_subquery()))
    if shape is not None:
        statement = statement.where(Geofence.shape == shape)
    if is_address is not None:
        statement = statement.where(Geofence.is_address == is_address)
    return statement


async def page_of_geofences(
    session: AsyncSession, statement: Select[*tuple[Any, ...]], page: PageParams
) -> dict[str, Any]:
    rows, next_cursor = await fetch_page(session, statement, Geofence.id, page)
    return {"items": await shape_geofences(session, rows), "next_cursor": next_cursor}


async def get(
    session: AsyncSession, provider_id: str, customer_id: str, geofence_id: str
) -> Geofence:
    geofence = None
    if looks_like_id(geofence_id):
        statement = select(Geofence).where(
            Geofence.provider_id == provider_id,
            Geofence.customer_id == customer_id,
            Geofence.id == geofence_id,
        )
        geofence = (await session.execute(statement)).scalar_one_or_none()
    if geofence is None:
        raise not_found("geofence")
    return geofence


async def shape_geofences(
    session: AsyncSession, geofences: Sequence[Row[*tuple[Any, ...]] | Geofence]
) -> list[dict[str, Any]]:
    """Geofences as the API shows them (`GeofenceOut`), with their groups: one query."""
    groups = await _group_ids_of(session, [geofence.id for geofence in geofences])
    return [
        {
            "id": geofence.id,
            "name": geofence.name,
            "description": geofence.description,
            "shape": geofence.shape,
            "geometry": geofence.geometry,
            "radius_m": geofence.radius_m,
            "width_m": geofence.width_m,
            "color": geofence.color,
            "group_ids": groups.get(geofence.id, []),
            "is_address": geofence.is_address,
            "speed_limit": geofence.speed_limit,
            "dwell_s": geofence.dwell_s,
            "area_m2": geofence.area_m2,
            "created_at": geofence.created_at,
            "updated_at": geofence.updated_at,
        }
        for geofence in geofences
    ]


async def _group_ids_of(session: AsyncSession, geofence_ids: list[str]) -> dict[str, list[str]]:
    member = GeofenceGroupMember
    return await values_by_key(
        session, member.geofence_id, member.group_id, geofence_ids, member.group_id
    )


async def create(
    session: AsyncSession, actor: Actor, customer_id: str, data: GeofenceCreate
) -> Geofence:
    geometry = data.geometry.model_dump(exclude={"bbox"})
    values = _geometry_values(geometry, data.radius_m, data.width_m, ("body",))
    await _check_groups(session, actor.provider_id, customer_id, data.group_ids)
    geofence = Geofence(
        id=new_id("geo"),
        provider_id=actor.provider_id,
        customer_id=customer_id,
        name=data.name,
        description=data.description,
        color=data.color,
        is_address=data.is_address,
        speed_limit=data.speed_limit,
        dwell_s=data.dwell_s,
        **values,
    )
    session.add(geofence)
    await session.flush()
    await _write_members(session, geofence, data.group_ids)
    changes = data.model_dump(mode="json", exclude={"geometry"}) | {"shape": geofence.shape}
    await audit.record(
        session, actor, "geofence.create", "geofence", geofence.id, changes, customer_id
    )
    _note_geofences(session, actor.provider_id, customer_id, [geofence.id])
    return geofence


async def update(
    session: AsyncSession,
    actor: Actor,
    customer_id: str,
    geofence_id: str,
    data: GeofenceUpdate,
) -> Geofence:
    geofence = await get(session, actor.provider_id, customer_id, geofence_id)
    changes = data.model_dump(exclude_unset=True, exclude={"geometry"})
    for field in _REQUIRED_FIELDS:
        if field in data.model_fields_set and getattr(data, field) is None:
            raise validation_error(["body", field], "may not be null")
    group_ids = changes.pop("group_ids", None)
    if {"geometry", "radius_m", "width_m"} & data.model_fields_set:
        geometry = (
            data.geometry.model_dump(exclude={"bbox"})
            if data.geometry is not None
            else geofence.geometry
        )
        shape = kind_of(geometry["type"])
        radius = _kept(data, "radius_m", geofence.radius_m if shape == "circle" else None)
        width = _kept(data, "width_m", geofence.width_m if shape == "corridor" else None)
        changes.pop("radius_m", None)
        changes.pop("width_m", None)
        for field, value in _geometry_values(geometry, radius, width, ("body",)).items():
            setattr(geofence, field, value)
    if group_ids is not None:
        await _check_groups(session, actor.provider_id, customer_id, group_ids)
        await session.execute(
            delete_rows(GeofenceGroupMember).where(GeofenceGroupMember.geofence_id == geofence.id)
        )
        await _write_members(session, geofence, group_ids)
    for field, value in changes.items():
        setattr(geofence, field, value)
    geofence.updated_at = utcnow()
    await session.flush()
    logged = data.model_dump(mode="json", exclude_unset=True, exclude={"geometry"})
    if data.geometry is not None:
        logged["shape"] = geofence.shape
    await audit.record(
        session, actor, "geofence.update", "geofence", geofence.id, logged, customer_id
    )
    _note_geofences(session, actor.provider_id, customer_id, [geofence.id])
    return geofence


def _kept(data: GeofenceUpdate, field: str, stored: float | None) -> float | None:
    value: float | None = getattr(data, field) if field in data.model_fields_set else stored
    return value


async def delete(session: AsyncSession, actor: Actor, customer_id: str, geofence_id: str) -> None:
    geofence = await get(session, actor.provider_id, customer_id, geofence_id)
    await session.delete(geofence)
    await session.flush()
    details = {"name": geofence.name}
    await audit.record(
        session, actor, "geofence.delete", "geofence", geofence.id, details, customer_id
    )
    _note_geofences(session, actor.provider_id, customer_id, [geofence.id])


async def _check_groups(
    session: AsyncSession, provider_id: str, customer_id: str, group_ids: Sequence[str]
) -> None:
    """Each group once, and each one of the customer's (422 naming the one that is not)."""
    for index, group_id in enumerate(group_ids):
        if group_id in group_ids[:index]:
            raise validation_error(["body", "group_ids", index], f"repeats group {group_id!r}")
    if not group_ids:
        return
    statement = select(GeofenceGroup.id).where(
        GeofenceGroup.provider_id == provider_id,
        GeofenceGroup.customer_id == customer_id,
        GeofenceGroup.id.in_([g for g in group_ids if looks_like_id(g)]),
    )
    known = set((await session.execute(statement)).scalars())
    for index, group_id in enumerate(group_ids):
        if group_id not in known:
            raise validation_error(["body", "group_ids", index], f"no such group {group_id!r}")


async def _write_members(
    session: AsyncSession, geofence: Geofence, group_ids: Sequence[str]
) -> None:
    if group_ids:
        rows = [
            {
                "geofence_id": geofence.id,
                "group_id": group_id,
                "provider_id": geofence.provider_id,
                "customer_id": geofence.customer_id,
            }
            for group_id in group_ids
        ]
        await session.execute(insert(GeofenceGroupMember), rows)


def _note_geofences(
    session: AsyncSession, provider_id: str, customer_id: str, ids: Iterable[str]
) -> None:
    note(session, Change(GEOFENCE_CHANGE, tuple(ids), provider_id, (customer_id,)))


# --------------------------------------------------------------------------------------------
# Which geofences hold a position
# --------------------------------------------------------------------------------------------


async def customer_index(
    session: AsyncSession, provider_id: str, customer_id: str
) -> GeofenceIndex:
    """An index of the customer's geofences (ids in id order), from the stored areas: one
    query, no geometry recomputed."""
    statement = (
        select(Geofence.id, Geofence.area)
        .where(Geofence.provider_id == provider_id, Geofence.customer_id == customer_id)
        .order_by(Geofence.id)
    )
    rows = (await session.execute(statement)).all()
    return GeofenceIndex.from_wkb([row.id for row in rows], [row.area for row in rows])


async def containing(
    session: AsyncSession, provider_id: str, customer_id: str, lat: float, lon: float
) -> list[dict[str, Any]]:
    """The customer's geofences a position is inside (or on the edge of), in id order."""
    index = await customer_index(session, provider_id, customer_id)
    [ids] = index.containing([lat], [lon])
    if not ids:
        return []
    statement = list_query(provider_id, customer_id).where(Geofence.id.in_(ids))
    rows = (await session.execute(statement.order_by(Geofence.id))).all()
    return await shape_geofences(session, rows)


# --------------------------------------------------------------------------------------------
# Import and export
# --------------------------------------------------------------------------------------------


async def export_collection(
    session: AsyncSession, provider_id: str, customer_id: str, group_id: str | None = None
) -> dict[str, Any]:
    """The customer's geofences (those of a group) as a GeoJSON FeatureCollection: each a
    Feature with the geometry as given and the geofence's fields in `properties`."""
    statement = list_query(provider_id, customer_id, group_id=group_id).order_by(Geofence.id)
    rows = (await session.execute(statement)).all()
    shown = await shape_geofences(session, rows)
    names = await _group_names(session, provider_id, customer_id)
    features = []
    for item in shown:
        properties = {
            key: item[key]
            for key in (
                "name", "description", "shape", "radius_m", "width_m", "color", "is_address",
                "speed_limit", "dwell_s", "group_ids",
            )
        }  # fmt: skip
        properties["groups"] = [names[g] for g in item["group_ids"] if g in names]
        features.append(
            {
                "type": "Feature",
                "id": item["id"],
                "geometry": item["geometry"],
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


async def _group_names(session: AsyncSession, provider_id: str, customer_id: str) -> dict[str, str]:
    statement = select(GeofenceGroup.id, GeofenceGroup.name).where(
        GeofenceGroup.provider_id == provider_id, GeofenceGroup.customer_id == customer_id
    )
    return {row.id: row.name for row in await session.execute(statement)}


async def import_collection(
    session: AsyncSession, actor: Actor, customer_id: str, collection: FeatureCollectionIn
) -> list[str]:
    """Creates a geofence of each feature, all or none: a feature that is not a valid
    geofence is a 422 naming it (`features.<n>.geometry...`). Groups are taken by name, and
    made when the customer has none of that name."""
    # Building thousands of areas takes seconds: not on the event loop.
    rows, wanted_groups = await asyncio.to_thread(
        _imported_rows, collection, actor.provider_id, customer_id
    )
    group_of = await _groups_by_name(
        session, actor, customer_id, {name for names in wanted_groups for name in names}
    )
    if rows:
        await session.execute(insert(Geofence), rows)
    members = [
        {
            "geofence_id": row["id"],
            "group_id": group_of[name],
            "provider_id": actor.provider_id,
            "customer_id": customer_id,
        }
        for row, names in zip(rows, wanted_groups, strict=True)
        for name in names
    ]
    if members:
        await session.execute(insert(GeofenceGroupMember), members)
    ids = [row["id"] for row in rows]
    await audit.record(
        session, actor, "geofence.import", "geofence", ids[0] if ids else "", {"created": len(ids)},
        customer_id,
    )  # fmt: skip
    if ids:
        _note_geofences(session, actor.provider_id, customer_id, ids)
    return ids


def _imported_rows(
    collection: FeatureCollectionIn, provider_id: str, customer_id: str
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The rows of the imported geofences, and the names of each one's groups."""
    rows = []
    wanted_groups: list[list[str]] = []
    now = utcnow()
    for index, feature in enumerate(collection.features):
        loc = ("body", "features", index)
        properties = feature.properties
        radius = properties.radius_m if properties else None
        width = properties.width_m if properties else None
        geometry = feature.geometry.model_dump(exclude={"bbox"})
        try:
            shape, area = kind_of(geometry["type"]), build_area(geometry, radius, width)
        except GeometryError as error:
            field = ["properties"] if error.loc[0] in ("radius_m", "width_m") else ["geometry"]
            raise validation_error([*loc, *field, *error.loc], error.msg) from None
        rows.append(
            {
                "id": new_id("geo"),
                "provider_id": provider_id,
                "customer_id": customer_id,
                "name": (properties.name if properties else None) or f"Geofence {index + 1}",
                "description": properties.description if properties else None,
                "color": properties.color if properties else None,
                "shape": shape,
                "geometry": {"type": geometry["type"], "coordinates": geometry["coordinates"]},
                "radius_m": radius,
                "width_m": width,
                "is_address": properties.is_address if properties else False,
                "speed_limit": properties.speed_limit if properties else None,
                "dwell_s": properties.dwell_s if properties else 0,
                "area": shapely.to_wkb(area),
                "area_m2": area_m2(area),
                "created_at": now,
                "updated_at": now,
            }
        )
        wanted_groups.append(list(dict.fromkeys(properties.groups)) if properties else [])
    return rows, wanted_groups


async def _groups_by_name(
    session: AsyncSession, actor: Actor, customer_id: str, names: set[str]
) -> dict[str, str]:
    if not names:
        return {}
    statement = (
        select(GeofenceGroup.id, GeofenceGroup.name)
        .where(
            GeofenceGroup.provider_id == actor.provider_id,
            GeofenceGroup.customer_id == customer_id,
            GeofenceGroup.name.in_(sorted(names)),
        )
        .order_by(GeofenceGroup.id)
    )
    found: dict[str, str] = {}
    for row in await session.execute(statement):
        found.setdefault(row.name, row.id)
    for name in sorted(names - set(found)):
        group = await create_group(session, actor, customer_id, GroupCreate(name=name))
        found[name] = group.id
    return found


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def group_list_query(
    provider_id: str, customer_id: str, *, name: str | None = None
) -> Select[*tuple[Any, ...]]:
    statement = select(GeofenceGroup).where(
        GeofenceGroup.provider_id == provider_id, GeofenceGroup.customer_id == customer_id
    )
    if name:
        statement = statement.where(GeofenceGroup.name.icontains(name, autoescape=True))
    return statement


async def get_group(
    session: AsyncSession, provider_id: str, customer_id: str, group_id: str
) -> GeofenceGroup:
    group = None
    if looks_like_id(group_id):
        statement = group_list_query(provider_id, customer_id).where(GeofenceGroup.id == group_id)
        group = (await session.execute(statement)).scalar_one_or_none()
    if group is None:
        raise not_found("geofence group")
    return group


async def create_group(
    session: AsyncSession, actor: Actor, customer_id: str, data: GroupCreate
) -> GeofenceGroup:
    group = GeofenceGroup(
        id=new_id("gfg"), provider_id=actor.provider_id, customer_id=customer_id,
        **data.model_dump(),
    )  # fmt: skip
    session.add(group)
    await session.flush()
    changes = data.model_dump(mode="json")
    await audit.record(
        session, actor, "geofence_group.create", "geofence_group", group.id, changes, customer_id
    )
    _note_group(session, group)
    return group


async def update_group(
    session: AsyncSession, actor: Actor, customer_id: str, group_id: str, data: GroupUpdate
) -> GeofenceGroup:
    group = await get_group(session, actor.provider_id, customer_id, group_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise validation_error(["body", "name"], "may not be null")
    for field, value in changes.items():
        setattr(group, field, value)
    group.updated_at = utcnow()
    await session.flush()
    logged = data.model_dump(mode="json", exclude_unset=True)
    await audit.record(
        session, actor, "geofence_group.update", "geofence_group", group.id, logged, customer_id
    )
    _note_group(session, group)
    return group


async def delete_group(
    session: AsyncSession, actor: Actor, customer_id: str, group_id: str
) -> None:
    """Deletes the group; its geofences stay, in their other groups."""
    group = await get_group(session, actor.provider_id, customer_id, group_id)
    await session.delete(group)
    await session.flush()
    details = {"name": group.name}
    await audit.record(
        session, actor, "geofence_group.delete", "geofence_group", group.id, details, customer_id
    )
    _note_group(session, group)


def _note_group(session: AsyncSession, group: GeofenceGroup) -> None:
    note(
        session,
        Change(GEOFENCE_GROUP_CHANGE, (group.id,), group.provider_id, (group.customer_id,)),
    )


# --------------------------------------------------------------------------------------------
# The geofences a step tests positions against
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerFences:
    """A customer's geofences as the visits step tests positions against them: the index
    (ids in id order) and, in the same order, each one's name and dwell delay."""

    index: GeofenceIndex
    names: tuple[str, ...]
    dwell_s: tuple[int, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return self.index.ids


# What tells whether a customer's geofences changed: how many, and the newest change.
FencesStamp = tuple[int, datetime | None]


async def fences_stamps(
    session: AsyncSession, customers: Collection[tuple[str, str]]
) -> dict[tuple[str, str], FencesStamp]:
    """Each (provider, customer)'s stamp, in one query (`(0, None)`: no geofences). A geofence
    created or changed moves its customer's newest change; one deleted, its count."""
    found: dict[tuple[str, str], FencesStamp] = dict.fromkeys(customers, (0, None))
    if not found:
        return found
    statement = (
        select(
            Geofence.provider_id, Geofence.customer_id, func.count(), func.max(Geofence.updated_at)
        )
        .where(
            Geofence.provider_id.in_({p for p, _ in found}),
            Geofence.customer_id.in_({c for _, c in found}),
        )
        .group_by(Geofence.provider_id, Geofence.customer_id)
    )
    for provider_id, customer_id, count, newest in await session.execute(statement):
        if (provider_id, customer_id) in found:
            found[provider_id, customer_id] = (count, _as_utc(newest))
    return found


def _as_utc(value: datetime | str | None) -> datetime | None:
    """`max()` of a time column, as the driver gives it (SQLite: text, naive in UTC)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


async def customer_fences(
    session: AsyncSession, provider_id: str, customer_id: str
) -> CustomerFences:
    """The customer's geofences for the visits step: one query, no geometry recomputed."""
    statement = (
        select(Geofence.id, Geofence.name, Geofence.dwell_s, Geofence.area)
        .where(Geofence.provider_id == provider_id, Geofence.customer_id == customer_id)
        .order_by(Geofence.id)
    )
    rows = (await session.execute(statement)).all()
    index = GeofenceIndex.from_wkb([row.id for row in rows], [row.area for row in rows])
    return CustomerFences(
        index, tuple(row.name for row in rows), tuple(int(row.dwell_s) for row in rows)
    )


async def geofences_at(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    points: Sequence[tuple[float, float]],
) -> list[set[str]]:
    """The ids of the customer's geofences holding each (lat, lon): one index, one test."""
    if not points:
        return []
    index = await customer_index(session, provider_id, customer_id)
    lat, lon = zip(*points, strict=True)
    return [set(ids) for ids in index.containing(lat, lon)]


async def address_names_at(
    session: AsyncSession,
    provider_id: str,
    customer_id: str,
    points: Sequence[tuple[float, float]],
) -> list[str | None]:
    """The name of the customer's address geofence (`is_address`) holding each (lat, lon),
    the smallest when several do (None: none does). One query and one test for them all."""
    names: list[str | None] = [None] * len(points)
    if not points:
        return names
    statement = (
        select(Geofence.id, Geofence.name, Geofence.area)
        .where(
            Geofence.provider_id == provider_id,
            Geofence.customer_id == customer_id,
            Geofence.is_address.is_(True),
        )
        .order_by(Geofence.area_m2, Geofence.id)  # the index in this order: smallest first
    )
    rows = (await session.execute(statement)).all()
    if not rows:
        return names
    index = GeofenceIndex.from_wkb([row.id for row in rows], [row.area for row in rows])
    lat, lon = zip(*points, strict=True)
    positions, fences = index.pairs(lat, lon)
    for position, fence in zip(positions.tolist(), fences.tolist(), strict=True):
        if names[position] is None:  # the first of each position's: the smallest
            names[position] = rows[fence].name
    return names


# --------------------------------------------------------------------------------------------
# Visits
# --------------------------------------------------------------------------------------------

# The kind of change notice of visits that now count or ended (`VISIT_CHANGE`'s values: one per
# enter or exit, see `visit_notice_values`), which the server turns into live events.
# Other domains hold a customer's index (`customer_index`) by this type.
Index = GeofenceIndex
VISIT_CHANGE = "geofence_visit"
STEP_NAME = "visits"  # stable: the step's progress is stored under it
DEVICES_PER_QUERY = 1000


@dataclass(frozen=True, slots=True)
class VisitEvent:
    device_id: str
    geofence_id: str
    geofence_name: str
    kind: str  # "enter" | "exit"
    time: datetime
    lat: float
    lon: float
    # When it is known: an exit at its time; an enter once the geofence's dwell delay has
    # passed (the visit counts from the device's first message at or after this).
    known_at: datetime


_VISIT_COLUMNS = (
    GeofenceVisit.id,
    GeofenceVisit.device_id,
    GeofenceVisit.geofence_id,
    Geofence.name.label("geofence_name"),
    GeofenceVisit.enter_time,
    GeofenceVisit.exit_time,
    GeofenceVisit.duration_s,
    GeofenceVisit.distance_m,
    GeofenceVisit.enter_lat,
    GeofenceVisit.enter_lon,
    GeofenceVisit.exit_lat,
    GeofenceVisit.exit_lon,
)


def visits_query(
    provider_id: str,
    customer_id: str,
    *,
    device_ids: Sequence[str] = (),
    geofence_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[*tuple[Any, ...]]:
    """The customer's visits (those that count) that overlap [since, until) (an open one goes
    on to now), of these devices and this geofence when given, with the geofence's name."""
    statement = (
        select(*_VISIT_COLUMNS)
        .join(Geofence, Geofence.id == GeofenceVisit.geofence_id)
        .where(
            GeofenceVisit.provider_id == provider_id,
            GeofenceVisit.customer_id == customer_id,
            Geofence.customer_id == customer_id,
            GeofenceVisit.counted.is_(True),
        )
    )
    if device_ids:
        statement = statement.where(GeofenceVisit.device_id.in_(device_ids))
    if geofence_id is not None:
        statement = statement.where(GeofenceVisit.geofence_id == geofence_id)
    if until is not None:
        statement = statement.where(GeofenceVisit.enter_time < until)
    if since is not None:
        statement = statement.where(
            or_(GeofenceVisit.exit_time > since, GeofenceVisit.exit_time.is_(None))
        )
    return statement


def shape_visit(row: Row[Any]) -> dict[str, Any]:
    """A row of `visits_query` as the API shows a visit."""
    return {
        "id": row.id,
        "device_id": row.device_id,
        "geofence_id": row.geofence_id,
        "geofence_name": row.geofence_name,
        "enter": row.enter_time,
        "exit": row.exit_time,
        "duration_s": row.duration_s,
        "distance_m": row.distance_m,
        "enter_lat": row.enter_lat,
        "enter_lon": row.enter_lon,
        "exit_lat": row.exit_lat,
        "exit_lon": row.exit_lon,
    }


async def page_of_visits(
    session: AsyncSession, statement: Select[*tuple[Any, ...]], page: PageParams
) -> dict[str, Any]:
    rows, next_cursor = await fetch_page(session, statement, GeofenceVisit.id, page)
    return {"items": [shape_visit(row) for row in rows], "next_cursor": next_cursor}


async def visit_events(
    session: AsyncSession,
    provider_id: str,
    ranges: Mapping[str, tuple[datetime | None, datetime]],
) -> list[VisitEvent]:
    """The enters and exits (of visits that count) of each device known in its range (device
    id -> (after, exclusive; until, inclusive); see `VisitEvent.known_at`), in the order they
    became known (at one time, exits first)."""
    found: list[tuple[datetime, int, VisitEvent]] = []
    for chunk in id_chunks(list(ranges), DEVICES_PER_QUERY):
        afters = [ranges[d][0] for d in chunk]
        after = None if None in afters else min(a for a in afters if a is not None)
        until = max(ranges[d][1] for d in chunk)
        # An enter becomes known up to the longest dwell delay after it.
        enters_after = None if after is None else after - timedelta(seconds=MAX_DWELL_S)
        statement = (
            select(
                GeofenceVisit.device_id, GeofenceVisit.geofence_id, Geofence.name,
                Geofence.dwell_s,
                GeofenceVisit.enter_time, GeofenceVisit.enter_lat, GeofenceVisit.enter_lon,
                GeofenceVisit.exit_time, GeofenceVisit.exit_lat, GeofenceVisit.exit_lon,
            )
            .join(Geofence, Geofence.id == GeofenceVisit.geofence_id)
            .where(
                GeofenceVisit.provider_id == provider_id,
                GeofenceVisit.device_id.in_(chunk),
                GeofenceVisit.counted.is_(True),
                or_(
                    _within(GeofenceVisit.enter_time, enters_after, until),
                    _within(GeofenceVisit.exit_time, after, until),
                ),
            )
        )  # fmt: skip
        for row in await session.execute(statement):
            since, till = ranges[row.device_id]
            dwell = timedelta(seconds=row.dwell_s or 0)
            for kind, order, time, lat, lon, known_at in (
                ("enter", 1, row.enter_time, row.enter_lat, row.enter_lon,
                 row.enter_time + dwell),
                ("exit", 0, row.exit_time, row.exit_lat, row.exit_lon, row.exit_time),
            ):  # fmt: skip
                known = known_at is not None and (since is None or known_at > since)
                if known and known_at <= till:
                    event = VisitEvent(
                        row.device_id, row.geofence_id, row.name, kind, time, lat, lon, known_at
                    )
                    found.append((known_at, order, event))
    found.sort(key=lambda item: (item[0], item[1], item[2].device_id, item[2].geofence_id))
    return [event for _, _, event in found]


def _within(column: Any, after: datetime | None, until: datetime) -> Any:
    return column <= until if after is None else and_(column > after, column <= until)


async def open_visits(
    session: AsyncSession, provider_id: str, device_ids: Collection[str]
) -> dict[str, list[tuple[str, datetime]]]:
    """Per device, the (geofence id, enter time) of its visits still open (that count), in
    enter order."""
    found: dict[str, list[tuple[str, datetime]]] = {device_id: [] for device_id in device_ids}
    for chunk in id_chunks(list(found), DEVICES_PER_QUERY):
        statement = (
            select(GeofenceVisit.device_id, GeofenceVisit.geofence_id, GeofenceVisit.enter_time)
            .where(
                GeofenceVisit.provider_id == provider_id,
                GeofenceVisit.device_id.in_(chunk),
                GeofenceVisit.exit_time.is_(None),
                GeofenceVisit.counted.is_(True),
            )
            .order_by(GeofenceVisit.enter_time, GeofenceVisit.geofence_id)
        )
        for device_id, geofence_id, enter in await session.execute(statement):
            found[device_id].append((geofence_id, enter))
    return found


def announce_visits(events: EventHub, change: Change) -> None:
    """Tells the live event streams of enters and exits (a committed `geofence_visit`
    notice): `geofence_enter` and `geofence_exit` events for the visit's customer."""
    publish_each(events, change.values, "geofence")


async def purge_visits_before(
    session: AsyncSession, customer_id: str, _: Sequence[str], cutoff: datetime, limit: int
) -> int:
    """Retention (`messages.retention.Purge`): deletes up to `limit` of the customer's visits
    that ended before `cutoff` (an open one stays: its device is still inside); how many."""
    oldest = (
        select(GeofenceVisit.id)
        .where(
            GeofenceVisit.customer_id == customer_id,
            GeofenceVisit.enter_time < cutoff,
            GeofenceVisit.exit_time < cutoff,
        )
        .limit(limit)
    )
    expired = delete_rows(GeofenceVisit).where(GeofenceVisit.id.in_(oldest))
    return await rows_changed(session, expired)
