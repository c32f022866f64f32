"""Creating providers; used by the command line (init, provider create) and the demo."""

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.ids import new_id
from fleetplane.providers.models import Provider


async def count(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(Provider))).scalar_one()


async def first(session: AsyncSession) -> Provider | None:
    result = await session.execute(select(Provider).order_by(Provider.id).limit(1))
    return result.scalar_one_or_none()


async def by_name(session: AsyncSession, name: str) -> Provider | None:
    result = await session.execute(select(Provider).where(Provider.name == name).limit(1))
    return result.scalar_one_or_none()


async def create(session: AsyncSession, name: str) -> Provider:
    provider = Provider(id=new_id("prv"), name=name)
    session.add(provider)
    await session.flush()
    return provider


def lock_row(provider_id: str) -> Select[str]:
    """The provider's row: the lock under which its limited objects (live API keys) are
    counted and added, so racing requests cannot pass a limit together."""
    return select(Provider.id).where(Provider.id == provider_id)
