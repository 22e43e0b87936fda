"""Frozen values the state store returns: plain data, never ORM objects or open rows.

Timestamps are timezone-aware UTC; amounts are :class:`~decimal.Decimal`; JSON columns come back
decoded (``payload``, ``result``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sync_worker.canonical import CanonicalRecord, RecordKind, RecordStatus, StageKey, WebhookEvent

__all__ = [
    "AcceptResult",
    "Activity",
    "DeadLetter",
    "FlagRule",
    "HeldGroup",
    "HeldStage",
    "InboxEvent",
    "OutboxItem",
    "OutboxStatus",
    "Pause",
    "RecordChange",
    "StageTransition",
    "StoredFlag",
    "StoredRecord",
    "held_label",
    "stage_reentered",
]

FlagRule = Literal["stalled", "regressed", "dropped", "unanswered", "diverged"]
OutboxStatus = Literal["pending", "sent", "failed", "dead"]


@dataclass(frozen=True)
class AcceptResult:
    """What :meth:`SyncStore.accept_events` stored: new inbox ids in input order (for the workers),
    skipped duplicates, and ``kept``: dedupe key -> inbox id of the new events stored already
    processed, with a skip reason (the connector does not handle them)."""

    new_ids: tuple[int, ...]
    duplicates: int
    kept: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InboxEvent:
    """One accepted webhook event as stored in the inbox."""

    id: int
    source: str
    dedupe_key: str
    object_type: str
    object_id: str
    action: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    received_at: datetime
    property_name: str | None = None
    property_value: str | None = None
    change_source: str | None = None
    enqueued_at: datetime | None = None
    processed_at: datetime | None = None
    attempts: int = 0
    skip_reason: str | None = None

    def to_webhook_event(self) -> WebhookEvent:
        """The event as the connector parsed it, for normalisation by a worker."""
        return WebhookEvent(
            source=self.source,
            dedupe_key=self.dedupe_key,
            object_type=self.object_type,
            object_id=self.object_id,
            action=self.action,
            occurred_at=self.occurred_at,
            raw=self.payload,
            property_name=self.property_name,
            property_value=self.property_value,
            change_source=self.change_source,
        )


@dataclass(frozen=True)
class StoredRecord:
    """A deal or lead as the store holds it. ``stage`` is the last known canonical stage."""

    id: int
    source: str
    kind: RecordKind
    external_id: str
    status: RecordStatus
    source_updated_at: datetime
    first_seen_at: datetime
    last_seen_at: datetime
    stage: StageKey | None = None
    pipeline_id: str | None = None
    source_stage: str | None = None
    title: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    owner_id: str | None = None
    contact_email: str | None = None
    linkedin_url: str | None = None
    company: str | None = None
    close_date: date | None = None
    lost_reason: str | None = None
    change_source: str | None = None
    source_created_at: datetime | None = None
    stage_entered_at: datetime | None = None
    replied_at: datetime | None = None
    deleted: bool = False


@dataclass(frozen=True)
class RecordChange:
    """The outcome of :meth:`SyncStore.upsert_record`.

    ``previous_stage``/``previous_status`` are the stored values before this call (None when
    ``created``). ``applied`` is False when the incoming record was older than the stored one
    (its ``updated_at`` before ``source_updated_at``): only ``last_seen_at`` moved.
    """

    record: StoredRecord
    created: bool
    applied: bool
    previous_stage: StageKey | None
    previous_status: RecordStatus | None

    @property
    def stage_changed(self) -> bool:
        return self.applied and not self.created and self.previous_stage != self.record.stage

    @property
    def status_changed(self) -> bool:
        return self.applied and not self.created and self.previous_status != self.record.status


@dataclass(frozen=True)
class StageTransition:
    """One row of a record's canonical stage history (``from_stage`` None on first sight)."""

    id: int
    record_id: int
    to_stage: StageKey
    at: datetime
    origin: str
    written_by_worker: bool
    from_stage: StageKey | None = None
    source_stage: str | None = None


@dataclass(frozen=True)
class OutboxItem:
    """One pending (or finished) push to a target system."""

    id: int
    target: str
    idempotency_key: str
    payload: Mapping[str, Any]
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    sent_at: datetime | None = None
    kind: str = "mirror"
    """What produced the item and how the push reads its payload (see :mod:`sync_worker.engine.outbox`)."""


@dataclass(frozen=True)
class StoredFlag:
    """A leak flag raised on a record (open while ``cleared_at`` is None)."""

    id: int
    record_id: int
    rule: FlagRule
    raised_at: datetime
    reason: str = ""
    stage: StageKey | None = None
    since: datetime | None = None
    days_in_stage: int | None = None
    amount: Decimal | None = None
    weighted_amount: Decimal | None = None
    cleared_at: datetime | None = None
    written_to_crm_at: datetime | None = None
    alerted_at: datetime | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed for good, kept to be inspected and replayed."""

    id: int
    queue: str
    actor: str
    message_id: str
    payload: Mapping[str, Any]
    reason: str
    created_at: datetime
    error_class: str | None = None
    replayed_at: datetime | None = None
    inbox_id: int | None = None


@dataclass(frozen=True)
class Activity:
    """The last run of one poll stream (``poll``, ``source/stream``), push target or leak scan."""

    kind: str
    name: str
    last_run_at: datetime
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    last_count: int
    total_count: int
    failures: int


@dataclass(frozen=True)
class Pause:
    """A source or route an operator paused (``sync-worker pause``)."""

    scope: str
    name: str
    paused_at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class HeldStage:
    """A record whose latest source stage no mapping covers: its canonical stage is held.

    ``pipeline``/``stage`` are the source's ids (else names); ``pipeline_name``/``stage_name`` the
    names it also gave. ``held_count`` counts the observations of this stage since it was first
    held (``first_held_at``); ``stage_changed_at`` is the source's time of the move, if it said.
    """

    record_id: int
    source: str
    kind: RecordKind
    external_id: str
    pipeline: str | None
    pipeline_name: str | None
    stage: str | None
    stage_name: str | None
    stage_changed_at: datetime | None
    first_held_at: datetime
    last_held_at: datetime
    held_count: int


@dataclass(frozen=True)
class HeldGroup:
    """How many records are held on one unmapped ``(source, pipeline, stage)`` (ids, else names),
    with the names the source gave for them, if any."""

    source: str
    pipeline: str | None
    stage: str | None
    records: int
    pipeline_name: str | None = None
    stage_name: str | None = None

    @property
    def label(self) -> str:
        """``pipeline Partnerships (3) stage Intro (14)``, or as much of it as is known."""
        pipeline, stage = (
            held_label(self.pipeline, self.pipeline_name),
            held_label(self.stage, self.stage_name),
        )
        return f"pipeline {pipeline} stage {stage}"


def held_label(key: str | None, name: str | None) -> str:
    """A held pipeline or stage for people: ``Partnerships (3)``, the id or name alone, else ``-``."""
    if name is not None and key is not None and name != key:
        return f"{name} ({key})"
    return name or key or "-"


def stage_reentered(stored: StoredRecord, record: CanonicalRecord) -> bool:
    """``record`` is in the stage the store knows for it, but entered it later than the store
    knows: it left and came back through a move the service did not see (A, B, A with B's webhook
    lost). The source's own stage-entry time says so (HubSpot ``hs_v2_date_entered_current_stage``,
    Pipedrive ``stage_change_time``)."""
    entered, known = record.stage_changed_at, stored.stage_entered_at
    return (
        record.stage is not None
        and record.stage == stored.stage
        and entered is not None
        and known is not None
        and entered > known
    )
