"""The delivery of the automations' actions over real sockets: signed webhooks to an HTTP
receiver on loopback, retries with back-off and their log, receivers that are dead or never
answer (while devices are still acknowledged at once), e-mail through a real SMTP server, and
commands queued for the device."""

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from conftest import (
    RunningServer,
    Tenant,
    connect_when_listening,
    create_channel,
    free_port,
    fresh_database,
    make_tenant,
    run_in_server,
    server_with,
    wialon_data,
)
from fleetplane.config import Settings
from fleetplane.core.db import system_session
from fleetplane.core.ids import new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.ingest.protocols.wialon_ips import crc_text
from fleetplane.notifications import service as notifications
from fleetplane.notifications.delivery import (
    AttemptFailed,
    Claimed,
    DeliveryWorker,
    pinned_to_public_address,
)
from fleetplane.runtime import Runtime
from operations import store_automation
from steps.test_pipeline_steps import wait_until

SECRET = "whsec_0123456789abcdef"
MAX_ATTEMPTS = 3


class Receiver:
    """An HTTP server on loopback: each POST is kept (headers, raw body) and answered with the
    next of `statuses`, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.received.append((headers, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fleet"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """What an SMTP server on loopback received."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def delivering(
    backend: str, tmp_path_factory: pytest.TempPathFactory, mailbox: tuple[Mailbox, int]
) -> Iterator[tuple[RunningServer, Tenant]]:
    """A server of its own whose deliveries retry within a second, and its tenant."""
    path = tmp_path_factory.mktemp("delivery")
    with (
        fresh_database(backend, path) as url,
        server_with(
            url,
            path,
            delivery_timeout_seconds=1.0,
            delivery_retry_seconds=0.1,
            delivery_retry_max_seconds=0.4,
            delivery_max_attempts=MAX_ATTEMPTS,
            delivery_poll_seconds=0.2,
            smtp_url=f"smtp://127.0.0.1:{mailbox[1]}",
            smtp_from="alerts@fleet.example",
        ) as running,
    ):
        yield running, make_tenant(running)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def fire(
    running: RunningServer,
    tenant: Tenant,
    automation_id: str,
    actions: list[dict[str, Any]],
    *,
    device: bool = True,
    customer_index: int = 0,
) -> str:
    """Records a firing of the automation in the server's process, as the evaluation step
    would (its notices reach the server's hub); the notification's id."""
    customer_id = tenant.customers[customer_index]["id"]
    device_id = tenant.devices[customer_id][0]["id"] if device else None
    firing = notifications.Firing(
        automation_id=automation_id,
        provider_id=tenant.provider_id,
        customer_id=customer_id,
        device_id=device_id,
        type="speeding",
        time=datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC),
        position={"lat": 56.9496, "lon": 24.1052, "speed": 104.0, "course": 90},
        data={"speed": 104.0, "threshold": 90},
        actions=actions,
    )

    async def work(runtime: Runtime) -> list[str]:
        async with system_session(runtime.system_sessions) as session:
            return await notifications.record(session, [firing])

    return run_in_server(running, work)[0]


def deliveries_of(tenant: Tenant, notification_id: str, customer_index: int = 0) -> list[Any]:
    response = tenant.module_api(customer_index).get("/module/automations/notifications")
    assert response.status_code == 200, response.text
    found = [item for item in response.json()["items"] if item["id"] == notification_id]
    assert len(found) == 1, response.json()
    return found[0]["deliveries"]


def settled(tenant: Tenant, notification_id: str) -> list[Any]:
    """The attempts once no delivery of the notification is pending any more."""

    def done() -> list[Any]:
        log = deliveries_of(tenant, notification_id)
        return [] if any(a["delivery_status"] == "pending" for a in log) else log

    return wait_until(done, f"the deliveries of {notification_id} ended")


