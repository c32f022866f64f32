"""A file from a device answers the command that asked for it, by the rule of the file's own
domain: stored through `video` or `tachograph` (here as a worker or the command line would,
with no listener), an image answers the oldest sent `snapshot_request` and a `.ddd` file the
oldest sent `tachograph_request`, each leaving the other kind alone."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from conftest import RunningServer, Tenant, run_in_db
from fleetplane.commands import service as commands
from fleetplane.core.files import FileStore
from fleetplane.tachograph import service as tachograph
from fleetplane.telemetry import ImageFile, TachographFile
from fleetplane.video import service as video

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def statuses(tenant: Tenant, device_id: str) -> dict[str, str]:
    listed = tenant.module_api(0).get(f"/module/devices/{device_id}/commands")
    assert listed.status_code == 200, listed.text
    return {item["type"]: item["status"] for item in listed.json()["items"]}


def test_each_file_answers_its_own_command(
    server: RunningServer, tenant: Tenant, tmp_path: Path
) -> None:
    device_id = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    provider_id = tenant.provider_id
    customer_api = tenant.module_api(0)
    for kind in ("snapshot_request", "tachograph_request"):
        body: dict[str, Any] = {"type": kind}
        if kind == "tachograph_request":
            body["text"] = "DRV7"
        created = customer_api.post(f"/module/devices/{device_id}/commands", json=body)
        assert created.status_code == 201, created.text

    async def send_all(session: AsyncSession) -> None:  # as the listener does on delivery
        for command in await commands.take_deliverable(session, device_id):
            commands.mark_sent(command)

    run_in_db(server.settings, send_all)
    assert statuses(tenant, device_id) == {
        "snapshot_request": "sent",
        "tachograph_request": "sent",
    }
    files = FileStore(tmp_path / "files")

    async def store_image(session: AsyncSession) -> None:
        image = ImageFile("cab.jpg", NOW, b"\xff\xd8\xff" + b"\x00" * 64, NOW)
        await video.store_device_image(session, files, provider_id, device_id, image)

    run_in_db(server.settings, store_image)
    assert statuses(tenant, device_id) == {
        "snapshot_request": "answered",
        "tachograph_request": "sent",
    }

    async def store_download(session: AsyncSession) -> None:
        download = TachographFile("DRV7_20261125_120000.ddd", "DRV7", NOW, b"\x76" * 64, NOW)
        await tachograph.store_device_file(session, files, provider_id, device_id, download)

    run_in_db(server.settings, store_download)
    assert statuses(tenant, device_id) == {
        "snapshot_request": "answered",
        "tachograph_request": "answered",
    }
