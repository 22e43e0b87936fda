"""The canonical model every connector translates to and from.

Stages: ten fixed keys (:class:`StageKey`); ``canonical.yaml`` defines the stages a team uses (``won``
and ``lost`` always) with their labels, order, probabilities and time limits, and loads into a frozen
:class:`StageModel`. Several stages may be of kind won, in order: ``won`` then, say, ``retention`` (a
post-purchase stage that counts as won and is never flagged dropped).

Records: a deal or lead as one system sees it (:class:`CanonicalRecord`), a push to a target
(:class:`CanonicalUpdate`) and its outcome (:class:`UpdateResult`), one page of a pull
(:class:`PullPage`) and one webhook event (:class:`WebhookEvent`). All frozen; amounts are
:class:`~decimal.Decimal` in the record's currency; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "UNRECOGNISED_ACTION",
    "CanonicalRecord",
    "CanonicalUpdate",
    "LeakFlag",
    "PullPage",
    "RecordKind",
    "RecordRemoval",
    "RecordStatus",
    "RemovalMode",
    "SourceStage",
    "Stage",
    "StageKey",
    "StageKind",
    "StageModel",
    "UnmappedStage",
    "UpdateResult",
    "WebhookEvent",
]


class StageKey(StrEnum):
    """The canonical stage keys; mappings refer to these. ``retention`` is optional (post-purchase)."""

    PROSPECT = "prospect"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    MEETING = "meeting"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    WON = "won"
    LOST = "lost"
    NURTURE = "nurture"
    RETENTION = "retention"


class StageKind(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"
    HOLD = "hold"


class Stage(BaseModel):
    """One canonical stage as configured in ``canonical.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: StageKey
    label: str = Field(min_length=1)
    kind: StageKind
    order: int = Field(ge=0)
    probability: float = Field(ge=0.0, le=1.0)
    max_days: int | None = Field(default=None, gt=0, description="days before an open deal is stalled")


class StageModel(BaseModel):
    """The whole canonical stage model: stages in pipeline order plus the reply SLA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: tuple[Stage, ...]
    reply_sla_days: int = Field(default=3, gt=0)

    def get(self, key: StageKey | str) -> Stage:
        wanted = StageKey(key)
        for stage in self.stages:
            if stage.key == wanted:
                return stage
        raise KeyError(wanted)

    def ordered(self) -> tuple[Stage, ...]:
        return tuple(sorted(self.stages, key=lambda s: s.order))

    def weighted_amount(self, amount: Decimal, key: StageKey | str) -> Decimal:
        """Amount x the stage's win probability, rounded to cents."""
        return (amount * Decimal(str(self.get(key).probability))).quantize(Decimal("0.01"))

    def is_regression(self, before: StageKey | str, after: StageKey | str) -> bool:
        """True when a deal moved from an open stage back to an earlier open stage."""
        old, new = self.get(before), self.get(after)
        return old.kind is StageKind.OPEN and new.kind is StageKind.OPEN and new.order < old.order

    def is_advance(self, before: StageKey | str, after: StageKey | str) -> bool:
        """True when ``after`` is later in the open funnel than ``before`` (or closes it as won).

        From a won stage only a later won stage is an advance (won -> retention); from lost, nothing.
        """
        old, new = self.get(before), self.get(after)
        if old.kind is StageKind.LOST:
            return False
        if old.kind is StageKind.WON:
            return new.kind is StageKind.WON and new.order > old.order
        return new.order > old.order

    def has(self, key: StageKey | str) -> bool:
        """True when the model defines ``key`` (a preset may leave stages out)."""
        return any(stage.key.value == str(key) for stage in self.stages)

    def label(self, key: StageKey | str | None) -> str:
        """The stage's label; the key itself when the model does not define it, ``-`` for None."""
        if key is None:
            return "-"
        for stage in self.stages:
            if stage.key.value == str(key):
                return stage.label
        return str(key)


RecordKind = Literal["deal", "lead"]
RecordStatus = Literal["open", "won", "lost", "deleted"]


@dataclass(frozen=True)
class UnmappedStage:
    """A source stage that no mapping names: an error value, never a silent default.

    ``pipeline`` and ``stage`` are the source's ids (else names). ``pipeline_name`` and
    ``stage_name`` are the names the source also gave, when it gave both: what a later mapping may
    match on, so a held stage can be resolved again (they take no part in equality).
    """

    source: str
    pipeline: str | None
    stage: str | None
    pipeline_name: str | None = field(default=None, compare=False)
    stage_name: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.source}: pipeline {self.pipeline!r} stage {self.stage!r} is not mapped"


