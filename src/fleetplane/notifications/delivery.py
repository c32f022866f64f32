"""The delivery worker: carries out the outbox (`deliveries`) that recording a firing writes.

It runs in the server's process, beside the intake and never in its way: at most
`delivery_concurrency` deliveries at once, each attempt bounded by `delivery_timeout_seconds`,
and its database work in short transactions of its own (on SQLite, writer turns behind the
intake's, `core.db.writer_session`). Nothing is held open while a receiver is waited for.

A round claims the due `pending` deliveries (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so that
several processes can share the outbox) and leases them by moving their `next_attempt_at`
past the attempt's time limit, before anything is sent: a process that dies mid-attempt leaves
them to be tried again when the lease runs out. A delivery is therefore carried out at least
once; the webhook's event id (`x-platform-event-id`, the notification's id) lets a receiver
drop a repeat. Each attempt is recorded (`delivery_attempts`); a failed one is tried again
after a back-off doubling from `delivery_retry_seconds` up to `delivery_retry_max_seconds`,
and given up (`failed`) after `delivery_max_attempts`, or at once when trying again cannot
help (an address that is not http/https, no SMTP server configured, a command the device can
no longer be sent).

The worker looks at the outbox when a delivery is recorded (a `delivery` change notice, which
the steps process forwards to the server too), when a retry falls due, when one of its
deliveries ends, and every `delivery_poll_seconds` besides."""

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import aiosmtplib
import httpx
import orjson
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.audit.service import Actor
from fleetplane.commands import service as commands
from fleetplane.commands.schemas import CommandCreate, CommandType
from fleetplane.config import Settings
from fleetplane.core.changes import Change
from fleetplane.core.db import writer_session
from fleetplane.core.errors import ApiError
from fleetplane.core.ids import new_id
from fleetplane.core.timeutil import utcnow
from fleetplane.devices import service as devices
from fleetplane.notifications.models import Delivery, DeliveryAttempt, Notification
from fleetplane.notifications.service import DELIVERED, FAILED, PENDING

log = logging.getLogger("fleetplane.deliveries")

USER_AGENT = "Fleetplane-Webhooks/1.0"
SIGNATURE_HEADER = "x-platform-signature"
EVENT_ID_HEADER = "x-platform-event-id"
ERROR_LENGTH = 500  # delivery_attempts.error
# A claimed delivery is tried again by anyone only this long after its attempt's time limit.
LEASE_MARGIN_SECONDS = 60.0
# Who queues an automation's commands (the audit log's actor).
COMMAND_ACTOR = "automations"

# (name, webhook secret) of each automation found: the automations domain's, handed in.
RulesOf = Callable[[AsyncSession, Sequence[str]], Awaitable[Mapping[str, tuple[str, str]]]]
# Writes a just-queued command to its device's connection, if it is connected (the gateway's).
SendCommand = Callable[[commands.Command], None]


