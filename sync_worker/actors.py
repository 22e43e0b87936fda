"""Dramatiq actors: thin, module-level, taking JSON-serialisable ids and primitives only.

Each actor calls one service function and returns (house style rule 6)::

    process_inbox_delivery(inbox_ids)      -> SyncService.handle_inbox_events (one webhook delivery:
                                              its reads batched, one transaction), then schedule
                                              pushes; a failing delivery of several events is split
                                              into process_inbox_event messages, retried and
                                              dead-lettered one event at a time
    process_inbox_event(inbox_id)          -> SyncService.handle_inbox_event, then schedule pushes
    poll_source(source, stream, full)      -> SyncService.poll, then schedule pushes (and, after a
                                              completed full pull, a leak scan)
    push_target(target)                    -> SyncService.push; dead items become dead letters
    push_target("alert")                   -> the configured alert push (leaks.push_alerts), likewise
    scan_leaks_job()                       -> the configured leak scan, then schedule pushes
                                              (and the alert push when the scan queued alerts)
    sweep_inbox_job(enqueued_before=None)  -> intake.sweep_inbox (stored but never enqueued events)
    reapply_held_job()                     -> SyncService.reapply_held (held stages a reloaded
                                              mapping now covers), then schedule pushes

What a worker process needs (store, service, leak scan) is set once per process with
:func:`configure_actors` (by :class:`sync_worker.runtime.RuntimeMiddleware` at process boot), never
read from the environment here. Actors are declared against
:data:`sync_worker.broker.UNBOUND_BROKER`, so importing this module has no side effect;
:func:`sync_worker.broker.install_broker` binds them to the real one.

Pushes coalesce: after a change, ``push_target(target)`` is sent with a delay of twice the
engine's coalesce window, at most once per window per target (a :data:`PushGuard`; in production a
Redis ``SET NX PX`` shared by every worker). Any outbox item enqueued at ``t`` is due at ``t + W``;
either its own push runs at ``t + 2W`` or one sent within the last ``W`` runs after ``t + W``.

:func:`replay_dead_letter` re-sends a dead letter's original message (or, for a push item that
died, queues a fresh copy of the outbox item and a push) and marks it replayed.
https://dramatiq.io/guide.html#actors, https://dramatiq.io/best_practices.html,
https://dramatiq.io/reference.html#dramatiq.Actor.message_with_options
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import dramatiq
from dramatiq import Actor, Broker, Message

from sync_worker.activity import (
    is_paused,
    note_poll,
    note_poll_failed,
    note_push,
    note_push_failed,
    note_scan,
)
from sync_worker.broker import NOT_RETRYABLE, UNBOUND_BROKER, DeadLetterSink, count_dead_letter
from sync_worker.engine.held import HeldReapply
from sync_worker.engine.model import DeadItem, PullStats, PushStats
from sync_worker.errors import ConfigError, PermanentError, StoreUnavailableError, TransientError
from sync_worker.intake import DeliveryEnqueue, InboxStore, Normaliser, handle_inbox_event, sweep_inbox
from sync_worker.leaks.alerts import ALERT_TARGET
from sync_worker.store.models import DeadLetter, OutboxItem

__all__ = [
    "ALERT_TARGET",
    "ALL_ACTORS",
    "INBOX_QUEUE",
    "MAINTENANCE_QUEUE",
    "POLL_QUEUE",
    "PUSH_QUEUE",
    "ActorContext",
    "ActorService",
    "ActorStore",
    "LocalPushGuard",
    "LocalPushLock",
    "PushGuard",
    "PushLock",
    "ReplayStore",
    "actor_named",
    "broker_enqueue",
    "clear_actors",
    "configure_actors",
    "configured_store",
    "current_context",
    "poll_source",
    "prepare_targets_job",
    "process_inbox_delivery",
    "process_inbox_event",
    "push_target",
    "reapply_held_job",
    "record_dead_items",
    "replay_dead_letter",
    "routed_targets",
    "scan_leaks_job",
    "schedule_pushes",
    "sweep_inbox_job",
]

_log = logging.getLogger(__name__)

INBOX_QUEUE: Final = "inbox"
POLL_QUEUE: Final = "poll"
PUSH_QUEUE: Final = "push"
MAINTENANCE_QUEUE: Final = "maintenance"

PUSH_BATCH: Final = 200  # one push stays short, well inside the push lease
_POLL_TIME_LIMIT_MS: Final = 2 * 3600 * 1000  # a full poll of a large account streams many pages

PushGuard = Callable[[str, int], bool]
"""``guard(target, ttl_ms)``: True when the caller should send the push (nobody did in ``ttl_ms``)."""

PushLock = Callable[[str], AbstractContextManager[bool]]
"""``with lock(target) as held:`` one push of ``target`` at a time, so two workers never send the
same outbox items. Never waits: ``held`` is False when another push runs (or a killed worker's
lease has not expired yet); the caller then tries again a little later instead of blocking a
worker thread (a blocked thread stops its worker from fetching, and so from redelivering)."""

PUSH_BUSY_RETRY_MS: Final = 5_000


class ActorService(Protocol):
    """The part of :class:`~sync_worker.engine.SyncService` the actors call."""

    def handle_inbox_event(self, inbox_id: int) -> object: ...

    def handle_inbox_events(self, inbox_ids: Sequence[int]) -> object: ...

    def poll(
        self, source: str, stream: str, *, full: bool = False, progress: Callable[[int], None] | None = None
    ) -> PullStats: ...

    def push(self, target: str, *, limit: int = 500) -> PushStats: ...

    def reapply_held(self) -> HeldReapply: ...


class ActorStore(InboxStore, DeadLetterSink, Protocol):
    """What the actors need of the store: the inbox and the dead letters."""


class ReplayStore(DeadLetterSink, Protocol):
    """What :func:`replay_dead_letter` needs of the store."""

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    def mark_replayed(self, dead_letter_id: int) -> bool: ...

    def get_outbox(self, outbox_id: int) -> OutboxItem | None: ...

    def enqueue_outbox(
        self,
        target: str,
        idempotency_key: str,
        payload: Mapping[str, Any],
        *,
        not_before: datetime | None = None,
        kind: str = "mirror",
    ) -> int | None: ...


class LocalPushLock:
    """A :data:`PushLock` for one process: a lock per target."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def __call__(self, target: str) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(target, threading.Lock())
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


