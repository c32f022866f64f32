"""Geofence rules: a customer's geofences and their groups, the geometry checked and turned
into the area positions are tested against (`geometry.build_area`) when it is written; which
geofences hold a position (`customer_index`, `containing`); import and export as GeoJSON."""

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import shapely
from sqlalchemy import Row, Select, insert, select
from sqlalchemy import delete as delete_rows
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.changes import Change, note
from fleetplane.core.db import values_by_key
from fleetplane.core.errors import not_found, validation_error
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.core.pagination import PageParams, fetch_page
from fleetplane.core.timeutil import utcnow
from fleetplane.geofences.geometry import GeofenceIndex, GeometryError, area_m2, build_area, kind_of
from fleetplane.geofences.models import Geofence, GeofenceGroup, GeofenceGroupMember
from fleetplane.geofences.schemas import (
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
_REQUIRED_FIELDS = ("name", "geometry", "is_address", "group_ids")
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
                "speed_limit", "group_ids",
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
