"""Key assignments made by the drivers' pipeline step, over the real Wialon IPS listener and a
real database: a tracker's `Ibutton` field (or a `driver_key` sensor) assigns and unassigns
drivers, and late black-box data is recomputed to the same result as data sent in order."""

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import (
    Api,
    RunningServer,
    Tenant,
    all_module_names,
    assert_problem,
    create_channel,
    fresh_database,
    make_tenant,
    server_with,
)
from fleetplane.ingest.protocols.wialon_ips import crc_text
from ingest.test_wialon_tcp_server import Tracker as SocketTracker

# Recent whole seconds, as devices send them (old enough for no clock check to mind).
START = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0)
WAIT_SECONDS = 30.0
ANNA, PETER, LATER = "01A2B3C4D5E6F708", "0000000000BEEF01", "0C0FFEE000000042"


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class Tracker(SocketTracker):
    """A Wialon IPS 2.0 device on a real socket, logged in; every packet waits for its answer."""

    def __init__(self, port: int, imei: str) -> None:
        super().__init__(port)
        assert self.ask("L", f"2.0;{imei};NA") == "#AL#1"

    def ask(self, kind: str, content: str, separator: str = ";") -> str:  # a packet, not bytes
        covered = (content + separator).encode()
        return super().ask(f"#{kind}#".encode() + covered + crc_text(covered).encode() + b"\r\n")

    def send(self, *readings: tuple[int, str | None]) -> None:
        """(seconds, key or None) each: one `#D#`, or a black box `#B#` for several."""
        bodies = [_body(at(seconds), key) for seconds, key in readings]
        if len(bodies) == 1:
            assert self.ask("D", bodies[0]) == "#AD#1"
        else:
            assert self.ask("B", "|".join(bodies), "|") == f"#AB#{len(bodies)}"

    def send_short(self, seconds: int) -> None:
        """A `#SD#` short packet: a position, no sensor data, so no key reading either."""
        moment = at(seconds)
        assert (
            self.ask("SD", f"{moment:%d%m%y;%H%M%S};5544.6025;N;03739.6834;E;0;0;130;9") == "#ASD#1"
        )

    def send_params(self, seconds: int, params: str, key: str | None = None) -> None:
        assert self.ask("D", _body(at(seconds), key, params)) == "#AD#1"


def _body(moment: datetime, key: str | None, params: str = "fuel:2:40.5") -> str:
    return (
        f"{moment:%d%m%y;%H%M%S};5544.6025;N;03739.6834;E;10;20;130;9;0.9;0;0;NA;"
        f"{key or 'NA'};{params}"
    )


class Fleet:
    """A customer of its own (all modules), with its devices on a listening channel."""

    _imei = 354330030100000

    def __init__(self, server: RunningServer, tenant: Tenant, channel: dict[str, Any]) -> None:
        self.server = server
        self.tenant = tenant
        self.channel_id = channel["id"]
        self.port = channel["port"]
        customer = tenant.api.post(
            "/api/customers", json={"name": "Fleet", "modules": all_module_names()}
        )
        assert customer.status_code == 201, customer.text
        self.api: Api = tenant.api.as_customer(customer.json()["id"])

    def device(self) -> tuple[str, str]:
        """A new device of the first customer: (id, IMEI)."""
        Fleet._imei += 1
        imei = str(Fleet._imei)
        body = self.tenant.device_body(
            channel_id=self.channel_id, unique_id=imei, customer_id=self.api.customer_id
        )
        response = self.tenant.api.post("/api/devices", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"], imei

    def driver(self, name: str, *codes: str) -> str:
        response = self.api.post("/module/drivers", json={"name": name, "key_codes": list(codes)})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def assignments(self, device_id: str) -> list[tuple[str, str | None, str | None, str]]:
        """(driver name, start, end, source) of the device's assignments."""
        response = self.api.get(
            "/module/drivers/assignments", params={"device_id": device_id, "limit": 1000}
        )
        assert response.status_code == 200, response.text
        return [
            (i["driver_name"], i["start"], i["end"], i["source"]) for i in response.json()["items"]
        ]

    def caught_up(self, device_id: str, seconds: int) -> bool:
        """The drivers step has taken in the device's messages up to this time."""
        response = self.tenant.api.get(
            "/api/pipeline/steps", params={"step": "drivers", "device_id": device_id}
        )
        items = response.json()["items"]
        return (
            bool(items) and items[0]["mark"] == rfc3339(at(seconds)) and items[0]["status"] == "ok"
        )


@pytest.fixture(scope="module")
def platform(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Tenant, dict[str, Any]]]:
    """A server whose pipeline steps run every 20 ms, a provider and a listening channel."""
    path = tmp_path_factory.mktemp("drivers")
    with (
        fresh_database(backend, path) as url,
        server_with(url, path, step_interval_seconds=0.02, step_poll_seconds=0.2) as running,
    ):
        tenant = make_tenant(running, "Drivers provider", customers=0)
        yield running, tenant, create_channel(tenant.api, enabled=True)


