from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.core.schemas import line_query
from fleetplane.steps import service
from fleetplane.steps.models import StepProgress
from fleetplane.steps.schemas import StepProgressOut, StepStatus

router = APIRouter(prefix="/api/pipeline", tags=["Pipeline"], route_class=PermissionRoute)


@router.get("/steps", response_model=Page[StepProgressOut], summary="List pipeline step progress")
async def list_step_progress(
    ctx: StudioContext = provider_permission("read:devices"),
    page: PageParams = PageDep,
    step: Annotated[str | None, line_query(64)] = None,
    device_id: Annotated[str | None, line_query(40)] = None,
    status: Annotated[StepStatus | None, Query(description="`failing`: what needs a look.")] = None,
) -> Response:
    """How far each pipeline step (what is derived from devices' messages after they are
    stored and answered) has got on each of this provider's devices, and whether it is
    failing there: its last error, and when it is tried again."""
    statement = service.list_query(ctx.provider_id, step=step, device_id=device_id, status=status)
    return await paginate(ctx.session, statement, StepProgress.id, page, StepProgressOut)
