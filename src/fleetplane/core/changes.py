"""Change notices: how whatever a process holds in memory learns that what it holds changed.

A domain service that changes something raises a notice in the transaction that makes the
change (`note(session, Change(...))`); the notices are delivered once that transaction
commits, and dropped when it, or the savepoint they were raised in, rolls back. Subscribers
(the caches) name the kinds of change they care about and get only those.

Delivery is the `ChangeHub` of the session's factory (`core.db.session_factory(engine,
changes=hub)`): every session the process's runtime makes carries it, the request's, a
background job's or the pipeline's alike, so a change made outside HTTP reaches the caches as
soon as it commits. A session made by no such factory (a command-line run on its own
short-lived engine, in another process) delivers to nobody: other processes' caches see it
when their entries expire. A notice is a plain value (text, tuples, and JSON-like values) so
that a hub can later carry it between processes.
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

_PENDING = "fleetplane.changes.pending"
_SAVEPOINTS = "fleetplane.changes.savepoints"
HUB_KEY = "fleetplane.changes.hub"

log = logging.getLogger("fleetplane.changes")


@dataclass(frozen=True, slots=True)
class Change:
    """Something committed changed.

    - `kind`: what changed (`device`, `customer`, `api_key`, `sensor`, ...; each domain names
      its own).
    - `ids`: the ids of the changed objects.
    - `provider_id`: whose they are; None for any provider.
    - `customer_ids`: the customers whose data it changes (a device moving: the old and the
      new); None when it may be any customer of the provider, () when none.
    - `device_ids`: the devices whose data it changes (a sensor: its device).
    - `values`: what was written, for subscribers that apply it in place instead of reading
      it again (`device_state`: the states as written).
    """

    kind: str
    ids: tuple[str, ...]
    provider_id: str | None = None
    customer_ids: tuple[str, ...] | None = None
    device_ids: tuple[str, ...] = ()
    values: tuple[Mapping[str, Any], ...] = ()


OnChange = Callable[[Change], None]


class ChangeHub:
    """Delivers committed notices to the subscribers of their kind, in this process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[OnChange]] = {}

    def subscribe(self, kinds: Iterable[str], on_change: OnChange) -> Callable[[], None]:
        """Calls `on_change(change)` for every notice of these kinds delivered from now on;
        returns the function that stops it."""
        kinds = tuple(kinds)
        for kind in kinds:
            self._subscribers.setdefault(kind, []).append(on_change)

        def unsubscribe() -> None:
            for kind in kinds:
                subscribers = self._subscribers.get(kind, [])
                if on_change in subscribers:
                    subscribers.remove(on_change)

        return unsubscribe

    def deliver(self, changes: Iterable[Change]) -> None:
        """Hands each notice to its kind's subscribers. The change is committed already, so a
        subscriber that fails is logged and the others still get it."""
        for change in changes:
            for on_change in tuple(self._subscribers.get(change.kind, ())):
                try:
                    on_change(change)
                except Exception:
                    log.exception("a subscriber failed on a %s change", change.kind)


def note(session: AsyncSession | Session, *changes: Change) -> None:
    """Raises `changes`: delivered to the session's hub when its transaction commits."""
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    pending: list[Change] = sync_session.info.setdefault(_PENDING, [])
    pending.extend(changes)


def sessions_info(hub: ChangeHub | None) -> dict[str, Any]:
    """The `info` a session factory gives its sessions so that their notices reach `hub`."""
    return {} if hub is None else {HUB_KEY: hub}


@event.listens_for(Session, "after_commit")
def _deliver(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: delivered when the whole transaction commits
    pending: list[Change] | None = session.info.pop(_PENDING, None)
    session.info.pop(_SAVEPOINTS, None)
    hub: ChangeHub | None = session.info.get(HUB_KEY)
    if pending and hub is not None:
        hub.deliver(pending)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks: dict[int, int] = session.info.setdefault(_SAVEPOINTS, {})
        marks[id(transaction)] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_savepoint(session: Session, previous_transaction: SessionTransaction) -> None:
    if not previous_transaction.nested:
        return
    mark = session.info.get(_SAVEPOINTS, {}).pop(id(previous_transaction), None)
    pending: list[Change] | None = session.info.get(_PENDING)
    if mark is not None and pending is not None:
        del pending[mark:]


@event.listens_for(Session, "after_transaction_end")
def _drop_undelivered(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (rolled back, or the session closed):
    # nothing it noted happened.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_SAVEPOINTS, None)
