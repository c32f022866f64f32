"""Command rules: a command waits (queued) until its device is connected, then it is written
to the device's connection (sent); one not sent before it expires is expired."""

from datetime import timedelta

from fastapi import Response
from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.audit import service as audit
from fleetplane.audit.service import Actor
from fleetplane.commands.models import Command as Command  # also the type callers hold
from fleetplane.commands.schemas import CommandCreate, CommandOut, CommandStatus
from fleetplane.core.ids import new_id
from fleetplane.core.pagination import PageParams, paginate
from fleetplane.core.timeutil import utcnow
from fleetplane.devices.service import HistoryWindow


def list_query(device_id: str) -> Select[Command]:
    return select(Command).where(Command.device_id == device_id)


def customer_history_query(window: HistoryWindow) -> Select[Command]:
    """The commands of a device its customer may see: their own, sent inside the window."""
    device = window.device
    return list_query(device.id).where(
        Command.provider_id == device.provider_id,
        Command.customer_id == device.customer_id,
        window.covers(Command.created_at),
    )


async def customer_history_page(
    session: AsyncSession, window: HistoryWindow, page: PageParams
) -> Response:
    """One page of `customer_history_query`, oldest first, as a ready answer."""
    return await paginate(session, customer_history_query(window), Command.id, page, CommandOut)


async def create(
    session: AsyncSession, actor: Actor, customer_id: str, device_id: str, data: CommandCreate
) -> Command:
    now = utcnow()
    command = Command(
        id=new_id("cmd"),
        provider_id=actor.provider_id,
        customer_id=customer_id,
        device_id=device_id,
        type=data.type.value,
        text=data.text,
        status=CommandStatus.QUEUED.value,
        created_by=actor.label,
        created_at=now,
        expires_at=now + timedelta(seconds=data.expires_in_seconds),
    )
    session.add(command)
    await audit.record(
        session,
        actor,
        "command.create",
        "command",
        command.id,
        {"device_id": device_id, "type": command.type},
        customer_id=customer_id,
    )
    await session.flush()
    return command


async def take_deliverable(session: AsyncSession, device_id: str) -> list[Command]:
    """The device's queued commands, oldest first; expired ones are marked so on the way."""
    now = utcnow()
    await session.execute(
        update(Command)
        .where(
            Command.device_id == device_id,
            Command.status == CommandStatus.QUEUED.value,
            Command.expires_at <= now,
        )
        .values(status=CommandStatus.EXPIRED.value)
    )
    statement = (
        list_query(device_id)
        .where(Command.status == CommandStatus.QUEUED.value)
        .order_by(Command.id)
    )
    return list((await session.execute(statement)).scalars())


def mark_sent(command: Command) -> None:
    command.status = CommandStatus.SENT.value
    command.sent_at = utcnow()


def mark_failed(command: Command, reason: str) -> None:
    command.status = CommandStatus.FAILED.value
    command.error = reason[:200]


async def devices_with_queued_commands(session: AsyncSession, device_ids: list[str]) -> list[str]:
    if not device_ids:
        return []
    statement = (
        select(Command.device_id)
        .where(Command.device_id.in_(device_ids), Command.status == CommandStatus.QUEUED.value)
        .distinct()
    )
    return list((await session.execute(statement)).scalars())


async def mark_answered(session: AsyncSession, device_id: str, command_type: str) -> None:
    """The device delivered what its oldest sent command of this type asked for."""
    statement = (
        list_query(device_id)
        .where(Command.type == command_type, Command.status == CommandStatus.SENT.value)
        .order_by(Command.id)
        .limit(1)
    )
    command = (await session.execute(statement)).scalar_one_or_none()
    if command is not None:
        command.status = CommandStatus.ANSWERED.value
        command.answered_at = utcnow()
