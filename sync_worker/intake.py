"""Webhook intake as plain service functions: no framework, no broker objects, no globals.

The order is the durability contract of the architecture ("nothing is ever acknowledged and then
lost")::

    verify (401) -> parse (400) -> store in the inbox, one transaction (503 if the store is down)
        -> answer 2xx -> enqueue the delivery's new inbox ids (one message) -> mark them enqueued

Enqueueing happens after the commit and its failure never fails the request: the events are durable
and :func:`sweep_inbox` (run by the receiver in the background, and callable by the scheduler)
enqueues whatever was stored but not enqueued. A message may therefore be sent twice (a sweep racing
a slow request); :func:`handle_inbox_event` is idempotent on the inbox row, so it is applied once.
Duplicate deliveries are dropped by the store's ``(source, dedupe_key)`` dedupe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from sync_worker.broker import enqueue_errors
from sync_worker.canonical import UNRECOGNISED_ACTION, CanonicalRecord, WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import StoreUnavailableError
from sync_worker.metrics import ReceiverMetrics, note_skipped
from sync_worker.store.models import AcceptResult, InboxEvent

__all__ = [
    "DeliveryEnqueue",
    "Enqueue",
    "InboxStore",
    "IntakeResult",
    "Normaliser",
    "ProcessResult",
    "SweepResult",
    "WebhookSource",
    "accept_webhook",
    "handle_inbox_event",
    "sweep_inbox",
]

_log = logging.getLogger(__name__)

Enqueue = Callable[[int], None]
"""Hands one inbox id to the queue; raises a broker/Redis error when it cannot."""


@runtime_checkable
class DeliveryEnqueue(Protocol):
    """An :data:`Enqueue` that can also hand a whole delivery's inbox ids over as one message."""

    def __call__(self, inbox_id: int) -> None: ...

    def many(self, inbox_ids: Sequence[int]) -> None: ...


Normaliser = Callable[[WebhookEvent], CanonicalRecord | None]
"""A connector's pure translation of one webhook event (None when the event carries no record)."""


class WebhookSource(Protocol):
    """The webhook half of :class:`~sync_worker.connector.Connector`."""

    def verify_webhook(self, request: WebhookRequest) -> None: ...

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]: ...


class InboxStore(Protocol):
    """The part of :class:`~sync_worker.store.SyncStore` that intake uses."""

    def ping(self) -> None: ...

    def accept_events(self, source: str, events: Sequence[WebhookEvent]) -> AcceptResult: ...

    def mark_enqueued(self, ids: Iterable[int], *, requeued: bool = False) -> int: ...

    def pending_enqueue(
        self,
        older_than: timedelta,
        limit: int = 100,
        *,
        stale_after: timedelta | None = None,
        enqueued_before: datetime | None = None,
        after: tuple[datetime, int] | None = None,
    ) -> list[InboxEvent]: ...

    def get_inbox_event(self, inbox_id: int) -> InboxEvent | None: ...

    def mark_processed(self, inbox_id: int) -> bool: ...

    def inbox_depth(self) -> int: ...

    def add_dead_letter(
        self,
        *,
        queue: str,
        actor: str,
        message_id: str,
        payload: Mapping[str, Any],
        reason: str,
        error_class: str | None = None,
        inbox_id: int | None = None,
    ) -> int: ...


@dataclass(frozen=True)
class IntakeResult:
    """What one accepted webhook request did; ``enqueued`` < ``len(stored)`` means the broker was down."""

    source: str
    received: int
    stored: tuple[int, ...]
    duplicates: int
    unhandled: int
    enqueued: int

    @property
    def pending(self) -> int:
        """Stored events left for the sweeper to enqueue."""
        return len(self.stored) - self.enqueued


@dataclass(frozen=True)
class SweepResult:
    """One sweep: how many stored-but-not-enqueued events were enqueued, and whether the broker failed."""

    enqueued: int
    broker_failed: bool


@dataclass(frozen=True)
class ProcessResult:
    """The outcome of :func:`handle_inbox_event` for one inbox id."""

    inbox_id: int
    outcome: Literal["processed", "already_processed", "missing"]
    record: CanonicalRecord | None = None