@dataclass(frozen=True)
class SourceStage:
    """A pipeline stage as a system lists it (for ``mappings show`` and target resolution)."""

    source: str
    pipeline_id: str
    pipeline_label: str
    stage_id: str
    stage_label: str
    order: int
    probability: float | None = None
    is_closed: bool = False
    days_to_rotten: int | None = None


@dataclass(frozen=True)
class CanonicalRecord:
    """A deal or lead as seen in one system, translated onto the canonical model.

    ``stage`` is None only when ``unmapped`` says why. ``updated_at`` is the source's own
    modification time (conflicts resolve on it). ``change_source`` is what the provider says wrote
    the change (HubSpot ``changeSource``/``sourceId``, Pipedrive ``change_source``), used to suppress
    echoes. ``links`` holds ids of the same deal in other systems when the source carries them.
    """

    source: str
    kind: RecordKind
    external_id: str
    updated_at: datetime
    stage: StageKey | None = None
    status: RecordStatus = "open"
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
    created_at: datetime | None = None
    stage_changed_at: datetime | None = None
    replied_at: datetime | None = None
    change_source: str | None = None
    links: Mapping[str, str] = field(default_factory=dict)
    unmapped: UnmappedStage | None = None


@dataclass(frozen=True)
class PullPage:
    """One page of an incremental pull.

    ``cursor`` is the value to persist once every record of this page is durably accepted; the
    core persists it, never the connector. ``done`` is True on the last page.
    """

    stream: str
    records: tuple[CanonicalRecord, ...]
    cursor: str | None
    done: bool


@dataclass(frozen=True)
class LeakFlag:
    """A leak flag to write back onto a deal in its CRM (``rule`` None clears it).

    ``diverged``: the deal's copies sat in different canonical stages or statuses for longer than
    the grace period; ``reason`` names both values and the systems holding them.
    """

    rule: Literal["stalled", "regressed", "dropped", "unanswered", "diverged"] | None
    reason: str = ""
    stage: StageKey | None = None
    since: datetime | None = None
    days_in_stage: int | None = None


@dataclass(frozen=True)
class CanonicalUpdate:
    """One write to a target system.

    ``external_id`` None means create. Only fields that are not None are written.
    ``idempotency_key`` is unique per intended write; the engine records it so a replay does not
    write twice. ``origin`` names the system the change came from (never written back there).
    """

    target: str
    idempotency_key: str
    origin: str
    external_id: str | None = None
    kind: RecordKind = "deal"
    stage: StageKey | None = None
    status: RecordStatus | None = None
    title: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    close_date: date | None = None
    lost_reason: str | None = None
    contact_email: str | None = None
    origin_id: str | None = None
    flag: LeakFlag | None = None


RemovalMode = Literal["delete", "archive"]
"""How a record is removed: ``delete`` as the system's API deletes, ``archive`` where it can."""


@dataclass(frozen=True)
class RecordRemoval:
    """The deletion or archiving of one record in ``target`` (a route's ``on_delete``).

    ``origin`` and ``origin_id`` name the deleted record it follows. Answered with one
    :class:`UpdateResult` under the same ``idempotency_key``; a record already gone counts as removed.
    """

    target: str
    idempotency_key: str
    kind: RecordKind
    external_id: str
    mode: RemovalMode
    origin: str
    origin_id: str


@dataclass(frozen=True)
class UpdateResult:
    """The outcome of one :class:`CanonicalUpdate`; a failed batch item never hides the others."""

    idempotency_key: str
    ok: bool
    external_id: str | None = None
    error: str | None = None
    retryable: bool = False
    updated_at: datetime | None = None


UNRECOGNISED_ACTION = "unrecognised"
"""The ``action`` of an authenticated delivery whose shape a connector does not recognise: kept in
the inbox (``handled`` False), listed as a dead letter with its body, answered 2xx."""


@dataclass(frozen=True)
class WebhookEvent:
    """One event from a webhook body, before normalisation.

    ``dedupe_key`` identifies the delivery of this change across retries (HubSpot retries carry a
    higher ``attemptNumber`` but the same event, Pipedrive ``meta.id``). ``raw`` is the provider's
    own event object, kept to be normalised later.
    """

    source: str
    dedupe_key: str
    object_type: str
    object_id: str
    action: str
    occurred_at: datetime
    raw: Mapping[str, Any]
    property_name: str | None = None
    property_value: str | None = None
    change_source: str | None = None
    attempt: int = 0
    handled: bool = True
    reason: str | None = None
    """Why the event is not handled (``handled`` False): kept on the inbox row and counted."""
