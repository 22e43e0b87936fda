"""The small protocol every connector satisfies.

A connector speaks one system's API and turns its payloads into canonical records and back. It
never writes state: :meth:`Connector.pull_changes` yields pages whose cursor the core persists once
the page is durably accepted. It never imports another connector.

Webhook events reach the engine in two steps: the receiver calls :meth:`Connector.verify_webhook`
and :meth:`Connector.parse_webhook` (and stores the events durably); a worker later calls
:meth:`Connector.normalise_events` with a batch of stored events of this source, which turns them
into canonical records, reading from the system only when the events do not say enough (at most
one batch read per call where the API allows it). :class:`NormaliseContext` gives it what the core
knows: the current mappings, the stored copy of a record, the service's own echo markers and its
write memory.

Removing records (a route's ``on_delete: delete`` or ``archive``) is an optional capability:
a connector that can, also satisfies :class:`RecordRemover`. The core checks for it at push time
and fails the removals of a connector without it for good (dead letters naming the route).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    RecordKind,
    RecordRemoval,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)

if TYPE_CHECKING:
    from sync_worker.mappings import Mappings
    from sync_worker.store.models import InboxEvent, StoredRecord

__all__ = [
    "Connector",
    "EchoCheck",
    "NormaliseContext",
    "Normalised",
    "RecordRemover",
    "StoredLookup",
    "WebhookRequest",
    "deleted_record",
    "record_from_stored",
]

StoredLookup = Callable[[str, RecordKind, str], "StoredRecord | None"]
"""``(source, kind, external id) -> the stored copy or None``."""

EchoCheck = Callable[[str, str, str, object], bool]
"""``(system, external id, field, value) -> bool``: did the service write this value lately?"""


@dataclass(frozen=True)
class NormaliseContext:
    """What the core gives :meth:`Connector.normalise_events`.

    ``own_markers``: the ``change_source`` values of the service's own writes in this system (empty
    when not configured). ``was_written``: the write memory bound to the echo window (None: off).
    """

    mappings: Mappings
    lookup: StoredLookup
    own_markers: frozenset[str] = frozenset()
    was_written: EchoCheck | None = None

    def is_own(self, change_source: str | None) -> bool:
        """True when the provider names the service itself as the writer."""
        return change_source is not None and change_source in self.own_markers

    def is_other(self, change_source: str | None) -> bool:
        """True when the provider names a writer, markers are known, and it is not the service."""
        return change_source is not None and bool(self.own_markers) and not self.is_own(change_source)


@dataclass
class Normalised:
    """The records a batch of inbox events stands for, each with the inbox ids it answers.

    ``echo_ids``: events recognised as the service's own writes without reading anything;
    ``skipped``: inbox id -> why the event stands for no record (an unhandled type, a record never
    stored, an unrecognised shape); the core counts and logs them and keeps the reason on the row.
    ``reads``: API calls made.
    """

    records: list[tuple[CanonicalRecord, tuple[int, ...]]] = field(default_factory=list)
    echo_ids: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    reads: int = 0

    def skip(self, event: InboxEvent, reason: str) -> None:
        self.skipped[event.id] = reason

    @property
    def skipped_ids(self) -> list[int]:
        return list(self.skipped)


def record_from_stored(stored: StoredRecord, *, updated_at: datetime, **changes: Any) -> CanonicalRecord:
    """A canonical record rebuilt from what the store holds, with ``changes`` applied."""
    base = CanonicalRecord(
        source=stored.source,
        kind=stored.kind,
        external_id=stored.external_id,
        updated_at=updated_at,
        stage=stored.stage,
        status=stored.status,
        pipeline_id=stored.pipeline_id,
        source_stage=stored.source_stage,
        title=stored.title,
        amount=stored.amount,
        currency=stored.currency,
        owner_id=stored.owner_id,
        contact_email=stored.contact_email,
        linkedin_url=stored.linkedin_url,
        company=stored.company,
        close_date=stored.close_date,
        lost_reason=stored.lost_reason,
        change_source=stored.change_source,
    )
    return replace(base, **changes)


def deleted_record(
    event: InboxEvent, kind: RecordKind, ctx: NormaliseContext, fallback: CanonicalRecord | None = None
) -> CanonicalRecord | None:
    """The record a deletion event stands for: the stored copy (else ``fallback``) marked deleted."""
    stored = ctx.lookup(event.source, kind, event.object_id)
    if stored is not None:
        return record_from_stored(
            stored, updated_at=event.occurred_at, status="deleted", change_source=event.change_source
        )
    if fallback is not None:
        return replace(
            fallback, status="deleted", updated_at=event.occurred_at, change_source=event.change_source
        )
    return None


@dataclass(frozen=True)
class WebhookRequest:
    """What a connector needs to verify a webhook: no framework objects cross this line.

    ``url`` is the URI the provider signed (``SYNC_PUBLIC_URL`` + path + query behind a proxy).
    Header names are lower-case.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]


@runtime_checkable
class Connector(Protocol):
    """What the core asks of a system."""

    name: str

    def list_stages(self) -> list[SourceStage]:
        """Every pipeline stage the account has."""
        ...

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Pages of records changed since ``cursor`` (None: from the beginning), oldest first."""
        ...

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Write the updates, batched as the API allows; one result per update, in order."""
        ...

    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise :class:`~sync_worker.errors.SignatureError` unless the request is authentic."""
        ...

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        """The events in a webhook body; :class:`~sync_worker.errors.PayloadError` if malformed."""
        ...

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """The records a batch of this source's stored events stands for (see the module doc).

        Every event ends in exactly one of ``records``, ``echo_ids`` or ``skipped``. Connector errors
        propagate (:class:`~sync_worker.errors.TransientError` is retried).
        """
        ...

    def prepare(self) -> list[str]:
        """Create what the service writes into that the account lacks (custom fields for leak flags,
        link ids); idempotent; the names created. Run by the scheduler, not at every start."""
        ...

    def close(self) -> None:
        """Release the HTTP client."""
        ...


@runtime_checkable
class RecordRemover(Protocol):
    """The optional capability of removing records (deleting or archiving them)."""

    def remove_records(self, removals: Sequence[RecordRemoval]) -> list[UpdateResult]:
        """Delete or archive each record as its ``mode`` says, batched as the API allows; one
        result per removal, in order. A record the system no longer has counts as removed (ok).
        A ``mode`` the system cannot do is a failed, non-retryable result naming the mode."""
        ...
