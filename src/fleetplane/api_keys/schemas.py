from datetime import datetime

from pydantic import Field, field_validator

from fleetplane.core.schemas import AwareUtcDateTime, RequestBody, ResponseBody, name_field
from fleetplane.core.timeutil import utcnow


def _in_future(value: datetime | None) -> datetime | None:
    if value is not None and value <= utcnow():
        raise ValueError("must be in the future")
    return value


class ApiKeyCreate(RequestBody):
    name: str = name_field()
    provider_permissions: list[str] = Field(
        default_factory=list, description="Studio API permissions, e.g. `read:customers`."
    )
    customer_permissions: list[str] = Field(
        default_factory=list, description="Module API permissions, e.g. `read:devices`."
    )
    customer_ids: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="If set, the key reaches only these customers; null means all customers.",
    )
    expires_at: AwareUtcDateTime | None = Field(
        default=None, description="After this, the key is refused."
    )

    _future_expiry = field_validator("expires_at")(_in_future)


class ApiKeyUpdate(RequestBody):
    name: str | None = name_field(default=None)
    provider_permissions: list[str] | None = None
    customer_permissions: list[str] | None = None
    customer_ids: list[str] | None = None
    expires_at: AwareUtcDateTime | None = None

    _future_expiry = field_validator("expires_at")(_in_future)


class ApiKeyOut(ResponseBody):
    id: str
    name: str
    secret_hint: str = Field(description="The first characters of the secret, to recognise it.")
    provider_permissions: list[str]
    customer_permissions: list[str]
    customer_ids: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="The key itself. Shown only in this answer; store it now.")
