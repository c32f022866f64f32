from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleetplane.audit import service
from fleetplane.audit.models import AuditEntry
from fleetplane.audit.schemas import AuditEntryOut
from fleetplane.core.auth import PermissionRoute, StudioContext, provider_permission
from fleetplane.core.pagination import Page, PageDep, PageParams, paginate
from fleetplane.core.schemas import UtcDateTime, line_query

router = APIRouter(prefix="/api/audit-log", tags=["Audit log"], route_class=PermissionRoute)


@router.get("", response_model=Page[AuditEntryOut], summary="List audit log entries")
async def list_entries(
    ctx: StudioContext = provider_permission("read:audit_log"),
    page: PageParams = PageDep,
    from_: Annotated[UtcDateTime | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[UtcDateTime | None, Query(description="Exclusive.")] = None,
    api_key_id: Annotated[str | None, line_query(40)] = None,
    object_type: Annotated[str | None, line_query(40)] = None,
    object_id: Annotated[str | None, line_query(40)] = None,
    action: Annotated[str | None, line_query(80)] = None,
) -> Response:
    """Every write to this provider's data, oldest first: which key made it, when, on what."""
    statement = service.query(
        ctx.provider_id,
        since=from_,
        until=to,
        api_key_id=api_key_id,
        object_type=object_type,
        object_id=object_id,
        action=action,
    )
    return await paginate(ctx.session, statement, AuditEntry.id, page, AuditEntryOut)
