"""Media rules: what a device sends is stored whole before it is acknowledged."""

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.core.files import FileStore
from fleetplane.core.ids import new_id
from fleetplane.telemetry import ImageFile
from fleetplane.video.models import MediaFile


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
    return media
