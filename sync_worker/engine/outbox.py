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
* ``alert``: a message for the alert webhook (the ``alert`` target, drained by
  :func:`sync_worker.leaks.alerts.push_alerts`).

A kind the push does not know is never marked sent: it fails for good with a reason that names
the kind, and becomes a dead letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from sync_worker.store import OutboxItem

__all__ = ["ALERT", "FLAG", "MIRROR", "by_kind"]

MIRROR: Final = "mirror"
FLAG: Final = "flag"
ALERT: Final = "alert"


def by_kind(items: Sequence[OutboxItem]) -> dict[str, list[OutboxItem]]:
    """The items grouped by kind, each group in the order given."""
    groups: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in items:
        groups[item.kind].append(item)
    return dict(groups)