def verify(secret: str, header: str, body: bytes) -> int:
    """What a receiver does: checks `x-platform-signature` and gives its time."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(fields["v1"], expected.hexdigest()), header
    return int(fields["t"])


def test_a_webhook_is_posted_signed_with_the_automations_secret(
    delivering: tuple[RunningServer, Tenant], receiver: Receiver
) -> None:
    running, tenant = delivering
    automation_id = store_automation(tenant, [], secret=SECRET)
    notification_id = fire(
        running, tenant, automation_id, [{"type": "webhook", "url": receiver.url}]
    )
    wait_until(lambda: receiver.received, "the webhook arrived")
    headers, body = receiver.received[0]
    assert abs(verify(SECRET, headers["x-platform-signature"], body) - time.time()) < 60
    assert headers["content-type"] == "application/json"
    assert headers["x-platform-event-id"] == notification_id
    assert headers["user-agent"].startswith("Fleetplane")
    customer_id = tenant.customers[0]["id"]
    device = tenant.devices[customer_id][0]
    assert json.loads(body) == {
        "id": notification_id,
        "type": "speeding",
        "time": "2026-03-01T12:30:05Z",
        "automation_id": automation_id,
        "customer_id": customer_id,
        "device": {"id": device["id"], "name": device["name"], "unique_id": device["unique_id"]},
        "position": {"lat": 56.9496, "lon": 24.1052, "speed": 104.0, "course": 90},
        "data": {"speed": 104.0, "threshold": 90},
    }
    with pytest.raises(AssertionError):  # another secret does not verify
        verify("whsec_other", headers["x-platform-signature"], body)
    [attempt] = settled(tenant, notification_id)
    assert attempt["action"] == "webhook" and attempt["attempt"] == 1
    assert attempt["status"] == attempt["delivery_status"] == "delivered"
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert attempt["latency_ms"] >= 0 and attempt["at"]


def test_a_failing_receiver_gets_the_event_on_a_later_attempt(
    delivering: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = delivering
    receiver = Receiver(statuses=(500, 500))
    try:
        automation_id = store_automation(tenant, [], secret=SECRET)
        notification_id = fire(
            running, tenant, automation_id, [{"type": "webhook", "url": receiver.url}]
        )
        log = settled(tenant, notification_id)
        assert len(receiver.received) == 3
        ids = {headers["x-platform-event-id"] for headers, _ in receiver.received}
        assert ids == {notification_id}  # the same event each time: a receiver can drop repeats
        for headers, body in receiver.received:
            verify(SECRET, headers["x-platform-signature"], body)
    finally:
        receiver.close()
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert [a["status"] for a in log] == ["failed", "failed", "delivered"]
    assert [a["error"] for a in log] == ["HTTP 500", "HTTP 500", None]
    assert {a["delivery_status"] for a in log} == {"delivered"}
    times = [datetime.fromisoformat(a["at"]) for a in log]
    assert times == sorted(times)


def test_unreachable_receivers_are_given_up_after_the_last_attempt(
    delivering: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = delivering
    automation_id = store_automation(tenant, [])
    actions = [
        {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/nobody"},
        {"type": "webhook", "url": "ftp://files.example/hook"},
        {"type": "webhook", "url": "http://127.0.0.1:1/"},
    ]
    log = settled(tenant, fire(running, tenant, automation_id, actions))
    dead = [a for a in log if a["status_code"] is None and "connection failed" in a["error"]]
    assert [a["attempt"] for a in dead] == [1, 2, 3, 1, 2, 3]
    refused = [a for a in log if a["error"].startswith("the webhook's url is not")]
    assert len(refused) == 1 and refused[0]["attempt"] == 1  # never tried again
    assert {(a["status"], a["delivery_status"]) for a in log} == {("failed", "failed")}
    assert all(len(a["error"]) <= 500 and "Traceback" not in a["error"] for a in log)


def acknowledged(port: int, unique_id: str, count: int, first_second: int) -> int:
    """Sends `count` Wialon IPS data packets over one connection; how many were answered
    `#AD#1`."""
    acks = 0
    with connect_when_listening(port) as sock, sock.makefile("rwb") as link:
        sock.settimeout(30)
        link.write(f"#L#2.0;{unique_id};NA;".encode())
        link.write(crc_text(f"2.0;{unique_id};NA;".encode()).encode() + b"\r\n")
        link.flush()
        assert link.readline() == b"#AL#1\r\n"
        for n in range(count):
            at = datetime.fromtimestamp(first_second + n, UTC)
            body = f"{at:%d%m%y;%H%M%S};5656.9760;N;02406.3120;E;40;90;12;9;0.9;1;0;NA;NA;"
            link.write(wialon_data(body))
            link.flush()
            acks += link.readline() == b"#AD#1\r\n"
    return acks


def test_dead_receivers_do_not_slow_the_intake(
    delivering: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = delivering
    channel = create_channel(tenant.api, enabled=True)
    device_body = tenant.device_body(
        channel_id=channel["id"], customer_id=tenant.customers[0]["id"]
    )
    unique_id = tenant.api.post("/api/devices", json=device_body).json()["unique_id"]
    messages = 150
    # Without the dead receivers: every message acknowledged.
    assert acknowledged(channel["port"], unique_id, messages, 1_780_000_000) == messages

    # A port with nothing listening, and one that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    try:
        automation_id = store_automation(tenant, [])
        actions = [
            {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/"},
            {"type": "webhook", "url": f"http://127.0.0.1:{silent.getsockname()[1]}/"},
        ]
        fired = [fire(running, tenant, automation_id, actions) for _ in range(12)]
        wait_until(
            lambda: any(a["status"] == "failed" for a in deliveries_of(tenant, fired[-1])),
            "the deliveries are failing",
        )
        # While they are being tried and tried again: every message acknowledged still.
        assert acknowledged(channel["port"], unique_id, messages, 1_780_001_000) == messages
        busy = [deliveries_of(tenant, notification_id) for notification_id in fired]
        assert any(a["delivery_status"] == "pending" for log in busy for a in log)
        logs = [settled(tenant, notification_id) for notification_id in fired]
    finally:
        silent.close()
    errors = {a["error"] for log in logs for a in log}
    assert "no answer within 1 s" in errors
    assert any(error.startswith("connection failed") for error in errors)
    assert all(len(log) == 2 * MAX_ATTEMPTS for log in logs)


def test_an_email_goes_through_the_smtp_server(
    delivering: tuple[RunningServer, Tenant], mailbox: tuple[Mailbox, int]
) -> None:
    running, tenant = delivering
    box, _ = mailbox
    automation_id = store_automation(tenant, [], name="Speed over 90")
    to = ["ops@fleet.example", "night@fleet.example"]
    notification_id = fire(running, tenant, automation_id, [{"type": "email", "to": to}])
    [attempt] = settled(tenant, notification_id)
    assert attempt["action"] == "email" and attempt["status"] == "delivered", attempt
    [envelope] = [e for e in box.envelopes if notification_id.encode() in (e.content or b"")]
    assert envelope.mail_from == "alerts@fleet.example"
    assert envelope.rcpt_tos == to
    assert isinstance(envelope.content, bytes)
    message: Message = message_from_bytes(envelope.content)
    device = tenant.devices[tenant.customers[0]["id"]][0]
    assert (
        message["Subject"] == f"Speed over 90: speeding on {device['name']} ({device['unique_id']})"
    )
    assert message["To"] == ", ".join(to)
    text = message.get_payload(decode=True)
    assert isinstance(text, bytes)
    for shown in (
        "Speed over 90",
        "speeding",
        "2026-03-01T12:30:05Z",
        "lat 56.9496",
        '"threshold":90',
    ):
        assert shown in text.decode(), text


async def test_without_an_smtp_server_an_email_fails_at_once() -> None:
    """No `FLEETPLANE_SMTP_URL`: the attempt fails, with a reason, and is not to be retried."""
    worker = DeliveryWorker(None, Settings(smtp_url=None), rules_of=None)  # type: ignore[arg-type]
    claimed = Claimed(
        id=new_id("dlv"),
        provider_id="prv",
        customer_id="cus",
        action={"type": "email", "to": "ops@fleet.example"},
        attempts=0,
        notification={"id": "ntf", "automation_id": None, "device_id": None, "type": "test",
                      "time": utcnow(), "position": None, "data": {}},
        rule=None,
        device=None,
    )  # fmt: skip
    outcome = await worker._timed(worker._send_email(claimed))
    assert not outcome.delivered and not outcome.retry
    assert outcome.error == "no SMTP server is configured (FLEETPLANE_SMTP_URL)"
    with pytest.raises(AttemptFailed):
        await worker._send_email(claimed)


def test_a_command_action_queues_the_command_for_the_device(
    delivering: tuple[RunningServer, Tenant],
) -> None:
    running, tenant = delivering
    automation_id = store_automation(tenant, [])
    actions = [
        {"type": "command", "command": {"type": "driver_message", "text": "Slow down"}},
        {"type": "command", "command": "SETSPEED 90"},
        {"type": "command", "command": {"type": "snapshot_request", "text": "not allowed"}},
    ]
    log = settled(tenant, fire(running, tenant, automation_id, actions))
    assert [(a["status"], a["attempt"]) for a in log] == [
        ("delivered", 1),
        ("delivered", 1),
        ("failed", 1),
    ]
    assert log[2]["error"].startswith("the command is not one a device can be sent")
    device_id = tenant.devices[tenant.customers[0]["id"]][0]["id"]
    response = tenant.module_api(0).get(f"/module/devices/{device_id}/commands")
    assert response.status_code == 200, response.text
    queued = [(c["type"], c["text"], c["status"]) for c in response.json()["items"]]
    assert ("driver_message", "Slow down", "queued") in queued
    assert ("raw", "SETSPEED 90", "queued") in queued
    without_device = fire(running, tenant, automation_id, actions[:1], device=False)
    [attempt] = settled(tenant, without_device)
    assert attempt["status"] == "failed" and attempt["error"] == (
        "the notification has no device to command"
    )


def test_the_test_endpoint_delivers_a_sample_event(
    delivering: tuple[RunningServer, Tenant], receiver: Receiver
) -> None:
    _, tenant = delivering
    automation_id = store_automation(
        tenant, [{"type": "webhook", "url": receiver.url}, {"type": "notification"}], secret=SECRET
    )
    response = tenant.module_api(0).post(f"/module/automations/{automation_id}/test")
    assert response.status_code == 202, response.text
    notification_id = response.json()["notification_id"]
    wait_until(lambda: receiver.received, "the test webhook arrived")
    headers, body = receiver.received[0]
    verify(SECRET, headers["x-platform-signature"], body)
    event = json.loads(body)
    device = tenant.devices[tenant.customers[0]["id"]][0]  # the customer's first device
    assert event["id"] == notification_id and event["type"] == "test"
    assert event["device"]["id"] == device["id"] and event["data"]["test"] is True


def test_webhooks_to_addresses_that_are_not_public_are_refused_unless_allowed(
    backend: str, tmp_path: Path, receiver: Receiver
) -> None:
    """By default a rule cannot make the server call its own host or network: the attempt
    fails once, with the reason, and the receiver on loopback gets nothing."""
    with (
        fresh_database(backend, tmp_path) as url,
        server_with(url, tmp_path, webhook_private_addresses=False) as running,
    ):
        tenant = make_tenant(running)
        automation_id = store_automation(tenant, [])
        local = receiver.url.replace("127.0.0.1", "localhost")
        actions = [{"type": "webhook", "url": receiver.url}, {"type": "webhook", "url": local}]
        log = settled(tenant, fire(running, tenant, automation_id, actions))
    assert [(a["attempt"], a["status"]) for a in log] == [(1, "failed"), (1, "failed")]
    assert all("is not a public address" in a["error"] for a in log), log
    assert receiver.received == []


async def test_a_webhook_goes_to_the_public_address_its_host_was_checked_at() -> None:
    """The request is sent to the address checked (with the name in `host` and as the TLS
    server name), so a second lookup that answers a private address is never made."""
    parts = urlsplit("https://93.184.215.14:8443/hooks/fleet?x=1")
    url, host, extensions = await pinned_to_public_address(parts)
    assert (url, host, extensions) == (
        "https://93.184.215.14:8443/hooks/fleet?x=1",
        "93.184.215.14:8443",
        {"sni_hostname": "93.184.215.14"},
    )
    url, host, _ = await pinned_to_public_address(urlsplit("http://[2606:4700::1111]/h"))
    assert (url, host) == ("http://[2606:4700::1111]/h", "2606:4700::1111")
    for private in ("http://10.1.2.3/h", "http://[::1]:8080/h", "http://169.254.169.254/"):
        with pytest.raises(AttemptFailed) as refused:
            await pinned_to_public_address(urlsplit(private))
        assert not refused.value.retry