class LocalPushGuard:
    """A :data:`PushGuard` for one process (tests, the one-shot ``sync`` command)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, target: str, ttl_ms: int) -> bool:
        now = self._clock()
        with self._lock:
            if self._until.get(target, 0.0) > now:
                return False
            self._until[target] = now + ttl_ms / 1000
            return True


@dataclass(frozen=True)
class ActorContext:
    """What the actors of one worker process use, built once by the entry point.

    ``service`` None keeps the receiver-only behaviour (inbox events are normalised and marked
    processed, nothing is routed). ``push_targets`` are the systems a change may have to reach.
    ``alert_push(limit)`` drains the ``"alert"`` outbox (None: no alert webhook configured).
    """

    store: ActorStore
    normalisers: Mapping[str, Normaliser] = field(default_factory=dict)
    service: ActorService | None = None
    leak_scan: Callable[[], object] | None = None
    push_targets: tuple[str, ...] = ()
    push_window: timedelta = timedelta(seconds=2)
    push_guard: PushGuard = field(default_factory=LocalPushGuard)
    alert_push: Callable[[int], PushStats] | None = None
    push_lock: PushLock = field(default_factory=LocalPushLock)
    prepare: Callable[[], object] | None = None

    def require_service(self) -> ActorService:
        if self.service is None:
            raise ConfigError("actors have no sync service: the worker runtime was not built")
        return self.service


_context: ActorContext | None = None
_context_lock = threading.Lock()


def configure_actors(
    store: ActorStore,
    *,
    normalisers: Mapping[str, Normaliser] | None = None,
    service: ActorService | None = None,
    leak_scan: Callable[[], object] | None = None,
    push_targets: tuple[str, ...] = (),
    push_window: timedelta = timedelta(seconds=2),
    push_guard: PushGuard | None = None,
    alert_push: Callable[[int], PushStats] | None = None,
    push_lock: PushLock | None = None,
    prepare: Callable[[], object] | None = None,
) -> ActorContext:
    """Set the worker process's context (call before the worker starts consuming)."""
    global _context
    context = ActorContext(
        store=store,
        normalisers=dict(normalisers or {}),
        service=service,
        leak_scan=leak_scan,
        push_targets=tuple(push_targets),
        push_window=push_window,
        push_guard=push_guard if push_guard is not None else LocalPushGuard(),
        alert_push=alert_push,
        push_lock=push_lock if push_lock is not None else LocalPushLock(),
        prepare=prepare,
    )
    with _context_lock:
        _context = context
    return context


def clear_actors() -> None:
    """Forget the context (worker shutdown, tests); actors then refuse to run."""
    global _context
    with _context_lock:
        _context = None


