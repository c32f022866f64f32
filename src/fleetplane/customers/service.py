"""Customer rules. Every function takes the provider it acts for and filters by it."""

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.core.auth import CustomerIdentity
from fleetplane.core.changes import Change, note
from fleetplane.core.db import id_chunks
from fleetplane.core.errors import not_found
from fleetplane.core.ids import looks_like_id, new_id
from fleetplane.customers.models import Customer
from fleetplane.customers.schemas import CustomerCreate, CustomerUpdate

# Returns a customer's devices to the provider's inventory; how many there were.
ReleaseDevices = Callable[[AsyncSession, Actor, str], Awaitable[int]]
# The kind of change notice (core.changes) raised when a customer changes.
CUSTOMER_CHANGE = "customer"


def _note_changed(session: AsyncSession, customer: Customer) -> None:
    note(session, Change(CUSTOMER_CHANGE, (customer.id,), customer.provider_id, (customer.id,)))


def list_query(provider_id: str, status: str | None = None) -> Select[Customer]:
    statement = select(Customer).where(Customer.provider_id == provider_id)
    if status is not None:
        statement = statement.where(Customer.status == status)
    return statement


async def retention_days(session: AsyncSession) -> list[tuple[str, int]]:
    """(customer id, retention days) of every customer of the platform."""
    result = await session.execute(select(Customer.id, Customer.retention_days))
    return [(row[0], row[1]) for row in result.all()]


async def timezones(session: AsyncSession, customer_ids: Iterable[str]) -> dict[str, str]:
    """The IANA time zone of each customer found (for work across providers: the pipeline)."""
    found: dict[str, str] = {}
    for chunk in id_chunks(sorted(set(customer_ids))):
        statement = select(Customer.id, Customer.timezone).where(Customer.id.in_(chunk))
        found.update((row[0], row[1]) for row in await session.execute(statement))
    return found


async def find(session: AsyncSession, provider_id: str, customer_id: str) -> Customer | None:
    if not looks_like_id(customer_id):
        return None
    result = await session.execute(
        select(Customer).where(Customer.id == customer_id, Customer.provider_id == provider_id)
    )
    return result.scalar_one_or_none()


async def get(session: AsyncSession, provider_id: str, customer_id: str) -> Customer:
    customer = await find(session, provider_id, customer_id)
    if customer is None:
        raise not_found("customer")
    return customer


async def identity(
    session: AsyncSession, provider_id: str, customer_id: str
) -> CustomerIdentity | None:
    """What the module checks need to know of a customer."""
    customer = await find(session, provider_id, customer_id)
    if customer is None:
        return None
    return CustomerIdentity(
        id=customer.id,
        provider_id=customer.provider_id,
        status=customer.status,
        modules=frozenset(customer.modules),
    )


async def create(session: AsyncSession, actor: Actor, data: CustomerCreate) -> Customer:
    values: dict[str, Any] = data.model_dump(mode="json")
    customer = Customer(id=new_id("cus"), provider_id=actor.provider_id, **values)
    session.add(customer)
    await audit.record(session, actor, "customer.create", "customer", customer.id, values)
    await session.flush()
    _note_changed(session, customer)
    return customer


async def update(
    session: AsyncSession, actor: Actor, customer_id: str, data: CustomerUpdate
) -> Customer:
    customer = await get(session, actor.provider_id, customer_id)
    changes = data.model_dump(mode="json", exclude_unset=True)
    for field in ("name", "status", "modules", "timezone", "retention_days"):
        if field in changes and changes[field] is None:
            changes.pop(field)  # null means "leave as is" for fields that cannot be empty
    for field, value in changes.items():
        setattr(customer, field, value)
    await audit.record(session, actor, "customer.update", "customer", customer.id, changes)
    await session.flush()
    _note_changed(session, customer)
    return customer


async def delete(
    session: AsyncSession, actor: Actor, customer_id: str, release_devices: ReleaseDevices
) -> None:
    """Deletes the customer; `release_devices` (the devices domain's `release_all`, handed in
    by the caller, as devices build on customers and not the other way round) first returns
    its devices to the provider's unassigned inventory and ends their assignment periods."""
    customer = await get(session, actor.provider_id, customer_id)
    released = await release_devices(session, actor, customer.id)
    await session.delete(customer)
    await audit.record(
        session, actor, "customer.delete", "customer", customer.id, {"released_devices": released}
    )
    await session.flush()
    _note_changed(session, customer)
