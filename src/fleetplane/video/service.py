"""Media rules: what a device sends is stored whole before it is acknowledged, and an image
is the answer to the device's oldest unanswered snapshot request."""

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.commands import service as commands
from fleetplane.commands.schemas import CommandType
from fleetplane.core.files import FileStore
from fleetplane.core.ids import new_id
from fleetplane.telemetry import ImageFile
from fleetplane.video.models import MediaFile

# The command an image from the device answers.
ANSWERED_COMMAND = CommandType.SNAPSHOT_REQUEST


def _content_type(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/octet-stream"


async def store_device_image(
    session: AsyncSession, files: FileStore, provider_id: str, device_id: str, image: ImageFile
) -> MediaFile:
    media_id = new_id("med")
    path = f"media/{device_id}/{media_id}"
    digest = await files.write(path, image.data)
    media = MediaFile(
        id=media_id,
        provider_id=provider_id,
        device_id=device_id,
        kind="image",
        name=image.name[:200],
        content_type=_content_type(image.data),
        size=len(image.data),
        sha256=digest,
        path=path,
        taken_at=image.taken_at,
        received_at=image.received_at,
    )
    session.add(media)
    await session.flush()
    await commands.mark_answered(session, device_id, ANSWERED_COMMAND)
    return media
