"""The drivers' step over generated reading sequences, on a real database: a device whose
older readings arrive late (its step rewound and given them again, as the runner does) ends
with the same assignments as a device that sent everything in order, in any chunks."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RunningServer, Tenant, make_tenant
from fleetplane.core.db import create_system_engine, session_factory, writer_session
from fleetplane.drivers import service as drivers
from fleetplane.drivers.models import DriverAssignment
from fleetplane.drivers.processor import DriverKeyStep
from fleetplane.steps.contract import DeviceMessages, StepDevice
from fleetplane.telemetry import Message

START = datetime(2026, 11, 1, tzinfo=UTC)
CODES = {"A": "0A", "B": "0B", "X": "0C"}  # X: a code of no driver

Reading = str | None


def message(index: int, reading: Reading) -> Message:
    at = START + timedelta(minutes=index)
    params: dict[str, Any] = {"fuel": 40.0}
    if reading is not None:
        params["driver_key"] = CODES[reading]
    return Message(device_time=at, received_at=at, inputs=0, params=params)


@pytest.fixture(scope="module")
def fleet(server: RunningServer) -> Tenant:
    tenant = make_tenant(server, "Recomputation provider", customers=1)
    api = tenant.module_api(0)
    for name in ("A", "B"):
        body = {"name": name, "key_codes": [CODES[name]]}
        assert api.post("/module/drivers", json=body).status_code == 201
    return tenant


class Devices:
    """Devices of the fleet's customer, and the step run on them in the server's database."""

    def __init__(self, server: RunningServer, tenant: Tenant) -> None:
        self.server = server
        self.tenant = tenant

    def new(self, manual: tuple[int, int] | None) -> StepDevice:
        body = self.tenant.device_body(customer_id=self.tenant.customers[0]["id"])
        device = self.tenant.api.post("/api/devices", json=body).json()
        if manual is not None:
            drivers_ = self.tenant.module_api(0).get("/module/drivers").json()["items"]
            start, end = (START + timedelta(minutes=m, seconds=30) for m in manual)
            response = self.tenant.module_api(0).post(
                "/module/drivers/assignments",
                json={
                    "driver_id": drivers_[0]["id"],
                    "device_id": device["id"],
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                },
            )
            assert response.status_code == 201, response.text
        return StepDevice(device["id"], 0, self.tenant.provider_id, device["customer_id"])

    def run(self, work: Any) -> Any:
        async def in_engine() -> Any:
            engine = create_system_engine(self.server.settings)
            try:
                return await work(session_factory(engine))
            finally:
                await engine.dispose()

        return asyncio.run(in_engine())

    def process(self, device: StepDevice, messages: list[Message]) -> None:
        async def work(sessions: Any) -> None:
            async with writer_session(sessions) as session:
                await DriverKeyStep().process(session, [DeviceMessages(device, messages)])

        self.run(work)

    def rewind(self, device: StepDevice, from_time: datetime) -> None:
        async def work(sessions: Any) -> None:
            async with writer_session(sessions) as session:
                await DriverKeyStep().rewind(session, device, from_time)

        self.run(work)

    def assignments(self, device: StepDevice) -> list[tuple[Any, ...]]:
        async def work(sessions: Any) -> list[tuple[Any, ...]]:
            async with writer_session(sessions) as session:
                statement = drivers.assignments_query(
                    device.provider_id, device.customer_id or "", device_id=device.id
                ).order_by(DriverAssignment.started_at)
                rows = await session.execute(statement)
                return [(r.driver_name, r.started_at, r.ended_at, r.source) for r in rows]

        return self.run(work)


readings = st.lists(st.sampled_from([None, "A", "B", "X"]), min_size=1, max_size=20)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sequence=readings,
    data=st.data(),
    manual=st.one_of(st.none(), st.tuples(st.integers(0, 10), st.integers(1, 10))),
)
def test_late_readings_give_what_readings_in_order_give(
    server: RunningServer, fleet: Tenant, sequence: list[Reading], data: Any, manual: Any
) -> None:
    devices_ = Devices(server, fleet)
    window = None if manual is None else (manual[0], manual[0] + manual[1])
    messages = [message(index, reading) for index, reading in enumerate(sequence)]
    in_order, late = devices_.new(window), devices_.new(window)
    # In order, in chunks of any size.
    cuts = sorted(data.draw(st.sets(st.integers(1, len(messages)), max_size=3)) | {len(messages)})
    previous = 0
    for cut in cuts:
        devices_.process(in_order, messages[previous:cut])
        previous = cut
    # Some readings arrive late: the others first, then the late ones, the step rewound to
    # the earliest of them and given every message from there again (as the runner does).
    late_ones = data.draw(st.sets(st.integers(0, len(messages) - 1)))
    devices_.process(late, [m for i, m in enumerate(messages) if i not in late_ones])
    if late_ones:
        since = messages[min(late_ones)].device_time
        devices_.rewind(late, since)
        devices_.process(late, [m for m in messages if m.device_time >= since])
    assert devices_.assignments(late) == devices_.assignments(in_order)