def _enqueue_all(ids: Sequence[int], enqueue: Enqueue) -> tuple[list[int], bool]:
    """Enqueue in order; stop at the first broker failure (the rest would fail the same way)."""
    done: list[int] = []
    for inbox_id in ids:
        try:
            enqueue(inbox_id)
        except enqueue_errors() as exc:
            _log.warning(
                "broker unavailable (%s): %d inbox event(s) left for the sweeper",
                type(exc).__name__,
                len(ids) - len(done),
            )
            return done, True
        done.append(inbox_id)
    return done, False


def _enqueue_delivery(ids: Sequence[int], enqueue: Enqueue) -> tuple[list[int], bool]:
    """One message for the delivery's ids when the queue takes several at once, else one per id."""
    if len(ids) < 2 or not isinstance(enqueue, DeliveryEnqueue):
        return _enqueue_all(ids, enqueue)
    try:
        enqueue.many(ids)
    except enqueue_errors() as exc:
        _log.warning(
            "broker unavailable (%s): %d inbox event(s) left for the sweeper", type(exc).__name__, len(ids)
        )
        return [], True
    return list(ids), False


def _mark_enqueued(store: InboxStore, ids: Sequence[int], *, requeued: bool = False) -> None:
    if not ids:
        return
    try:
        store.mark_enqueued(ids, requeued=requeued)
    except StoreUnavailableError:
        # Already queued; the sweeper may queue them again and the worker applies them once.
        _log.warning("could not mark %d inbox event(s) enqueued: store unavailable", len(ids))


def accept_webhook(
    source: str,
    request: WebhookRequest,
    *,
    connector: WebhookSource,
    store: InboxStore,
    enqueue: Enqueue,
    metrics: ReceiverMetrics | None = None,
) -> IntakeResult:
    """Verify, parse, durably store, then enqueue one webhook delivery.

    Raises :class:`~sync_worker.errors.SignatureError` (nothing parsed or stored),
    :class:`~sync_worker.errors.PayloadError` (nothing stored) or
    :class:`~sync_worker.errors.StoreUnavailableError` (nothing stored; the sender should retry).
    Returns once the events are committed, whether or not the broker took them.
    Events of a type the connector does not sync are counted and logged once per reason, not
    stored. An authenticated body of a shape it does not recognise
    (:data:`~sync_worker.canonical.UNRECOGNISED_ACTION`) is kept: stored already processed with its
    reason, listed as a dead letter with its body, and answered 2xx like the rest.
    """
    connector.verify_webhook(request)
    events = connector.parse_webhook(request.body)
    unhandled = sum(1 for event in events if not event.handled)
    kept = [e for e in events if e.handled or e.action == UNRECOGNISED_ACTION]
    accepted = store.accept_events(source, kept) if kept else AcceptResult(new_ids=(), duplicates=0)
    _keep_unhandled(source, events, accepted, store)
    enqueued, _ = _enqueue_delivery(accepted.new_ids, enqueue)
    _mark_enqueued(store, enqueued)
    result = IntakeResult(
        source=source,
        received=len(events),
        stored=tuple(accepted.new_ids),
        duplicates=accepted.duplicates,
        unhandled=unhandled,
        enqueued=len(enqueued),
    )
    if metrics is not None:
        metrics.count_events(source, "stored", len(result.stored))
        metrics.count_events(source, "duplicate", result.duplicates)
        metrics.count_events(source, "unhandled", result.unhandled)
        metrics.count_events(source, "enqueued", result.enqueued)
        metrics.count_events(source, "enqueue_failed", result.pending)
    _log.info(
        "webhook accepted",
        extra={
            "source": source,
            "events": result.received,
            "stored": len(result.stored),
            "duplicates": result.duplicates,
            "unhandled": result.unhandled,
            "enqueued": result.enqueued,
        },
    )
    return result


