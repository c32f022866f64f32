"""Geofences and automations for a benchmark's customer, so that the visits and automations
steps have work on every message: `fleetplane bench ingest --geofences N --automations M`.

The geofences (a third each of circles, polygons with and without holes, and corridors) lie
over about 38 x 38 km round Riga, where the load's simulated vehicles drive (within 6 km of the
centre): a position there is inside 1.4 of them on average, and three positions in four are
inside at least one, so vehicles keep entering and leaving them. The automations cycle through
the trigger types that look at every message (speeding, geofence enter, exit and dwell,
ignition on and off, idling, a parameter), each with the in-app notification action, as the API
creates them."""

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit.service import Actor
from fleetplane.automations import service as automations
from fleetplane.automations.schemas import AutomationCreate
from fleetplane.cli import load_bench
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import CustomerCreate
from fleetplane.geofences import service as geofences
from fleetplane.geofences.schemas import GeofenceCreate
from fleetplane.module_catalog import module_names

geofences_bench = load_bench("geofences")

# Degrees either side of the centre: about 19 km at Riga's latitude. (Over 7.5 km, a position
# was inside 8 geofences on average, all of them inside several: a far denser map than a
# fleet's sites and zones.)
HALF_LON, HALF_LAT = 0.3, 0.17


async def customer_with_rules(
    session: AsyncSession, actor: Actor, geofence_count: int, automation_count: int,
    console: Console,
) -> str:  # fmt: skip
    """A customer with every module, and its geofences and automations; its id."""
    customer = await customers.create(
        session, actor, CustomerCreate(name="Benchmark fleet", modules=sorted(module_names()))
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        made = geofences_bench.make_geofences(geofence_count, 3, HALF_LON, HALF_LAT)
        task = progress.add_task("creating geofences", total=len(made))
        ids = []
        for number, geofence in enumerate(made):
            data = GeofenceCreate.model_validate({"name": f"Area {number + 1:04d}", **geofence})
            ids.append((await geofences.create(session, actor, customer.id, data)).id)
            progress.advance(task)
        task = progress.add_task("creating automations", total=automation_count)
        for number in range(automation_count):
            rule = {
                "name": f"Rule {number + 1:03d}",
                "trigger": _trigger(number, ids),
                "actions": [{"type": "notification"}],
            }
            data = AutomationCreate.model_validate(rule)
            await automations.create(session, actor, customer.id, data)
            progress.advance(task)
    return customer.id


def _trigger(number: int, geofence_ids: list[str]) -> dict[str, Any]:
    some = [geofence_ids[number % len(geofence_ids)]] if geofence_ids else []
    triggers: list[dict[str, Any]] = [
        {"type": "speeding", "speed": 50 + number % 5 * 10},
        {"type": "geofence_enter", "geofence_ids": some},
        {"type": "geofence_exit", "geofence_ids": []},
        {"type": "geofence_dwell", "geofence_ids": some, "min_inside_s": 300},
        {"type": "ignition_on"},
        {"type": "ignition_off"},
        {"type": "idling", "min_s": 300},
        {"type": "parameter", "name": "fuel", "op": "lt", "value": 20},
    ]
    trigger = triggers[number % len(triggers)]
    if not geofence_ids and trigger["type"].startswith("geofence"):
        return {"type": "speeding", "speed": 90}
    return trigger
