"""Pipedrive webhook events (stored in the inbox) -> canonical records.

Pipedrive webhooks (v2 ``data``/``previous``, v1 ``current``/``previous``) carry the whole deal, so
no read is needed; a deletion carries the deal as it was.
https://pipedrive.readme.io/docs/guide-for-webhooks-v2 and https://pipedrive.readme.io/docs/guide-for-webhooks
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sync_worker.canonical import CanonicalRecord
from sync_worker.connector import NormaliseContext, Normalised, deleted_record

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["normalise_events"]


def normalise_events(
    events: Sequence[InboxEvent],
    ctx: NormaliseContext,
    to_record: Callable[[Mapping[str, Any]], CanonicalRecord],
) -> Normalised:
    """The records a batch of Pipedrive inbox events stands for (no API call)."""
    out = Normalised()
    for event in events:
        if event.object_type != "deal":
            out.skip(event, f"{event.object_type} events are not synced")
            continue
        raw = event.payload
        current = raw.get("data") if "data" in raw else raw.get("current")
        previous = raw.get("previous")
        record: CanonicalRecord | None
        if event.action == "delete" or (isinstance(current, Mapping) and current.get("is_deleted") is True):
            base = previous if isinstance(previous, Mapping) and "update_time" in previous else None
            fallback = to_record(base) if base is not None else None
            record = deleted_record(event, "deal", ctx, fallback)
            reason = "deletion of a deal never stored"
        elif event.action in ("create", "change") and isinstance(current, Mapping):
            record = replace(to_record(current), change_source=event.change_source)
            reason = ""
        else:
            record = None
            reason = f"unhandled action {event.action!r}"
        if record is None:
            out.skip(event, reason)
        else:
            out.records.append((record, (event.id,)))
    return out
