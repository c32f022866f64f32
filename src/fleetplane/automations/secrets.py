"""What the delivery of the rules' actions needs of the rules themselves: the name an e-mail
shows and the secret a webhook is signed with. Handed to the delivery worker by the runtime,
since the notifications domain does not read this domain's tables."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.automations.models import Automation
from fleetplane.core.db import id_chunks


async def names_and_secrets(
    session: AsyncSession, automation_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """(name, webhook secret) of each automation found (a deleted one is not)."""
    found: dict[str, tuple[str, str]] = {}
    for chunk in id_chunks(list(dict.fromkeys(automation_ids))):
        statement = select(Automation.id, Automation.name, Automation.webhook_secret).where(
            Automation.id.in_(chunk)
        )
        found.update(
            (row.id, (row.name, row.webhook_secret)) for row in await session.execute(statement)
        )
    return found