def current_context() -> ActorContext:
    """The configured context; :class:`ConfigError` if the entry point did not configure one."""
    context = _context
    if context is None:
        raise ConfigError("actors are not configured: call sync_worker.actors.configure_actors() first")
    return context


def configured_store() -> ActorStore | None:
    """The configured store, or None (where :class:`~sync_worker.broker.DeadLetterMiddleware` writes)."""
    context = _context
    return None if context is None else context.store


def routed_targets(outcome: object) -> tuple[str, ...] | None:
    """The targets a handled delivery or poll queued writes for (its results' or stats'
    ``targets``); None when the outcome does not say, or is a redelivery (then every target is
    scheduled)."""
    if getattr(outcome, "redone", 0):
        return None  # a redelivery: its first run may have died before scheduling anything
    items = outcome if isinstance(outcome, (list, tuple)) else [outcome]
    found: set[str] = set()
    for item in items:
        targets = getattr(item, "targets", None)
        enqueued = int(getattr(item, "enqueued", 0) or 0)
        if not isinstance(targets, (set, frozenset)) or (enqueued > 0 and not targets):
            return None  # it queued writes without saying for whom
        found |= targets
    return tuple(sorted(found))


def schedule_pushes(context: ActorContext, targets: tuple[str, ...] | None = None) -> list[str]:
    """Send a delayed ``push_target`` for each target (default: every push target) nobody
    scheduled within the window; which were sent. A change marks only the targets it queued for."""
    window_ms = max(1, int(context.push_window.total_seconds() * 1000))
    sent: list[str] = []
    for target in context.push_targets if targets is None else targets:
        if context.push_guard(target, window_ms):
            push_target.send_with_options(args=(target,), delay=2 * window_ms)
            sent.append(target)
    return sent


# -- actors ------------------------------------------------------------------------------------


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=INBOX_QUEUE, throws=NOT_RETRYABLE)
def process_inbox_event(inbox_id: int) -> None:
    """Apply one accepted webhook event (idempotent: a redelivery is a no-op)."""
    context = current_context()
    if context.service is None:
        handle_inbox_event(context.store, inbox_id, normalisers=context.normalisers)
        return
    outcome = context.service.handle_inbox_event(inbox_id)
    schedule_pushes(context, routed_targets(outcome))


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=INBOX_QUEUE, throws=NOT_RETRYABLE)
def process_inbox_delivery(inbox_ids: list[int]) -> None:
    """Apply the accepted events of one webhook delivery together (idempotent, like one event).

    A transient failure (a provider's 5xx or 429, the store down) retries the whole delivery.
    Should it fail otherwise, its events go on alone: one ``process_inbox_event`` each, so a
    single bad event is retried and dead-lettered by itself and the others still land.
    """
    context = current_context()
    ids = [int(inbox_id) for inbox_id in inbox_ids]
    if context.service is None:
        for inbox_id in ids:
            handle_inbox_event(context.store, inbox_id, normalisers=context.normalisers)
        return
    try:
        outcome = context.service.handle_inbox_events(ids)
    except (TransientError, StoreUnavailableError):
        raise  # the whole delivery is retried: nothing of it was committed
    except Exception as exc:
        if len(ids) < 2:
            raise
        _log.warning(
            "delivery of %d inbox events failed (%s): each goes on as its own message",
            len(ids),
            type(exc).__name__,
        )
        for inbox_id in ids:
            process_inbox_event.send(inbox_id)
        return
    schedule_pushes(context, routed_targets(outcome))


