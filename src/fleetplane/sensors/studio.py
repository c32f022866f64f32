from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.audit.service import Actor
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.core.schemas import line_query
from fleetplane.sensors import service
from fleetplane.sensors.calculation import SensorType
from fleetplane.sensors.models import Sensor
from fleetplane.sensors.schemas import SensorCreate, SensorOut, SensorUpdate

router = APIRouter(prefix="/api/sensors", tags=["Sensors"], route_class=PermissionRoute)


@router.get("", response_model=Page[SensorOut], summary="List sensors")
async def list_sensors(
    ctx: StudioContext = provider_permission("read:sensors"),
    page: PageParams = PageDep,
    device_id: Annotated[str | None, line_query(40)] = None,
    sensor_type: Annotated[SensorType | None, Query(alias="type")] = None,
) -> Response:
    statement = service.list_query(ctx.provider_id, device_id=device_id, sensor_type=sensor_type)
    return await paginate(ctx.session, statement, Sensor.id, page, SensorOut)


@router.post("", status_code=201, response_model=SensorOut, summary="Add a sensor to a device")
async def create_sensor(
    body: SensorCreate,
    response: Response,
    ctx: StudioContext = provider_permission("create:sensors"),
) -> SensorOut:
    """A `device_id` that is not one of your devices answers `422` naming `device_id`."""
    sensor = await service.create(ctx.session, Actor.of(ctx), body)
    response.headers["Location"] = f"/api/sensors/{sensor.id}"
    return SensorOut.model_validate(sensor)


@router.get("/{sensor_id}", response_model=SensorOut, summary="Get a sensor")
async def get_sensor(
    sensor_id: str, ctx: StudioContext = provider_permission("read:sensors")
) -> SensorOut:
    return SensorOut.model_validate(await service.get(ctx.session, ctx.provider_id, sensor_id))


@router.patch("/{sensor_id}", response_model=SensorOut, summary="Update a sensor")
async def update_sensor(
    sensor_id: str, body: SensorUpdate, ctx: StudioContext = provider_permission("update:sensors")
) -> SensorOut:
    """Only the fields sent change; `calibration`, `min` and `max` set to null are removed."""
    sensor = await service.update(ctx.session, Actor.of(ctx), sensor_id, body)
    return SensorOut.model_validate(sensor)


@router.delete("/{sensor_id}", status_code=204, summary="Delete a sensor")
async def delete_sensor(
    sensor_id: str, ctx: StudioContext = provider_permission("delete:sensors")
) -> Response:
    await service.delete(ctx.session, Actor.of(ctx), sensor_id)
    return Response(status_code=204)
