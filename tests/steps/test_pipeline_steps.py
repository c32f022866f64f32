"""Pipeline steps run after the durable write (#8), over a real Wialon IPS listener and a real
database: a failing step neither delays nor blocks acknowledgements and is reported; a restart
in the middle of a step neither loses nor repeats its output; late data rewinds a step.

The steps here are the tests' own, given to the app factory as any registered step would be
run: each writes one row per message it takes in to a table of its own."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import (
    RunningServer,
    Tenant,
    create_channel,
    fresh_database,
    make_tenant,
    run_in_db,
    server_with,
)
from fleetplane.core.db import UTCDateTime, create_engine
from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.messages import service as messages
from fleetplane.migrations.rls import SYSTEM_ROLE
from fleetplane.steps.contract import DeviceMessages, HandOver, StepDevice
from fleetplane.steps.models import StepProgress
from fleetplane.steps.runner import StepRunner
from fleetplane.telemetry import Message
from ingest.test_wialon_tcp_server import Tracker as SocketTracker

OUTPUT = sa.Table(
    "test_step_output",
    sa.MetaData(),
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(40), nullable=False),
    sa.Column("device_time", UTCDateTime(), nullable=False),
)
IMEI = "354330030000077"
# Recent whole seconds, as devices send them (old enough for no clock check to mind).
START = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0)
WAIT_SECONDS = 30.0
FAST_RETRIES = {
    "step_retry_seconds": 0.05,
    "step_retry_max_seconds": 0.2,
    "step_poll_seconds": 0.2,
    "step_interval_seconds": 0.02,
}


class RecordingStep:
    """Writes (step, device, time) for every message it takes in; a rewind deletes the rows
    from the rewound time on. `failing` makes every batch raise; `hang` makes it stop in the
    middle of a batch, after writing its rows, until the process ends."""

    reads_filtered = False

    def __init__(self, name: str, *, failing: bool = False) -> None:
        self.name = name
        self.failing = failing
        self.hang = False
        self.hanging = threading.Event()
        self.rewinds: list[tuple[str, datetime]] = []
        self.given: list[Message] = []
        self.follows_on: list[tuple[datetime, bool]] = []  # (first time, follows_on) by round

    async def process(self, session: AsyncSession, batches: Sequence[DeviceMessages]) -> None:
        if self.failing:
            raise RuntimeError(f"{self.name} is broken")
        rows = [
            {"step": self.name, "device_id": batch.device.id, "device_time": m.device_time}
            for batch in batches
            for m in batch.messages
        ]
        self.given += [m for batch in batches for m in batch.messages]
        self.follows_on += [(batch.messages[0].device_time, batch.follows_on) for batch in batches]
        await session.execute(OUTPUT.insert(), rows)
        if self.hang:
            self.hanging.set()
            await asyncio.sleep(3600)

    async def rewind(
        self, session: AsyncSession, device: StepDevice, from_time: datetime
    ) -> datetime:
        self.rewinds.append((device.id, from_time))
        await session.execute(
            OUTPUT.delete().where(
                OUTPUT.c.step == self.name,
                OUTPUT.c.device_id == device.id,
                OUTPUT.c.device_time >= from_time,
            )
        )
        return from_time


class Tracker(SocketTracker):
    """A Wialon IPS 2.0 device on a real socket, logged in; every packet waits for its answer."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.acked = 0
        assert self.ask("L", f"2.0;{IMEI};NA") == "#AL#1"

    def ask(self, kind: str, content: str, separator: str = ";") -> str:  # a packet, not bytes
        covered = (content + separator).encode()
        return super().ask(f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n")

    def send(self, times: Sequence[datetime]) -> None:
        """One `#D#` per message (a black box `#B#` when given several); checks the answers."""
        if len(times) == 1:
            assert self.ask("D", _body(times[0])) == "#AD#1"
        else:
            answer = self.ask("B", "|".join(_body(t) for t in times), "|")
            assert answer == f"#AB#{len(times)}"
        self.acked += len(times)


def _body(at: datetime) -> str:
    return f"{at:%d%m%y;%H%M%S};5544.6025;N;03739.6834;E;10;20;130;9;0.9;0;0;NA;NA;fuel:2:40.5"


def times(first: int, count: int) -> list[datetime]:
    return [START + timedelta(seconds=10 * (first + n)) for n in range(count)]


@dataclass
class Platform:
    server: RunningServer
    tenant: Tenant
    port: int
    device_id: str


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    with fresh_database(backend, tmp_path) as url:
        yield url


@contextmanager
def platform(url: str, tmp_path: Path, steps: Sequence[RecordingStep]) -> Iterator[Platform]:
    """A server with `steps` on `url`; its provider, a listening channel and one device (made
    on the first start, found again on the next)."""
    with server_with(url, tmp_path / "data", steps=steps, **FAST_RETRIES) as running:
        _create_output_table(running)
        found = run_in_db(running.settings, _existing_device)
        if found is None:
            tenant = make_tenant(running, customers=1)
            channel = create_channel(tenant.api, enabled=True)
            body = tenant.device_body(channel_id=channel["id"], unique_id=IMEI)
            device = tenant.api.post("/api/devices", json=body)
            assert device.status_code == 201, device.text
            yield Platform(running, tenant, channel["port"], device.json()["id"])
        else:
            device_id, port = found
            yield Platform(running, None, port, device_id)  # type: ignore[arg-type]


async def _existing_device(session: AsyncSession) -> tuple[str, int] | None:
    row = (
        await session.execute(
            sa.text(
                "SELECT d.id, c.port FROM devices d JOIN channels c ON c.id = d.channel_id"
                " WHERE d.unique_id = :imei"
            ),
            {"imei": IMEI},
        )
    ).first()
    return None if row is None else (row[0], row[1])


def _create_output_table(server: RunningServer) -> None:
    async def create() -> None:
        engine = create_engine(server.settings, as_app_role=False)  # the tables' owner
        try:
            async with engine.begin() as connection:
                await connection.run_sync(OUTPUT.metadata.create_all)
                if connection.dialect.name == "postgresql":
                    await connection.execute(
                        sa.text(f"GRANT ALL ON {OUTPUT.name} TO {SYSTEM_ROLE}")
                    )
        finally:
            await engine.dispose()

    asyncio.run(create())


def output(server: RunningServer, step: str) -> list[datetime]:
    async def read(session: AsyncSession) -> list[datetime]:
        statement = (
            sa.select(OUTPUT.c.device_time)
            .where(OUTPUT.c.step == step)
            .order_by(OUTPUT.c.device_time)
        )
        return list((await session.execute(statement)).scalars())

    return run_in_db(server.settings, read)


def mark_of(server: RunningServer, step: str) -> datetime | None:
    async def read(session: AsyncSession) -> datetime | None:
        statement = sa.select(StepProgress.mark).where(StepProgress.step == step)
        return (await session.execute(statement)).scalar_one_or_none()

    return run_in_db(server.settings, read)


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {WAIT_SECONDS} s: {what}")
        time.sleep(0.05)


def progress(tenant: Tenant, **query: str) -> list[dict[str, Any]]:
    response = tenant.api.get("/api/pipeline/steps", params=query)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_failing_step_neither_delays_nor_blocks_acknowledgements(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = RecordingStep("broken", failing=True)
    healthy = RecordingStep("healthy")
    caplog.set_level(logging.ERROR, logger="fleetplane.steps")
    with database(backend, tmp_path) as url, platform(url, tmp_path, [broken, healthy]) as fleet:
        tracker = Tracker(fleet.port)
        try:
            sent = times(0, 30)
            for at in sent[:20]:
                tracker.send([at])  # each answered, while the broken step keeps raising
            tracker.send(sent[20:])
            wait_until(lambda: output(fleet.server, "healthy") == sent, "the healthy step ran")
            failing = wait_until(
                lambda: progress(fleet.tenant, step="broken", status="failing"),
                "the broken step is reported",
            )
            more = times(30, 10)
            for at in more:
                tracker.send([at])
            assert tracker.acked == len(sent) + len(more)
        finally:
            tracker.close()
        assert [item["device_id"] for item in failing] == [fleet.device_id]
        assert failing[0]["attempts"] >= 1
        assert "RuntimeError: broken is broken" in failing[0]["last_error"]
        assert failing[0]["retry_at"] is not None
        assert output(fleet.server, "broken") == []
        logged = [r for r in caplog.records if r.name == "fleetplane.steps"]
        assert any("broken" in r.getMessage() and fleet.device_id in r.getMessage() for r in logged)
        # Another provider sees none of it.
        other = make_tenant(fleet.server, "Other provider", customers=0)
        assert progress(other) == []

        broken.failing = False  # fixed: it catches up from where it was
        everything = sent + more
        wait_until(lambda: output(fleet.server, "broken") == everything, "the fixed step caught up")
        wait_until(lambda: output(fleet.server, "healthy") == everything, "the healthy step too")
        mark = everything[-1].isoformat().replace("+00:00", "Z")
        ours = ("broken", "healthy")  # beside the registered steps

        def both_well() -> list[dict[str, Any]]:
            items = [
                item
                for item in progress(fleet.tenant, device_id=fleet.device_id)
                if item["status"] == "ok" and item["mark"] == mark and item["step"] in ours
            ]
            return items if len(items) == len(ours) else []

        items = wait_until(both_well, "both steps are well and at the newest message")
        assert sorted(item["step"] for item in items) == ["broken", "healthy"]
        assert all(item["attempts"] == 0 and item["last_error"] is None for item in items)


def test_a_restart_in_the_middle_of_a_step_neither_loses_nor_repeats_its_output(
    backend: str, tmp_path: Path
) -> None:
    first_run = RecordingStep("recorder")
    sent = times(0, 10)
    with database(backend, tmp_path) as url:
        with platform(url, tmp_path, [first_run]) as fleet:
            tracker = Tracker(fleet.port)
            try:
                tracker.send(sent[:5])
                wait_until(lambda: output(fleet.server, "recorder") == sent[:5], "first batch")
                first_run.hang = True  # the next batch stops after writing its rows
                tracker.send(sent[5:])
                assert first_run.hanging.wait(WAIT_SECONDS)
            finally:
                tracker.close()
        # Stopped in the middle of the batch: what it wrote of it was never committed.
        assert output(fleet.server, "recorder") == sent[:5]
        with platform(url, tmp_path, [RecordingStep("recorder")]) as fleet:
            wait_until(lambda: mark_of(fleet.server, "recorder") == sent[-1], "resumed")
            # Its output and its mark are committed together: this is all it will write.
            assert output(fleet.server, "recorder") == sent


def test_late_data_rewinds_a_step_for_its_device(backend: str, tmp_path: Path) -> None:
    recorder = RecordingStep("recorder")
    with database(backend, tmp_path) as url, platform(url, tmp_path, [recorder]) as fleet:
        tracker = Tracker(fleet.port)
        try:
            recent = times(100, 10)
            for at in recent:
                tracker.send([at])
            wait_until(lambda: output(fleet.server, "recorder") == recent, "caught up")
            assert recorder.rewinds == []
            # A black box from before the step's mark, and one message between its times.
            late = [*times(10, 3), START + timedelta(seconds=10 * 104 + 5)]
            tracker.send(late)
        finally:
            tracker.close()
        everything = sorted(recent + late)
        wait_until(lambda: output(fleet.server, "recorder") == everything, "recomputed")
        assert recorder.rewinds == [(fleet.device_id, late[0])]


@pytest.mark.parametrize("hand_over", ["messages", "rows"])
def test_steps_take_what_the_intake_just_stored_without_reading_it_back(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hand_over: HandOver
) -> None:
    """The steady state: the intake hands each batch it committed to the steps, which get the
    very messages storage would give back, and nothing is read back. As messages (the steps
    in the server's process) or as the rows it wrote (what goes to the steps process)."""
    monkeypatch.setattr(StepRunner, "hand_over", hand_over)
    reads = []
    read_back = messages.stored_since

    async def counted(*args: Any, **kwargs: Any) -> list[Message]:
        # By database: other test servers of this process run their registered steps too.
        reads.append((args[0].get_bind().url.database, kwargs))
        return await read_back(*args, **kwargs)

    monkeypatch.setattr(messages, "stored_since", counted)
    recorder = RecordingStep("recorder")
    sent = times(0, 12)
    with database(backend, tmp_path) as url, platform(url, tmp_path, [recorder]) as fleet:
        tracker = Tracker(fleet.port)
        try:
            for at in sent[:6]:
                tracker.send([at])
            # A black box out of order, with a time twice: storage keeps the first of the two.
            tracker.send([*reversed(sent[6:]), sent[8]])
            wait_until(lambda: output(fleet.server, "recorder") == sent, "the step ran")
        finally:
            tracker.close()
        ours = make_url(fleet.server.settings.database_url).database
        assert [kwargs for database, kwargs in reads if database == ours] == []
        seq = run_in_db(fleet.server.settings, _seq_of(fleet.device_id))
        stored = run_in_db(
            fleet.server.settings,
            lambda session: read_back(session, seq, after=None, until=sent[-1], limit=100),
        )
        assert recorder.given == stored


def _seq_of(device_id: str) -> Callable[[AsyncSession], Any]:
    async def read(session: AsyncSession) -> int:
        statement = sa.text("SELECT seq FROM devices WHERE id = :id")
        return (await session.execute(statement, {"id": device_id})).scalar_one()

    return read


def test_a_step_is_told_when_a_device_follows_on_from_its_last_round_here(
    backend: str, tmp_path: Path
) -> None:
    """What a step keeps in memory of a device is current only when the process gave it the
    device's previous messages in a committed round and nothing moved its progress since: not
    in the first round, not after a failed round, not after a rewind, not after a restart."""
    recorder = RecordingStep("recorder")
    sent = times(100, 8)
    with database(backend, tmp_path) as url:
        with platform(url, tmp_path, [recorder]) as fleet:
            tracker = Tracker(fleet.port)
            try:
                for index in (0, 1, 2):
                    tracker.send([sent[index]])
                    so_far = sent[: index + 1]
                    wait_until(lambda: output(fleet.server, "recorder") == so_far, "ran")  # noqa: B023
                recorder.failing = True
                tracker.send([sent[3]])
                wait_until(lambda: progress(fleet.tenant, status="failing"), "failed")
                recorder.failing = False
                wait_until(lambda: output(fleet.server, "recorder") == sent[:4], "retried")
                tracker.send([sent[4]])
                wait_until(lambda: output(fleet.server, "recorder") == sent[:5], "went on")
                late = times(10, 1)
                tracker.send(late)  # rewinds the step to the late message
                wait_until(lambda: output(fleet.server, "recorder")[0] == late[0], "rewound")
                tracker.send([sent[5]])
                everything = sorted([*late, *sent[:6]])
                wait_until(lambda: output(fleet.server, "recorder") == everything, "went on")
            finally:
                tracker.close()
        assert recorder.follows_on == [
            (sent[0], False),  # nothing of this device's in memory yet
            (sent[1], True),
            (sent[2], True),
            (sent[3], False),  # the retry after the failed round
            (sent[4], True),
            (late[0], False),  # a rewind
            (sent[5], True),
        ]
        restarted = RecordingStep("recorder")
        with platform(url, tmp_path, [restarted]) as fleet:
            tracker = Tracker(fleet.port)
            try:
                tracker.send([sent[6]])
                wait_until(lambda: restarted.follows_on, "ran after the restart")
            finally:
                tracker.close()
        assert restarted.follows_on == [(sent[6], False)]