class AttemptFailed(Exception):
    """An attempt that did not deliver; `retry`: whether trying again could."""

    def __init__(self, error: str, *, status_code: int | None = None, retry: bool = True) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.retry = retry


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for one attempt, with what carrying it out needs."""

    id: str
    provider_id: str
    customer_id: str
    action: Mapping[str, Any]
    attempts: int  # made before this one
    notification: Mapping[str, Any]  # id, automation_id, device_id, type, time, position, data
    rule: tuple[str, str] | None  # (name, webhook secret); None once the automation is deleted
    device: tuple[str, str] | None  # (name, unique id)


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    retry: bool


def retry_delay(settings: Settings, attempt: int) -> float:
    """Seconds before the attempt after failed attempt number `attempt` (1 for the first)."""
    exponent = min(attempt - 1, 60)
    return min(settings.delivery_retry_seconds * 2.0**exponent, settings.delivery_retry_max_seconds)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `x-platform-signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_body(claimed: Claimed) -> bytes:
    notification = claimed.notification
    device = None
    if notification["device_id"] is not None:
        name, unique_id = claimed.device or (None, None)
        device = {"id": notification["device_id"], "name": name, "unique_id": unique_id}
    payload = {
        "id": notification["id"],
        "type": notification["type"],
        "time": notification["time"],
        "automation_id": notification["automation_id"],
        "customer_id": claimed.customer_id,
        "device": device,
        "position": notification["position"],
        "data": notification["data"],
    }
    return orjson.dumps(payload, option=orjson.OPT_UTC_Z)


class DeliveryWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        rules_of: RulesOf,
        send_command: SendCommand | None = None,
    ) -> None:
        """`sessions`: the system role's (the outbox of every tenant)."""
        self._sessions = sessions
        self._settings = settings
        self._rules_of = rules_of
        self._send_command = send_command
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    # --- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self._settings.delivery_timeout_seconds,
            limits=httpx.Limits(max_connections=self._settings.delivery_concurrency),
            headers={"user-agent": USER_AGENT},
        )
        self._loop_task = asyncio.create_task(self._run(), name="deliveries")

    async def stop(self) -> None:
        """Stops at once; deliveries cut short are tried again when their lease runs out."""
        tasks = [*self._running, *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def wake(self, _: Change | None = None) -> None:
        """Look at the outbox now (a `delivery` change notice: something was recorded)."""
        self._wakeup.set()

    # --- the rounds -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._settings.delivery_concurrency - len(self._running)
            next_due: datetime | None = None
            if free > 0:
                try:
                    claimed, next_due = await self._claim(free)
                except Exception:  # the database may be back next round
                    log.exception("claiming deliveries failed")
                    claimed = []
                for one in claimed:
                    task = asyncio.create_task(self._deliver(one), name=f"delivery-{one.id}")
                    self._running.add(task)
                    task.add_done_callback(self._finished)
            wait = self._settings.delivery_poll_seconds
            if next_due is not None:
                wait = min(wait, max((next_due - utcnow()).total_seconds(), 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wakeup.set()  # a slot is free

    async def _claim(self, limit: int) -> tuple[list[Claimed], datetime | None]:
        """Takes up to `limit` due deliveries and leases them; also when the next one not yet
        due falls due."""
        now = utcnow()
        lease_until = now + timedelta(
            seconds=self._settings.delivery_timeout_seconds + LEASE_MARGIN_SECONDS
        )
        pending = Delivery.status == PENDING
        statement = (
            select(
                Delivery.id,
                Delivery.provider_id,
                Delivery.customer_id,
                Delivery.action,
                Delivery.attempts,
                Notification.id.label("notification_id"),
                Notification.automation_id,
                Notification.device_id,
                Notification.type,
                Notification.time,
                Notification.position,
                Notification.data,
            )
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(pending, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(of=Delivery.__table__, skip_locked=True)  # PostgreSQL only
        )
        async with writer_session(self._sessions) as session:
            rows = (await session.execute(statement)).all()
            later = select(func.min(Delivery.next_attempt_at)).where(
                pending, Delivery.next_attempt_at > now
            )
            next_due: datetime | None = (await session.execute(later)).scalar_one()
            if not rows:
                return [], next_due
            rules = await self._rules_of(
                session, [row.automation_id for row in rows if row.automation_id is not None]
            )
            names = await devices.names_of(
                session, {row.device_id for row in rows if row.device_id is not None}
            )
            ids = [row.id for row in rows]
            # The lease: the first write, so on SQLite the writer turn starts only here.
            await session.execute(
                update(Delivery).where(Delivery.id.in_(ids)).values(next_attempt_at=lease_until)
            )
        claimed = [
            Claimed(
                id=row.id,
                provider_id=row.provider_id,
                customer_id=row.customer_id,
                action=row.action,
                attempts=row.attempts,
                notification={
                    "id": row.notification_id,
                    "automation_id": row.automation_id,
                    "device_id": row.device_id,
                    "type": row.type,
                    "time": row.time,
                    "position": row.position,
                    "data": row.data,
                },
                rule=rules.get(row.automation_id) if row.automation_id is not None else None,
                device=names.get(row.device_id) if row.device_id is not None else None,
            )
            for row in rows
        ]
        return claimed, next_due

    async def _deliver(self, claimed: Claimed) -> None:
        try:
            kind = claimed.action.get("type")
            outcome: Outcome | None = None
            if kind == "webhook":
                outcome = await self._timed(self._post_webhook(claimed))
            elif kind == "email":
                outcome = await self._timed(self._send_email(claimed))
            elif kind != "command":
                outcome = Outcome(False, None, 0, f"unknown action type {kind!r}", retry=False)
            await self._record(claimed, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # recorded nothing: tried again when the lease runs out
            log.exception("delivery %s failed unexpectedly", claimed.id)

    async def _timed(self, attempt: Awaitable[int | None]) -> Outcome:
        """Runs an attempt within the time limit: how it ended and how long it took."""
        limit = self._settings.delivery_timeout_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                status_code = await attempt
        except AttemptFailed as failed:
            return Outcome(
                False, failed.status_code, _ms_since(started), _short(str(failed)), failed.retry
            )
        except TimeoutError:
            return Outcome(False, None, _ms_since(started), f"no answer within {limit:g} s", True)
        except Exception as error:  # the receiver's or the network's: a failed attempt
            return Outcome(False, None, _ms_since(started), _describe(error), True)
        return Outcome(True, status_code, _ms_since(started), None, False)

    # --- the actions ----------------------------------------------------------------------

    async def _post_webhook(self, claimed: Claimed) -> int:
        url = str(claimed.action.get("url") or "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AttemptFailed("the webhook's url is not an http or https address", retry=False)
        if claimed.rule is None:
            raise AttemptFailed("the automation was deleted: nothing to sign with", retry=False)
        assert self._http is not None  # started
        body = webhook_body(claimed)
        headers = {
            "content-type": "application/json",
            EVENT_ID_HEADER: claimed.notification["id"],
            SIGNATURE_HEADER: signature(claimed.rule[1], int(time.time()), body),
        }
        extensions: dict[str, Any] = {}
        if not self._settings.webhook_private_addresses:
            url, headers["host"], extensions = await pinned_to_public_address(parts)
        # Streamed and closed unread: the answer's body is neither needed nor kept.
        async with self._http.stream(
            "POST", url, content=body, headers=headers, extensions=extensions
        ) as response:
            status_code = response.status_code
        if not 200 <= status_code < 300:
            raise AttemptFailed(f"HTTP {status_code}", status_code=status_code)
        return status_code

    async def _send_email(self, claimed: Claimed) -> None:
        settings = self._settings
        if not settings.smtp_url:
            raise AttemptFailed("no SMTP server is configured (FLEETPLANE_SMTP_URL)", retry=False)
        server = urlsplit(settings.smtp_url)
        if server.scheme not in ("smtp", "smtps") or not server.hostname:
            raise AttemptFailed(
                "FLEETPLANE_SMTP_URL is not an smtp:// or smtps:// address", retry=False
            )
        recipients = _recipients(claimed.action.get("to"))
        if not recipients:
            raise AttemptFailed("the e-mail action names no recipient", retry=False)
        tls = server.scheme == "smtps"
        await aiosmtplib.send(
            email_message(claimed, settings.smtp_from, recipients),
            hostname=server.hostname,
            port=server.port or (465 if tls else 25),
            username=unquote(server.username) if server.username else None,
            password=unquote(server.password) if server.password else None,
            use_tls=tls,
            start_tls=False if tls else settings.smtp_starttls,
            timeout=settings.delivery_timeout_seconds,
        )

    async def _queue_command(self, session: AsyncSession, claimed: Claimed) -> Outcome:
        """Queues the command in the transaction that records the attempt: queued once with
        the delivery marked delivered, or not at all."""
        started = time.perf_counter()
        try:
            device_id = claimed.notification["device_id"]
            if device_id is None:
                raise AttemptFailed("the notification has no device to command", retry=False)
            data = _command_body(claimed.action.get("command"))
            try:
                await devices.get_for_customer(
                    session, claimed.provider_id, claimed.customer_id, device_id
                )
            except ApiError:
                raise AttemptFailed("the device is no longer the customer's", retry=False) from None
            actor = Actor(provider_id=claimed.provider_id, system=COMMAND_ACTOR)
            command = await commands.create(session, actor, claimed.customer_id, device_id, data)
            if self._send_command is not None:
                self._send_command(command)
        except AttemptFailed as failed:
            return Outcome(False, None, _ms_since(started), _short(str(failed)), failed.retry)
        return Outcome(True, None, _ms_since(started), None, False)

    # --- the record -----------------------------------------------------------------------

    async def _record(self, claimed: Claimed, outcome: Outcome | None) -> None:
        """Records the attempt and what follows: delivered, tried again later, or given up.
        `outcome` None: a command, queued here."""
        async with writer_session(self._sessions) as session:
            if outcome is None:
                outcome = await self._queue_command(session, claimed)
            now = utcnow()
            attempt = claimed.attempts + 1
            status, next_attempt_at = DELIVERED, None
            if not outcome.delivered:
                status = FAILED
                if outcome.retry and attempt < self._settings.delivery_max_attempts:
                    status = PENDING
                    next_attempt_at = now + timedelta(seconds=retry_delay(self._settings, attempt))
            await session.execute(
                insert(DeliveryAttempt).values(
                    id=new_id("dla"),
                    provider_id=claimed.provider_id,
                    customer_id=claimed.customer_id,
                    delivery_id=claimed.id,
                    attempt=attempt,
                    at=now,
                    status=DELIVERED if outcome.delivered else FAILED,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    error=outcome.error,
                )
            )
            await session.execute(
                update(Delivery)
                .where(Delivery.id == claimed.id)
                .values(
                    status=status, attempts=attempt, next_attempt_at=next_attempt_at, updated_at=now
                )
            )
        if not outcome.delivered:
            log.info(
                "delivery %s (%s) attempt %d failed: %s%s",
                claimed.id,
                claimed.action.get("type"),
                attempt,
                outcome.error,
                "" if status == PENDING else "; given up",
            )


async def pinned_to_public_address(parts: SplitResult) -> tuple[str, str, dict[str, Any]]:
    """The webhook's URL with its host name replaced by the address it resolves to, the `host`
    header and the TLS server name to send, when every address the name resolves to is public;
    refused (no retry) otherwise. Connecting to the address checked, not to a second lookup of
    the name, keeps a name that resolves differently the next time from reaching a private
    address."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise AttemptFailed(f"the webhook's host {host} does not resolve: {error}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    private = [address for address in addresses if not address.is_global]
    if private or not addresses:
        shown = private[0] if private else "no address"
        raise AttemptFailed(
            f"the webhook's host {host} is not a public address ({shown}); "
            "FLEETPLANE_WEBHOOK_PRIVATE_ADDRESSES lets webhooks reach such addresses",
            retry=False,
        )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = parts._replace(netloc=netloc).geturl()
    host_header = f"{host}:{parts.port}" if parts.port else host
    return pinned, host_header, {"sni_hostname": host}


def email_message(claimed: Claimed, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The e-mail of a notification: a subject naming the rule, the event and the device, and
    a plain-text body with the rest."""
    notification = claimed.notification
    rule_name = claimed.rule[0] if claimed.rule is not None else "A deleted automation"
    device = "no device"
    if notification["device_id"] is not None:
        name, unique_id = claimed.device or ("a deleted device", "?")
        device = f"{name} ({unique_id})"
    position = notification["position"]
    where = "unknown"
    if position:
        where = ", ".join(f"{key} {value}" for key, value in position.items())
    lines = [
        f"Automation: {rule_name} ({notification['automation_id'] or 'deleted'})",
        f"Event: {notification['type']}",
        f"Time: {notification['time'].isoformat().replace('+00:00', 'Z')}",
        f"Device: {device}",
        f"Position: {where}",
        f"Data: {orjson.dumps(notification['data']).decode()}",
        "",
        f"Event id: {notification['id']}",
    ]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"{rule_name}: {notification['type']} on {device}"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content("\n".join(lines) + "\n")
    return message


def _recipients(to: Any) -> list[str]:
    items = [to] if isinstance(to, str) else to if isinstance(to, list) else []
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _command_body(command: Any) -> CommandCreate:
    """The action's `command`: a command body (`type`, `text`...), or a line sent as it is."""
    try:
        if isinstance(command, str):
            return CommandCreate(type=CommandType.RAW, text=command)
        return CommandCreate.model_validate(command)
    except ValidationError as error:
        problem = error.errors()[0]["msg"] if error.errors() else "invalid"
        raise AttemptFailed(
            f"the command is not one a device can be sent: {problem}", retry=False
        ) from None


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _short(text: str) -> str:
    return text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 1] + "…"


def _describe(error: Exception) -> str:
    """One line for an attempt's failure (never a traceback)."""
    if isinstance(error, httpx.ConnectError):
        what = "connection failed"
    elif isinstance(error, httpx.TimeoutException):
        what = "timed out"
    elif isinstance(error, aiosmtplib.SMTPException):
        what = "SMTP error"
    else:
        what = type(error).__name__
    detail = " ".join(str(error).split())
    return _short(f"{what}: {detail}" if detail else what)
