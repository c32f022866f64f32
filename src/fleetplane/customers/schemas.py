from datetime import datetime
from enum import StrEnum
from zoneinfo import available_timezones

from pydantic import EmailStr, Field, field_validator

from fleetplane.core.schemas import RequestBody, ResponseBody, line_field, name_field
from fleetplane.module_catalog import module_names


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Contact(RequestBody):
    name: str | None = line_field(200, default=None)
    email: EmailStr | None = None
    phone: str | None = line_field(40, default=None)


def _check_timezone(value: str | None) -> str | None:
    if value is not None and value not in _timezones():
        raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Riga', 'UTC')")
    return value


def _timezones() -> set[str]:
    global _TIMEZONES
    if not _TIMEZONES:
        _TIMEZONES = available_timezones() | {"UTC"}
    return _TIMEZONES


_TIMEZONES: set[str] = set()


def _check_modules(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    known = module_names()
    unknown = [name for name in value if name not in known]
    if unknown:
        raise ValueError(f"unknown modules {unknown}; available: {sorted(known)}")
    return sorted(set(value))


class CustomerCreate(RequestBody):
    name: str = name_field()
    status: CustomerStatus = CustomerStatus.ACTIVE
    modules: list[str] = Field(
        default_factory=lambda: ["devices"], description="Enabled module names."
    )
    plan: str | None = line_field(100, default=None)
    timezone: str = Field(default="UTC", description="IANA time zone name.")
    retention_days: int = Field(default=365, ge=1, le=3650, description="Days messages are kept.")
    contact: Contact | None = None

    _valid_timezone = field_validator("timezone")(_check_timezone)
    _valid_modules = field_validator("modules")(_check_modules)


class CustomerUpdate(RequestBody):
    name: str | None = name_field(default=None)
    status: CustomerStatus | None = None
    modules: list[str] | None = None
    plan: str | None = line_field(100, default=None)
    timezone: str | None = None
    retention_days: int | None = Field(default=None, ge=1, le=3650)
    contact: Contact | None = None

    _valid_timezone = field_validator("timezone")(_check_timezone)
    _valid_modules = field_validator("modules")(_check_modules)


class ContactOut(ResponseBody):
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class CustomerOut(ResponseBody):
    id: str
    name: str
    status: CustomerStatus
    modules: list[str]
    plan: str | None
    timezone: str
    retention_days: int
    contact: ContactOut | None
    created_at: datetime
    updated_at: datetime
