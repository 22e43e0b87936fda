"""HubSpot webhook events (stored in the inbox) -> canonical records.

HubSpot events carry only ``objectId`` and, for property changes, one property
(https://developers.hubspot.com/docs/api/webhooks). The deals of one batch of events are read
together with ``POST /crm/v3/objects/deals/batch/read``, up to 100 ids a call
(https://developers.hubspot.com/docs/api/crm/deals). A deletion answers itself (no read), and so
does an event whose ``changeSource``/``sourceId`` says the service wrote it, or whose property value
is one the service wrote to that deal within the echo window (its own echo).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from connectors.hubspot.convert import SOURCE
from sync_worker.canonical import CanonicalRecord
from sync_worker.connector import NormaliseContext, Normalised, deleted_record

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["READ_BATCH", "normalise_events"]

READ_BATCH = 100
"""Ids per ``batch/read`` call (HubSpot's documented maximum)."""

# Deal properties that carry a synced field as is (the stage goes through the mappings).
_FIELDS = {
    "amount": "amount",
    "dealname": "title",
    "deal_currency_code": "currency",
    "closed_lost_reason": "lost_reason",
}
_READ_ACTIONS = frozenset({"creation", "propertyChange", "restore", "merge"})


def _remembered(event: InboxEvent, ctx: NormaliseContext) -> bool:
    """True when a property change reports a value the service wrote (no read needed)."""
    was_written = ctx.was_written
    if was_written is None or event.action != "propertyChange" or event.property_value is None:
        return False
    if event.property_name == "dealstage":
        key = ctx.mappings.to_canonical(SOURCE, pipeline=None, stage=event.property_value)
        value = getattr(key, "value", None)
        if not isinstance(key, str) or value is None:
            return False
        return was_written(SOURCE, event.object_id, "stage", value)
    field_name = _FIELDS.get(event.property_name or "")
    if field_name is None:
        return False
    return was_written(SOURCE, event.object_id, field_name, event.property_value)


def normalise_events(
    events: Sequence[InboxEvent],
    ctx: NormaliseContext,
    read_deals: Callable[[Sequence[str]], list[CanonicalRecord]],
    *,
    batch: int = READ_BATCH,
) -> Normalised:
    """The records a batch of HubSpot inbox events stands for (see the module docstring)."""
    out = Normalised()
    to_read: dict[str, list[InboxEvent]] = {}
    for event in events:
        if event.object_type != "deal":
            out.skip(event, f"{event.object_type} events are not synced")
        elif event.action == "deletion":
            record = deleted_record(event, "deal", ctx)
            if record is None:
                out.skip(event, "deletion of a deal never stored")
            else:
                out.records.append((record, (event.id,)))
        elif ctx.is_own(event.change_source) or (
            not ctx.is_other(event.change_source) and _remembered(event, ctx)
        ):
            out.echo_ids.append(event.id)
        elif event.action in _READ_ACTIONS:
            object_id = str(event.payload.get("primaryObjectId") or event.object_id)
            to_read.setdefault(object_id, []).append(event)
        else:
            out.skip(event, f"unhandled action {event.action!r}")
    if not to_read:
        return out
    ids = list(to_read)
    found: dict[str, CanonicalRecord] = {}
    for start in range(0, len(ids), batch):
        out.reads += 1
        for record in read_deals(ids[start : start + batch]):
            found[record.external_id] = record
    _attach(to_read, found, out)
    return out


def _attach(
    to_read: Mapping[str, list[InboxEvent]], found: Mapping[str, CanonicalRecord], out: Normalised
) -> None:
    for object_id, group in to_read.items():
        record = found.get(object_id)
        if record is None:
            # Gone by the time it was read: archived since, or never visible to this token.
            for event in group:
                out.skip(event, "deal not found when read")
            continue
        newest = max(group, key=lambda e: e.occurred_at)
        out.records.append((replace(record, change_source=newest.change_source), tuple(e.id for e in group)))