def _keep_unhandled(
    source: str, events: Sequence[WebhookEvent], accepted: AcceptResult, store: InboxStore
) -> None:
    unhandled = [event for event in events if not event.handled]
    for event in unhandled:
        note_skipped(source, event.reason or "not handled")
    for event in unhandled:
        inbox_id = accepted.kept.get(event.dedupe_key)
        if event.action != UNRECOGNISED_ACTION or inbox_id is None:
            continue  # a known type the service does not sync, or a redelivery already kept
        store.add_dead_letter(
            queue="webhooks",
            actor="webhook",
            message_id=f"{source}:{event.dedupe_key}"[:255],
            payload={"source": source, "inbox_id": inbox_id, "body": dict(event.raw)},
            reason=f"{source}: unrecognised webhook body: {event.reason or 'unknown shape'}",
            error_class="UnrecognisedWebhook",
        )


STALE_AFTER = timedelta(minutes=10)
"""An enqueued event still unprocessed after this long is enqueued again by the sweeper."""


def sweep_inbox(
    store: InboxStore,
    enqueue: Enqueue,
    *,
    older_than: timedelta = timedelta(seconds=30),
    stale_after: timedelta = STALE_AFTER,
    enqueued_before: datetime | None = None,
    batch_size: int = 200,
    max_batches: int = 50,
    metrics: ReceiverMetrics | None = None,
) -> SweepResult:
    """Enqueue inbox events stored at least ``older_than`` ago and never enqueued, and events
    enqueued ``stale_after`` ago that are still not processed (their message was lost when Redis
    restarted without its data; handling is idempotent, so a duplicate message is harmless).
    ``enqueued_before`` (the broker is known to have lost its queue since that instant, see
    :class:`~sync_worker.broker.QueueLossWatch`) re-sends at once every unprocessed event enqueued
    until then, without waiting ``stale_after``.

    ``older_than`` leaves in-flight requests time to enqueue their own events. One sweep sends at
    most ``max_batches`` batches of ``batch_size``, oldest first; each batch starts after the last
    row of the one before, so rows whose mark fails (or that come back every sweep) never hold
    the others back, and the next sweep carries on with whatever is left. Processed events and
    events that failed for good (a dead letter) are never sent again. Stops at the first broker
    failure. Raises :class:`~sync_worker.errors.StoreUnavailableError` if the store is down.
    """
    total = 0
    after: tuple[datetime, int] | None = None
    for _ in range(max_batches):
        pending = store.pending_enqueue(
            older_than, batch_size, stale_after=stale_after, enqueued_before=enqueued_before, after=after
        )
        if not pending:
            break
        after = (pending[-1].received_at, pending[-1].id)
        done, failed = _enqueue_all([event.id for event in pending], enqueue)
        _mark_enqueued(store, done, requeued=True)
        total += len(done)
        if failed:
            return _swept(total, True, metrics)
        if len(pending) < batch_size:
            break
    return _swept(total, False, metrics)


def _swept(total: int, failed: bool, metrics: ReceiverMetrics | None) -> SweepResult:
    if total:
        _log.info("sweeper enqueued %d stored inbox event(s)", total)
    if metrics is not None:
        metrics.count_events("sweeper", "swept", total)
    return SweepResult(enqueued=total, broker_failed=failed)


def handle_inbox_event(
    store: InboxStore,
    inbox_id: int,
    *,
    normalisers: Mapping[str, Normaliser] | None = None,
) -> ProcessResult:
    """Apply one stored event: normalise it through its connector's translation, mark it processed.

    Idempotent: an event already processed is skipped, so a message sent twice is applied once.
    The sync engine that routes the normalised record comes later; for now the record is returned.
    """
    event = store.get_inbox_event(inbox_id)
    if event is None:
        _log.warning("inbox event %d does not exist; nothing to do", inbox_id)
        return ProcessResult(inbox_id=inbox_id, outcome="missing")
    if event.processed_at is not None:
        return ProcessResult(inbox_id=inbox_id, outcome="already_processed")
    normalise = (normalisers or {}).get(event.source)
    record = normalise(event.to_webhook_event()) if normalise is not None else None
    if not store.mark_processed(inbox_id):
        return ProcessResult(inbox_id=inbox_id, outcome="already_processed", record=record)
    _log.info(
        "inbox event processed",
        extra={
            "inbox_id": inbox_id,
            "source": event.source,
            "object_type": event.object_type,
            "action": event.action,
            "stage": None if record is None or record.stage is None else str(record.stage),
        },
    )
    return ProcessResult(inbox_id=inbox_id, outcome="processed", record=record)
