"""Values the sync engine passes around and returns: its configuration, events and stats.

Everything here is frozen plain data. Timestamps are timezone-aware UTC. The synced fields are
named once, in :data:`SYNCED_FIELDS`; timestamp ties in a conflict go to the system with the lower
:func:`system_rank` (each connector spec's ``tie_rank``: CRMs of record first, outreach tools last).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal

__all__ = [
    "ANY_CHANGE_EVENTS",
    "EVENT_ANY_CHANGE",
    "EVENT_CREATED",
    "EVENT_FIELD_CHANGE",
    "EVENT_REPLY",
    "EVENT_STAGE_CHANGE",
    "EVENT_STATUS_CHANGE",
    "SYNCED_FIELDS",
    "ChangeEvent",
    "DeadItem",
    "EngineConfig",
    "InboxOutcome",
    "IngestResult",
    "PullStats",
    "PushStats",
    "SyncedField",
    "system_rank",
]

# The events a change raises, as ``routes.yaml`` names them (``any_change`` there is shorthand for
# every event but ``reply``).
ChangeEvent = Literal["reply", "stage_change", "status_change", "field_change", "created"]
EVENT_REPLY: Final = "reply"
EVENT_STAGE_CHANGE: Final = "stage_change"
EVENT_STATUS_CHANGE: Final = "status_change"
EVENT_FIELD_CHANGE: Final = "field_change"
EVENT_CREATED: Final = "created"
EVENT_ANY_CHANGE: Final = "any_change"
ANY_CHANGE_EVENTS: Final = frozenset(
    {EVENT_CREATED, EVENT_STAGE_CHANGE, EVENT_STATUS_CHANGE, EVENT_FIELD_CHANGE}
)

SyncedField = Literal["stage", "status", "title", "amount", "currency", "close_date", "lost_reason"]
SYNCED_FIELDS: Final[tuple[SyncedField, ...]] = (
    "stage",
    "status",
    "title",
    "amount",
    "currency",
    "close_date",
    "lost_reason",
)


def system_rank(system: str) -> tuple[int, str]:
    """Sort key of a system in a timestamp tie (lower wins): its spec's ``tie_rank``, then its name.

    A system no connector is registered for comes after every registered one.
    """
    from sync_worker.plugins import registry

    spec = registry().get(system)
    return (spec.tie_rank if spec is not None else 1_000_000, system)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine behaves.

    ``coalesce_window``: a push waits this long so that further changes to the same target record
    merge into one write. ``echo_window``: how long a value we wrote is remembered as ours when it
    comes back. ``own_change_sources``: per source, the ``change_source`` values that mean "the
    service itself wrote this" (HubSpot ``INTEGRATION:<app id>``, Pipedrive ``api:<user id>``).
    ``max_attempts``: a retryable push failing this many times goes dead. ``retry_base``: first
    retry delay, doubled per attempt, capped at ``retry_cap``. ``create_lease``: a create claimed
    this long ago that still has no result was left by a push whose worker died mid-write; the
    next push takes it over (after looking for the deal it may have made, see
    :mod:`sync_worker.engine.push`) instead of waiting for it forever.
    """

    coalesce_window: timedelta = timedelta(seconds=2)
    echo_window: timedelta = timedelta(minutes=15)
    own_change_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    create_lease: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def retry_delay(self, attempts: int) -> timedelta:
        """Delay before the next attempt after ``attempts`` failed ones (exponential, capped)."""
        delay: timedelta = self.retry_base * (2 ** max(attempts - 1, 0))
        return min(delay, self.retry_cap)


@dataclass(frozen=True)
class IngestResult:
    """What happened to one incoming record: stored, and routed or not (and why not)."""

    source: str
    external_id: str
    record_id: int
    events: frozenset[str]
    echo: bool = False
    stale: bool = False
    enqueued: int = 0
    targets: frozenset[str] = frozenset()
    """The targets ``enqueued`` items were queued for."""


class InboxOutcome(list[IngestResult]):
    """The records a batch of inbox events became (a list), and how many of the events asked for
    had been processed already (``redone``: a redelivered message, whose pushes may never have
    been scheduled if its first run was killed right after committing)."""

    redone: int = 0


@dataclass(frozen=True)
class PullStats:
    """The outcome of one :meth:`SyncService.poll`: counts and the last cursor persisted."""

    source: str
    stream: str
    pages: int = 0
    records: int = 0
    changed: int = 0
    echoes: int = 0
    stale: int = 0
    enqueued: int = 0
    cursor: str | None = None
    targets: frozenset[str] = frozenset()
    """The targets ``enqueued`` items were queued for."""


@dataclass(frozen=True)
class DeadItem:
    """An outbox item that failed for good: its id, its payload and the reason (no secrets)."""

    outbox_id: int
    idempotency_key: str
    reason: str
    payload: Mapping[str, object]


@dataclass(frozen=True)
class PushStats:
    """The outcome of one :meth:`SyncService.push` for one target."""

    target: str
    items: int = 0
    writes: int = 0
    created: int = 0
    skipped: int = 0
    retried: int = 0
    dead: tuple[DeadItem, ...] = ()
    removed: int = 0
    """Target records deleted or archived for a deletion in their origin (a route's ``on_delete``)."""