@dramatiq.actor(
    broker=UNBOUND_BROKER, queue_name=POLL_QUEUE, throws=NOT_RETRYABLE, time_limit=_POLL_TIME_LIMIT_MS
)
def poll_source(source: str, stream: str, full: bool = False) -> None:
    """Pull one stream of one source since its cursor (``full``: from the beginning).

    Skipped while an operator paused the source (``sync-worker pause``).
    """
    context = current_context()
    if is_paused(context.store, "source", source):
        _log.info("poll skipped: %s is paused", source, extra={"source": source, "stream": stream})
        return
    try:
        stats = context.require_service().poll(source, stream, full=full)
    except Exception as exc:  # recorded for status and metrics, then re-raised for Dramatiq's retries
        note_poll_failed(context.store, source, stream, exc)
        raise
    note_poll(context.store, source, stream, stats.records)
    _log.info(
        "poll done: %s/%s, %d records, %d changed, %d queued",
        source,
        stream,
        stats.records,
        stats.changed,
        stats.enqueued,
        extra={"source": source, "stream": stream, "records": stats.records, "enqueued": stats.enqueued},
    )
    if stats.enqueued:
        schedule_pushes(context, routed_targets(stats))
    if full and context.leak_scan is not None:
        scan_leaks_job.send()  # a completed full pull is when vanished deals can be judged


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=PUSH_QUEUE, throws=NOT_RETRYABLE)
def push_target(target: str) -> None:
    """Write the due outbox items of one target; items that failed for good become dead letters.

    Target ``"alert"`` runs the configured alert push (:func:`sync_worker.leaks.push_alerts`);
    without an alert webhook it is a :class:`ConfigError`.
    """
    context = current_context()
    if target == ALERT_TARGET and context.alert_push is None:
        raise ConfigError("no alert webhook configured: set SYNC_ALERTS__WEBHOOK_URL")
    if is_paused(context.store, "source", target):
        _log.info(
            "push skipped: %s is paused (its writes wait in the outbox)", target, extra={"target": target}
        )
        return
    with context.push_lock(target) as held:
        if not held:  # another worker is pushing this target: look again shortly
            push_target.send_with_options(args=(target,), delay=PUSH_BUSY_RETRY_MS)
            return
        try:
            if target == ALERT_TARGET:
                assert context.alert_push is not None
                stats = context.alert_push(PUSH_BATCH)
            else:
                stats = context.require_service().push(target, limit=PUSH_BATCH)
        except Exception as exc:  # recorded for status and metrics, then re-raised for Dramatiq's retries
            note_push_failed(context.store, target, exc)
            raise
        record_dead_items(context.store, stats.dead, target)
        note_push(context.store, stats)
    if stats.items >= PUSH_BATCH:
        push_target.send(target)  # more are due: keep draining


def record_dead_items(store: DeadLetterSink, dead: Sequence[DeadItem], target: str = "") -> list[int]:
    """One dead letter per outbox item that failed for good (message id ``outbox:<id>``); their ids."""
    for _item in dead:
        count_dead_letter(PUSH_QUEUE, [target])
    return [
        store.add_dead_letter(
            queue=PUSH_QUEUE,
            actor="push_target",
            message_id=f"outbox:{item.outbox_id}",
            payload={"outbox_id": item.outbox_id, "idempotency_key": item.idempotency_key, **item.payload},
            reason=item.reason,
            error_class=PermanentError.__name__,
        )
        for item in dead
    ]


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=MAINTENANCE_QUEUE, throws=NOT_RETRYABLE)
def scan_leaks_job() -> None:
    """Run the leak scan; its write-backs and alerts wait in the outbox for the pushes it schedules."""
    context = current_context()
    if context.leak_scan is None:
        raise ConfigError("actors have no leak scan: the worker runtime was not built")
    try:
        outcome = context.leak_scan()
    except Exception as exc:  # recorded for status, then re-raised for Dramatiq's retries
        note_scan(context.store, 0, exc)
        raise
    open_by_rule = getattr(outcome, "open_by_rule", None)
    note_scan(context.store, sum(open_by_rule.values()) if isinstance(open_by_rule, Mapping) else 0)
    targets = context.push_targets
    if context.alert_push is not None and _queued_alerts(outcome):
        targets = (*targets, ALERT_TARGET)
    schedule_pushes(context, targets)


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=MAINTENANCE_QUEUE, throws=NOT_RETRYABLE)
def prepare_targets_job() -> None:
    """Create what the service writes in the targets (HubSpot deal properties) when missing."""
    context = current_context()
    if context.prepare is None:
        raise ConfigError("actors have no target preparation: the worker runtime was not built")
    context.prepare()


def _queued_alerts(outcome: object) -> bool:
    """Whether a scan outcome queued alerts; an outcome that does not say (not a ScanResult) may have."""
    alerts = getattr(outcome, "alerts", None)
    return not isinstance(alerts, int) or alerts > 0


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=MAINTENANCE_QUEUE, throws=NOT_RETRYABLE)
def sweep_inbox_job(enqueued_before: str | None = None) -> None:
    """Enqueue inbox events that were stored but never enqueued (the broker was down), and those
    enqueued long ago and still unprocessed; with ``enqueued_before`` (ISO 8601, sent when the
    broker is known to have lost its queue), at once every unprocessed event enqueued until then."""
    context = current_context()
    before = datetime.fromisoformat(enqueued_before) if enqueued_before else None
    sweep_inbox(context.store, broker_enqueue(process_inbox_event.broker), enqueued_before=before)


