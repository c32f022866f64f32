from datetime import datetime
from typing import Any

from fleetplane.core.schemas import ResponseBody


class AuditEntryOut(ResponseBody):
    id: str
    at: datetime
    actor: str
    api_key_id: str | None
    customer_id: str | None
    action: str
    object_type: str
    object_id: str
    changes: dict[str, Any]