@pytest.fixture
def fleet(platform: tuple[RunningServer, Tenant, dict[str, Any]]) -> Fleet:
    return Fleet(*platform)


def wait_for(read: Callable[[], Any], expected: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while (seen := read()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {seen!r}, expected {expected!r}")
        time.sleep(0.05)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {WAIT_SECONDS} s: {what}")
        time.sleep(0.05)


def span(name: str, start: int, end: int | None, source: str = "key") -> tuple[Any, ...]:
    return (name, rfc3339(at(start)), rfc3339(None if end is None else at(end)), source)


def test_key_readings_assign_and_unassign_drivers(fleet: Fleet) -> None:
    device, imei = fleet.device()
    anna, _ = fleet.driver("Anna", ANNA), fleet.driver("Peteris", PETER.lower())
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send((0, None), (10, ANNA), (20, ANNA))
        tracker.send((30, ANNA.lower()))  # the same code, in another case
        tracker.send_short(35)  # no sensor data: no reading, nothing ends
        tracker.send((40, PETER), (50, PETER))
        tracker.send((60, "FFFF0000FFFF0000"))  # an unknown code ends the assignment
        tracker.send((70, ANNA))
        tracker.send((80, None))  # the key taken out
        tracker.send((90, LATER), (100, LATER))  # nobody's code, yet
        wait_until(lambda: fleet.caught_up(device, 100), "the unknown code taken in")
        fleet.driver("Latecomer", LATER)
        tracker.send((110, LATER), (120, LATER))  # counts from its next reading
        tracker.send_short(130)
        wait_until(lambda: fleet.caught_up(device, 130), "the step took in every message")
    finally:
        tracker.close()
    assert fleet.assignments(device) == [
        span("Anna", 10, 40),
        span("Peteris", 40, 60),
        span("Anna", 70, 80),
        span("Latecomer", 110, None),
    ]
    on_device = fleet.api.get("/module/drivers", params={"key_code": LATER}).json()["items"]
    assert on_device[0]["current_assignment"]["device_id"] == device
    assert fleet.api.get(f"/module/drivers/{anna}").json()["current_assignment"] is None


def test_a_driver_key_sensor_is_read_instead_of_the_ibutton_field(fleet: Fleet) -> None:
    device, imei = fleet.device()
    sensor = {"device_id": device, "name": "RFID reader", "type": "driver_key", "parameter": "rfid"}
    assert fleet.tenant.api.post("/api/sensors", json=sensor).status_code == 201
    fleet.driver("Card holder", "card-7")
    fleet.driver("Anna", ANNA)
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send_params(0, "rfid:3:CARD-7")
        tracker.send_params(10, "rfid:3:CARD-7,fuel:2:40.1", key=ANNA)  # Ibutton not read
        tracker.send_params(20, "fuel:2:40.0", key=ANNA)  # the sensor reads nothing: empty
        tracker.send_params(30, "rfid:1:77")  # a number is a code too: unknown here
        wait_until(lambda: fleet.caught_up(device, 30), "the step took in every message")
    finally:
        tracker.close()
    assert fleet.assignments(device) == [span("Card holder", 0, 20)]


# (seconds, key): a day of readings with driver changes, an unknown code and empty readers.
READINGS: list[tuple[int, str | None]] = [
    (0, None), (10, ANNA), (20, ANNA), (30, ANNA), (40, ANNA), (50, ANNA),
    (55, "BB00000000000001"), (60, ANNA), (80, ANNA),
    (100, ANNA), (105, None), (110, PETER), (120, None), (130, ANNA), (140, ANNA),
]  # fmt: skip
# Peteris by hand from 45 to 70: the key assignment going on is ended at 45, and the key
# assignment starting at 60 ends this one there.
MANUAL = (45, 70)
RECOMPUTED = [
    span("Anna", 10, 45),
    span("Peteris", 45, 60, "manual"),
    span("Anna", 60, 105),
    span("Peteris", 110, 120),
    span("Anna", 130, None),
]


def test_late_black_box_data_is_recomputed_as_if_sent_in_order(fleet: Fleet) -> None:
    in_order, in_order_imei = fleet.device()
    late, late_imei = fleet.device()
    fleet.driver("Anna", ANNA)
    peter = fleet.driver("Peteris", PETER)

    def assign_by_hand(device: str) -> None:
        start, end = (rfc3339(at(seconds)) for seconds in MANUAL)
        body = {"driver_id": peter, "device_id": device, "start": start, "end": end}
        response = fleet.api.post("/module/drivers/assignments", json=body)
        assert response.status_code == 201, response.text

    assign_by_hand(in_order)
    tracker = Tracker(fleet.port, in_order_imei)
    try:
        tracker.send(*READINGS[:9])
        for reading in READINGS[9:]:
            tracker.send(reading)
    finally:
        tracker.close()
    wait_for(lambda: fleet.assignments(in_order), RECOMPUTED, "the device sending in order")

    tracker = Tracker(fleet.port, late_imei)
    try:
        live = [r for r in READINGS if r[0] >= 100 and r[0] != 105]
        for reading in live:
            tracker.send(reading)
        wait_until(lambda: fleet.caught_up(late, 140), "the live messages")
        assert fleet.assignments(late) == [
            span("Anna", 100, 110),
            span("Peteris", 110, 120),
            span("Anna", 130, None),
        ]
        assign_by_hand(late)
        # After reconnecting: what the tracker recorded while out of coverage.
        tracker.send(*[r for r in READINGS if r[0] < 100])
        before_the_last = [*RECOMPUTED[:2], span("Anna", 60, 110), *RECOMPUTED[3:]]
        wait_for(lambda: fleet.assignments(late), before_the_last, "the first black box")
        tracker.send((105, None), (106, None))  # a late reading between two live ones
    finally:
        tracker.close()
    wait_for(lambda: fleet.assignments(late), RECOMPUTED, "the second black box recomputed")
    assert fleet.assignments(late) == fleet.assignments(in_order)


def test_a_deleted_manual_assignment_gives_back_what_it_cut(fleet: Fleet) -> None:
    device, imei = fleet.device()
    fleet.driver("Anna", ANNA)
    peter = fleet.driver("Peteris", PETER)
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send((0, ANNA), (10, ANNA))
        wait_until(lambda: fleet.caught_up(device, 10), "the first readings")
        body = {"driver_id": peter, "device_id": device, "start": rfc3339(at(15))}
        manual = fleet.api.post("/module/drivers/assignments", json=body).json()["id"]
        assert fleet.assignments(device) == [
            span("Anna", 0, 15),
            span("Peteris", 15, None, "manual"),
        ]
        by_key = fleet.api.get("/module/drivers/assignments", params={"device_id": device})
        key_assignment = by_key.json()["items"][0]["id"]
        for refused in (
            fleet.api.delete(f"/module/drivers/assignments/{key_assignment}"),
            fleet.api.patch(f"/module/drivers/assignments/{key_assignment}", json={"end": None}),
        ):
            assert_problem(refused, 409, "conflict")
        tracker.send((20, ANNA))  # the same key still in: no change, the manual one stands
        wait_until(lambda: fleet.caught_up(device, 20), "the next reading")
        assert fleet.assignments(device) == [
            span("Anna", 0, 15),
            span("Peteris", 15, None, "manual"),
        ]
        assert fleet.api.delete(f"/module/drivers/assignments/{manual}").status_code == 204
        assert fleet.assignments(device) == [span("Anna", 0, None)]
        tracker.send((30, None))
        wait_until(lambda: fleet.caught_up(device, 30), "the key taken out")
    finally:
        tracker.close()
    assert fleet.assignments(device) == [span("Anna", 0, 30)]


def test_a_recomputation_takes_the_drivers_as_they_are_now(fleet: Fleet) -> None:
    """A deleted driver's assignments go with them and the others keep their times; once late
    data recomputes the device from before, the answer is as if the driver had never been."""
    device, imei = fleet.device()
    fleet.driver("Anna", ANNA)
    bob = fleet.driver("Bob", "B0B")
    peter = fleet.driver("Peteris")
    body = {"driver_id": peter, "device_id": device, "start": rfc3339(at(15)),
            "end": rfc3339(at(40))}  # fmt: skip
    assert fleet.api.post("/module/drivers/assignments", json=body).status_code == 201
    tracker = Tracker(fleet.port, imei)
    try:
        tracker.send((0, ANNA), (10, ANNA), (20, "b0b"), (30, "B0B"), (50, None))
        wait_until(lambda: fleet.caught_up(device, 50), "the readings")
        assert fleet.assignments(device) == [
            span("Anna", 0, 15),
            span("Peteris", 15, 20, "manual"),
            span("Bob", 20, 50),
        ]
        assert fleet.api.delete(f"/module/drivers/{bob}").status_code == 204
        assert fleet.assignments(device) == [span("Anna", 0, 15), span("Peteris", 15, 20, "manual")]
        tracker.send((18, "B0B"), (19, "B0B"))  # late, and now nobody's code
    finally:
        tracker.close()
    expected = [span("Anna", 0, 15), span("Peteris", 15, 40, "manual")]
    wait_for(lambda: fleet.assignments(device), expected, "recomputed without Bob")