@dramatiq.actor(broker=UNBOUND_BROKER, queue_name=MAINTENANCE_QUEUE, throws=NOT_RETRYABLE)
def reapply_held_job() -> None:
    """Re-apply the held stages the mappings in force now cover (sent after a good reload and at
    worker start), then schedule the pushes their moves queued."""
    context = current_context()
    outcome = context.require_service().reapply_held()
    if outcome.reapplied or outcome.still_held:
        _log.info(
            "held stages: %d re-applied, %d still held (see: sync-worker held list)",
            outcome.reapplied,
            outcome.still_held,
            extra={"reapplied": outcome.reapplied, "still_held": outcome.still_held},
        )
    if outcome.enqueued:
        schedule_pushes(context, routed_targets(outcome))


ALL_ACTORS: Final[tuple[Actor[Any, Any], ...]] = (
    process_inbox_delivery,
    process_inbox_event,
    prepare_targets_job,
    poll_source,
    push_target,
    reapply_held_job,
    scan_leaks_job,
    sweep_inbox_job,
)


def actor_named(name: str) -> Actor[Any, Any]:
    """The project actor called ``name``; :class:`PermanentError` when there is none."""
    for actor in ALL_ACTORS:
        if actor.actor_name == name:
            return actor
    raise PermanentError(f"unknown actor {name!r}; known: {', '.join(a.actor_name for a in ALL_ACTORS)}")


def broker_enqueue(broker: Broker) -> DeliveryEnqueue:
    """An :class:`~sync_worker.intake.DeliveryEnqueue` on ``broker``: ``process_inbox_event`` for
    one id, ``process_inbox_delivery`` for a delivery's ids (in messages of at most
    :data:`DELIVERY_MESSAGE_IDS`).

    Messages are built from the actors (name, queue) and enqueued on the broker given, whichever
    broker the actors are bound to globally; the queue is declared on it first.
    """
    broker.declare_queue(process_inbox_event.queue_name)
    return _BrokerEnqueue(broker)


DELIVERY_MESSAGE_IDS: Final = 100


@dataclass(frozen=True)
class _BrokerEnqueue:
    broker: Broker

    def __call__(self, inbox_id: int) -> None:
        self.broker.enqueue(process_inbox_event.message(inbox_id))

    def many(self, inbox_ids: Sequence[int]) -> None:
        ids = list(inbox_ids)
        for start in range(0, len(ids), DELIVERY_MESSAGE_IDS):
            self.broker.enqueue(process_inbox_delivery.message(ids[start : start + DELIVERY_MESSAGE_IDS]))


def replay_dead_letter(store: ReplayStore, broker: Broker, dead_letter_id: int) -> Message[Any]:
    """Re-send a dead letter's message on ``broker`` and mark it replayed; the message sent.

    A dead push item (payload with ``outbox_id``) is queued again as a fresh outbox item (new
    idempotency key derived from the old one) followed by a ``push_target`` message. Raises
    :class:`PermanentError` for an unknown id, an already replayed one, or an unknown actor.
    Enqueue first, mark second: a crash in between replays twice, which the handlers absorb.
    """
    dead = store.get_dead_letter(dead_letter_id)
    if dead is None:
        raise PermanentError(f"dead letter {dead_letter_id} does not exist")
    if dead.replayed_at is not None:
        raise PermanentError(f"dead letter {dead_letter_id} was already replayed at {dead.replayed_at}")
    payload = dict(dead.payload)
    if "outbox_id" in payload and "args" not in payload:
        item = store.get_outbox(int(payload["outbox_id"]))
        if item is None:
            raise PermanentError(f"dead letter {dead_letter_id}: outbox item {payload['outbox_id']} is gone")
        store.enqueue_outbox(
            item.target, f"{item.idempotency_key}:replay:{dead.id}", item.payload, kind=item.kind
        )
        actor, args, kwargs = push_target, [item.target], {}
    else:
        actor = actor_named(dead.actor)
        args = list(payload.get("args", []))
        kwargs = dict(payload.get("kwargs", {}))
    broker.declare_queue(actor.queue_name)
    message = broker.enqueue(actor.message_with_options(args=tuple(args), kwargs=kwargs))
    store.mark_replayed(dead_letter_id)
    _log.info(
        "dead letter replayed",
        extra={"dead_letter_id": dead_letter_id, "actor": actor.actor_name, "message_id": message.message_id},
    )
    return message
