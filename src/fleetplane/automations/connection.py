"""The connection watch: `connection_lost` is about time passing without messages, which no
message tells, so a job of the server looks every few seconds for the devices whose newest
message was received longer ago than a rule's `after_s`, and fires the rule once for each (its
state on the device becomes active). The device's next message clears the state and fires the
`connection_restored` rules (the automations step)."""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.automations import service
from fleetplane.automations.rules import Rule, RuleState
from fleetplane.core.db import writer_session
from fleetplane.core.timeutil import utcnow
from fleetplane.notifications import service as notifications
from fleetplane.notifications.service import Firing

log = logging.getLogger("fleetplane.automations")


async def watch_forever(
    sessions: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    while True:
        try:
            await check_once(sessions)
        except Exception:  # try again next time; nothing is lost meanwhile
            log.exception("the connection watch failed")
        await asyncio.sleep(interval_seconds)


async def check_once(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Fires the `connection_lost` rules of the devices silent for long enough; how many
    fired. One transaction: reads first, then a statement per table."""
    async with writer_session(sessions) as session:
        rules = await service.rules_of_type(session, "connection_lost")
        now = utcnow()
        firings: list[Firing] = []
        states: list[tuple[Rule, str, RuleState]] = []
        for rule, contact, state in await service.lost_devices(session, rules, now):
            if not state.may_fire(rule, now):
                continue  # out of the schedule or in the cool-down: perhaps later
            state.active, state.since, state.fired = True, contact.last_received_at, True
            state.last_fired_at = now
            states.append((rule, contact.device_id, state))
            firings.append(
                Firing(
                    automation_id=rule.id,
                    provider_id=rule.provider_id,
                    customer_id=rule.customer_id,
                    device_id=contact.device_id,
                    type=rule.type,
                    time=now,
                    position={
                        "lat": contact.lat,
                        "lon": contact.lon,
                        "speed": contact.speed,
                        "course": contact.course,
                        "time": contact.last_received_at.isoformat(),
                    },
                    data={
                        "last_message_at": contact.last_received_at.isoformat(),
                        "after_s": rule.trigger["after_s"],
                        "silent_s": round((now - contact.last_received_at).total_seconds(), 3),
                    },
                    actions=rule.actions,
                )
            )
        await notifications.record(session, firings)
        await service.write_states(session, states)
    return len(firings)
