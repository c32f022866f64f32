"""Driver chat, photos and tachograph files over Wialon IPS: stored whole, then acknowledged."""

import asyncio
import hashlib
import os
from typing import Any

from sqlalchemy import select
from wialon_packets import image_header, tachograph_header, v2

from conftest import RunningServer, Tenant, connect_when_listening, create_channel
from fleetplane.core.db import run_platform_work
from fleetplane.messages.models import DriverChatMessage
from fleetplane.tachograph.models import TachographFile
from fleetplane.video.models import MediaFile


class Link:
    def __init__(self, port: int) -> None:
        self.sock = connect_when_listening(port)
        self.buffer = b""

    def send(self, data: bytes, answers: int = 1) -> list[str]:
        self.sock.sendall(data)
        lines: list[str] = []
        while len(lines) < answers:
            while b"\r\n" not in self.buffer:
                self.buffer += self.sock.recv(4096)
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
        return lines


def rows(server: RunningServer, model: Any, device_id: str) -> list[Any]:
    async def read(session: Any) -> list[Any]:
        statement = select(model).where(model.device_id == device_id)
        return list((await session.execute(statement)).scalars())

    return asyncio.run(run_platform_work(server.settings, read))


def test_chat_photo_and_tachograph_file(server: RunningServer, tenant: Tenant) -> None:
    channel = create_channel(tenant.api, enabled=True, transport="tcp")
    device = tenant.api.post(
        "/api/devices", json=tenant.device_body(channel_id=channel["id"], unique_id="CAM0001")
    ).json()
    customer_api = tenant.module_api(0)
    tenant.api.patch(
        f"/api/devices/{device['id']}", json={"customer_id": tenant.customers[0]["id"]}
    )
    commands = f"/module/devices/{device['id']}/commands"
    link = Link(channel["port"])
    photo = b"\xff\xd8\xff" + os.urandom(3000)
    ddd = os.urandom(1200)
    try:
        assert link.send(v2("L", "2.0;CAM0001;NA")) == ["#AL#1"]
        assert link.send(v2("M", "Arrived at the depot")) == ["#AM#1"]
        customer_api.post(commands, json={"type": "snapshot_request"})
        assert link.send(b"", 1) == ["#QI#"]
        first, second = photo[:2000], photo[2000:]
        assert link.send(image_header(len(first), 0, 1, first, "cab.jpg") + first) == ["#AI#0;1"]
        assert link.send(image_header(len(second), 1, 1, second, "cab.jpg") + second, 2) == [
            "#AI#1;1",
            "#AI#1",
        ]
        assert link.send(v2("IT", "251126;150000;DRV7;C1;0")) == ["#AIT#1"]
        assert link.send(tachograph_header("C1", len(ddd), 0, ddd) + ddd, 2) == [
            "#AT#0;1",
            "#AT#1",
        ]
    finally:
        link.sock.close()

    assert [c["status"] for c in customer_api.get(commands).json()["items"]] == ["answered"]
    [chat] = rows(server, DriverChatMessage, device["id"])
    assert chat.text == "Arrived at the depot"
    [media] = rows(server, MediaFile, device["id"])
    assert (media.name, media.content_type, media.size) == ("cab.jpg", "image/jpeg", len(photo))
    stored_photo = (server.settings.data_dir / "files" / media.path).read_bytes()
    assert stored_photo == photo and media.sha256 == hashlib.sha256(photo).hexdigest()
    [download] = rows(server, TachographFile, device["id"])
    assert download.name == "DRV7_20261125_150000.ddd" and download.driver_id == "DRV7"
    assert (server.settings.data_dir / "files" / download.path).read_bytes() == ddd
    tenant.api.patch(f"/api/channels/{channel['id']}", json={"enabled": False})
