"""Tachograph file rules: a downloaded file is stored whole before it is acknowledged, and
it is the answer to the device's oldest unanswered download request."""

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.commands import service as commands
from fleetplane.commands.schemas import CommandType
from fleetplane.core.files import FileStore
from fleetplane.core.ids import new_id
from fleetplane.tachograph.models import TachographFile
from fleetplane.telemetry import TachographFile as DownloadedFile

# The command a `.ddd` file from the device answers.
ANSWERED_COMMAND = CommandType.TACHOGRAPH_REQUEST


async def store_device_file(
    session: AsyncSession,
    files: FileStore,
    provider_id: str,
    device_id: str,
    download: DownloadedFile,
) -> TachographFile:
    file_id = new_id("ddd")
    path = f"tachograph/{device_id}/{file_id}.ddd"
    digest = await files.write(path, download.data)
    stored = TachographFile(
        id=file_id,
        provider_id=provider_id,
        device_id=device_id,
        driver_id=download.driver_id[:64],
        name=download.name[:200],
        size=len(download.data),
        sha256=digest,
        path=path,
        downloaded_at=download.downloaded_at,
        received_at=download.received_at,
    )
    session.add(stored)
    await session.flush()
    await commands.mark_answered(session, device_id, ANSWERED_COMMAND)
    return stored
