"""One open stream of a customer's live device events, and what keeps it within its access.

An event reaches the stream only when its audience (the device's provider and customer when
its messages were stored) is the stream's customer. A change committed in this process to the
stream's key, customer or one of its devices holds the stream at once, until the access is
checked again; changes made in other processes are found by the periodic check (keys and
customers) or by the audience of the device's next event (a device now another customer's).
When the access is gone the stream closes with a `closed` event naming the reason: the `code`
a new call would be refused with, or `device_moved`."""

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetplane.core.auth import CustomerContext, ModuleAccessWatch
from fleetplane.core.db import set_tenant_scope
from fleetplane.core.events import Audience, Event, EventHub, Subscription
from fleetplane.devices import service

DEVICE_MOVED = "device_moved"


class CustomerDeviceStream:
    def __init__(
        self,
        ctx: CustomerContext,
        module_name: str,
        needed: tuple[str, ...],
        devices: set[str],
        *,
        sessions: async_sessionmaker[AsyncSession],
        events: EventHub,
    ) -> None:
        self.access = ModuleAccessWatch(ctx, module_name, needed)
        self._sessions = sessions
        self._audience: tuple[str, str] = (ctx.provider_id, ctx.customer_id)  # a customer's
        self._devices = devices  # the customer's devices, as far as this stream has seen
        self._changed: set[str] = set()  # of those, changed in this process; not yet checked
        self._moved: str | None = None  # one found to be another customer's
        self.subscription: Subscription = events.subscribe(self._wanted)
        self._unwatch = self.access.watch(self._on_change)

    def _wanted(self, event: Event, audience: Audience) -> bool:
        device_id = event["device_id"]
        if device_id in self._changed:
            return False
        if audience == self._audience:
            if device_id is not None:  # an event of no device (an automation's test)
                self._devices.add(device_id)
            return True
        if device_id in self._devices:  # moved by another process
            self._moved = device_id
            self.subscription.hold()
        return False

    def _on_change(self, object_id: str) -> None:
        if object_id in (self.access.key.id, self.access.customer_id):
            self.subscription.hold()
        elif object_id in self._devices:
            self._changed.add(object_id)
            self.subscription.hold()

    def seconds_to_next_check(self) -> float:
        return self.access.seconds_to_next_check()

    async def closing(self) -> Event | None:
        refused = await self.access.refusal()
        if refused is not None:
            return {"reason": refused.code, "detail": refused.detail}
        if self._changed and self._moved is None:
            await self._check_changed_devices()
        if self._moved is not None:
            return {
                "reason": DEVICE_MOVED,
                "detail": "A device of this stream is no longer the customer's.",
                "device_id": self._moved,
            }
        return None

    async def _check_changed_devices(self) -> None:
        checking = set(self._changed)
        provider_id, customer_id = self._audience
        async with self._sessions() as session:
            await set_tenant_scope(session, provider_id=provider_id, customer_id=customer_id)
            current = await service.customer_device_ids(session, provider_id, customer_id)
        gone = sorted(checking - current)
        if gone:
            self._moved = gone[0]
        self._changed -= checking

    def stop(self) -> None:
        self._unwatch()


# Why a stream closes: the `reason` of its final `closed` event.
CLOSE_REASONS = {
    "api_key_revoked": "the key was revoked",
    "api_key_expired": "the key expired",
    "api_key_invalid": "the key no longer exists",
    "customer_not_found": "the customer was deleted or is no longer among the key's customers",
    "customer_suspended": "the customer was suspended",
    "module_disabled": "the module was disabled for the customer",
    "permission_denied": "the key no longer has a permission the stream needs",
    DEVICE_MOVED: "one of the stream's devices moved to another customer, was unassigned or "
    "was deleted (`device_id` names it); reconnect to stream the customer's devices",
}


def close_reasons_text() -> str:
    return "\n".join(f"- `{reason}`: {why}" for reason, why in CLOSE_REASONS.items())
