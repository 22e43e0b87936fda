"""The kinds of outbox item, one per producer, and how the push reads each payload.

Every producer queues the same row (target, idempotency key, payload, attempts) with a ``kind``
that says how its payload is written (``outbox.kind``, revision ``0005_outbox_kind``):

* ``mirror``: a route's field writes (lead statuses included), queued by the router with each
  field's value, source timestamp and origin; items for one target record coalesce (newest value
  per field wins) into one write.
* ``flag``: a leak-flag write-back or clear, a serialised
  :class:`~sync_worker.canonical.CanonicalUpdate` whose ``flag`` is set (queued by the leak scan).
  Only the newest item per target record is written; it rides on that record's mirror write when
  one is due in the same drain (one API input per record and batch).
* ``remove``: the deletion or archiving of one target record (a route's ``on_delete: delete`` or
  ``archive``), queued by the router with the target record's kind and id and the mode; pushed
  through the target connector's optional ``remove_records``
  (:class:`~sync_worker.connector.RecordRemover`); a target without it fails the item for good,
  naming the route, so it becomes a dead letter.
* ``alert``: a message for the alert webhook (the ``alert`` target, drained by
  :func:`sync_worker.leaks.alerts.push_alerts`).

A kind the push does not know is never marked sent: it fails for good with a reason that names
the kind, and becomes a dead letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sync_worker.canonical import UpdateResult
from sync_worker.engine.model import DeadItem, EngineConfig
from sync_worker.store import OutboxItem, SyncStore

__all__ = ["ALERT", "FLAG", "MIRROR", "REMOVE", "by_kind", "settle_failed"]

MIRROR: Final = "mirror"
FLAG: Final = "flag"
REMOVE: Final = "remove"
ALERT: Final = "alert"


def by_kind(items: Sequence[OutboxItem]) -> dict[str, list[OutboxItem]]:
    """The items grouped by kind, each group in the order given."""
    groups: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in items:
        groups[item.kind].append(item)
    return dict(groups)


def settle_failed(
    store: SyncStore,
    items: Sequence[OutboxItem],
    result: UpdateResult,
    *,
    config: EngineConfig,
    now: datetime,
) -> tuple[int, list[DeadItem]]:
    """Record a failed write of ``items``: retried later with a growing delay while retryable and
    under ``config.max_attempts``, else dead with the reason. ``(items retried, dead items)``."""
    reason = (result.error or "rejected by the target")[:500]
    attempts = max(item.attempts for item in items) + 1
    if result.retryable and attempts < config.max_attempts:
        for item in items:
            store.mark_outbox_failed(item.id, reason, now + config.retry_delay(attempts))
        return len(items), []
    for item in items:
        store.mark_outbox_failed(item.id, reason, now, dead=True)
    return 0, [DeadItem(item.id, item.idempotency_key, reason, dict(item.payload)) for item in items]
