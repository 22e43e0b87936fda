"""Values the sync engine passes around and returns: its configuration, events and stats.

Everything here is frozen plain data. Timestamps are timezone-aware UTC. The synced fields are
named once, in :data:`SYNCED_FIELDS`; the fixed system order that breaks timestamp ties in a
conflict is :data:`SYSTEM_ORDER` (CRMs of record first, the outreach tool last).
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
    "SYSTEM_ORDER",
    "ChangeEvent",
    "DeadItem",
    "EngineConfig",
    "IngestResult",
    "PullStats",
    "PushStats",
    "SyncedField",
    "own_change_sources",
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

# Ties on the source timestamp go to the system listed first; unknown systems come after, by name.
SYSTEM_ORDER: Final[tuple[str, ...]] = ("hubspot", "pipedrive", "lagrowthmachine")


def system_rank(system: str) -> tuple[int, str]:
    """Sort key of a system in :data:`SYSTEM_ORDER` (lower wins a tie)."""
    try:
        return (SYSTEM_ORDER.index(system), system)
    except ValueError:
        return (len(SYSTEM_ORDER), system)


def own_change_sources(
    *,
    hubspot_app_id: int | str | None = None,
    hubspot_change_source: str = "INTEGRATION",
    pipedrive_user_id: int | str | None = None,
) -> dict[str, frozenset[str]]:
    """The ``change_source`` markers of the service's own writes, as the connectors report them.

    HubSpot events say ``changeSource`` and ``sourceId`` (the writing app, joined as
    ``INTEGRATION:<app id>`` by the connector); Pipedrive ``meta.change_source`` is ``api`` for
    writes through the API, joined with the acting ``meta.user_id`` (``api:<user id>``):
    https://developers.hubspot.com/docs/api/webhooks and
    https://developers.pipedrive.com/changelog/post/new-field-for-webhooks
    """
    markers: dict[str, frozenset[str]] = {}
    if hubspot_app_id is not None:
        markers["hubspot"] = frozenset({f"{hubspot_change_source}:{hubspot_app_id}"})
    if pipedrive_user_id is not None:
        markers["pipedrive"] = frozenset({f"api:{pipedrive_user_id}"})
    return markers


@dataclass(frozen=True)
class EngineConfig:
    """How the engine behaves.

    ``coalesce_window``: a push waits this long so that further changes to the same target record
    merge into one write. ``echo_window``: how long a value we wrote is remembered as ours when it
    comes back. ``own_change_sources``: per source, the ``change_source`` values that mean "the
    service itself wrote this" (HubSpot ``INTEGRATION:<app id>``, Pipedrive ``api:<user id>``).
    ``max_attempts``: a retryable push failing this many times goes dead. ``retry_base``: first
    retry delay, doubled per attempt, capped at ``retry_cap``.
    """

    coalesce_window: timedelta = timedelta(seconds=2)
    echo_window: timedelta = timedelta(minutes=15)
    own_change_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    hubspot_read_batch: int = 100

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 1 <= self.hubspot_read_batch <= 100:
            raise ValueError("hubspot_read_batch must be between 1 and 100 (the batch/read limit)")

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
