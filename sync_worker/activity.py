"""What a worker reports of each run: the Prometheus series and the store's activity rows.

The actors call one of these around each poll, push and scan. The series are described in
:mod:`sync_worker.metrics`; the rows (:meth:`sync_worker.store.SyncStore.record_activity`) are what
``sync-worker status`` and ``GET /status`` read. A store without activity rows (a test fake) gets the
series only. A store that is down while a run is recorded is logged, never raised: the run itself
already succeeded or failed on its own terms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sync_worker.broker import count_dead_letter, describe_failure
from sync_worker.engine.model import PushStats
from sync_worker.errors import StoreUnavailableError
from sync_worker.metrics import FAILURES, LAST_SUCCESS, POLLS, RECORDS, WRITES

__all__ = [
    "OperationsStore",
    "is_paused",
    "note_dead_letter",
    "note_poll",
    "note_poll_failed",
    "note_push",
    "note_push_failed",
    "note_scan",
    "poll_name",
]

_log = logging.getLogger(__name__)


@runtime_checkable
class OperationsStore(Protocol):
    """The part of :class:`~sync_worker.store.SyncStore` that keeps activity rows and pauses."""

    def record_activity(self, kind: str, name: str, *, count: int = 0, error: str | None = None) -> None: ...

    def is_paused(self, scope: str, name: str) -> bool: ...


def poll_name(source: str, stream: str) -> str:
    """The activity name of a poll stream: ``source/stream``."""
    return f"{source}/{stream}"


def _record(store: object, kind: str, name: str, count: int, error: str | None) -> None:
    if not isinstance(store, OperationsStore):
        return
    try:
        store.record_activity(kind, name, count=count, error=error)
    except StoreUnavailableError as exc:
        _log.warning("activity not recorded: %s", exc, extra={"kind": kind, "name": name})


def note_poll(store: object, source: str, stream: str, records: int) -> None:
    """A poll of ``source``/``stream`` succeeded with ``records`` pulled."""
    POLLS.labels(source=source, stream=stream, outcome="ok").inc()
    RECORDS.labels(source=source, stream=stream).inc(records)
    LAST_SUCCESS.labels(operation="poll", system=source, stream=stream).set(time.time())
    _record(store, "poll", poll_name(source, stream), records, None)


def note_poll_failed(store: object, source: str, stream: str, exc: BaseException) -> None:
    POLLS.labels(source=source, stream=stream, outcome="error").inc()
    FAILURES.labels(system=source, operation="poll").inc()
    _record(store, "poll", poll_name(source, stream), 0, describe_failure(exc))


def note_push(store: object, stats: PushStats) -> None:
    """A push to ``stats.target`` ran: its outcome counts."""
    target = stats.target
    dead = len(stats.dead)
    for outcome, amount in (
        ("written", stats.writes),
        ("created", stats.created),
        ("removed", stats.removed),
        ("skipped", stats.skipped),
        ("retried", stats.retried),
        ("dead", dead),
    ):
        if amount:
            WRITES.labels(target=target, outcome=outcome).inc(amount)
    if stats.retried or dead:
        FAILURES.labels(system=target, operation="push").inc(stats.retried + dead)
    LAST_SUCCESS.labels(operation="push", system=target, stream="").set(time.time())
    _record(store, "push", target, stats.writes, None)


def note_push_failed(store: object, target: str, exc: BaseException) -> None:
    FAILURES.labels(system=target, operation="push").inc()
    _record(store, "push", target, 0, describe_failure(exc))


def note_scan(store: object, flags: int, exc: BaseException | None = None) -> None:
    """A leak scan finished with ``flags`` open (or failed with ``exc``)."""
    if exc is None:
        LAST_SUCCESS.labels(operation="scan", system="leaks", stream="").set(time.time())
    _record(store, "scan", "leaks", flags, None if exc is None else describe_failure(exc))


def note_dead_letter(queue: str, args: Sequence[object]) -> None:
    """One message became a dead letter; its system is its first argument for polls and pushes."""
    count_dead_letter(queue, args)


def is_paused(store: object, scope: str, name: str) -> bool:
    """Whether an operator paused this source or route (a store without pauses: never)."""
    return isinstance(store, OperationsStore) and store.is_paused(scope, name)
