"""Inbox events -> canonical records, reading from the source only when the event does not say enough.

What each source's webhook carries decides the work:

* Pipedrive (v2 ``data``/``previous``, v1 ``current``/``previous``) carries the whole deal, turned
  into a record by the connector's ``to_record``; a deletion carries the deal as it was.
  https://pipedrive.readme.io/docs/guide-for-webhooks-v2 and https://pipedrive.readme.io/docs/guide-for-webhooks
* LaGrowthMachine inbox events carry the message and the lead: a received message is a reply.
  https://documenter.getpostman.com/view/2071164/TVCmSkH2
* HubSpot events carry only ``objectId`` and, for property changes, one property. The deals of
  one batch of events are read together with ``POST /crm/v3/objects/deals/batch/read`` (up to 100
  ids per call): https://developers.hubspot.com/docs/api/webhooks and
  https://developers.hubspot.com/docs/api/crm/deals. A deletion answers itself (no read), and so
  does an event whose ``changeSource``/``sourceId`` says the service wrote it, or whose property
  value is one the service wrote to that deal within the echo window (our own echo).

Events the engine does not act on (other objects, outgoing messages) yield no record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sync_worker.canonical import CanonicalRecord, RecordKind
from sync_worker.store.models import InboxEvent, StoredRecord

__all__ = [
    "DealReader",
    "EchoCheck",
    "Normalised",
    "RecordTranslator",
    "StoredLookup",
    "normalise_events",
    "record_from_stored",
]


@runtime_checkable
class DealReader(Protocol):
    """A connector that looks records up by id in batches (HubSpot ``read_deals``)."""

    def read_deals(self, ids: Sequence[str]) -> list[CanonicalRecord]: ...


@runtime_checkable
class RecordTranslator(Protocol):
    """A connector that turns one webhook object into a record (Pipedrive ``to_record``)."""

    def to_record(self, deal: Mapping[str, Any]) -> CanonicalRecord: ...


StoredLookup = Callable[[str, RecordKind, str], StoredRecord | None]


@dataclass
class Normalised:
    """The records a batch of inbox events stands for, each with the inbox ids it answers.

    ``echo_ids`` are events recognised as our own writes without reading anything; ``skipped_ids``
    events that stand for no record (unhandled, or about a record we never stored).
    """

    records: list[tuple[CanonicalRecord, tuple[int, ...]]] = field(default_factory=list)
    echo_ids: list[int] = field(default_factory=list)
    skipped_ids: list[int] = field(default_factory=list)
    reads: int = 0


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


def _deleted(
    event: InboxEvent, kind: RecordKind, lookup: StoredLookup, fallback: CanonicalRecord | None
) -> CanonicalRecord | None:
    stored = lookup(event.source, kind, event.object_id)
    if stored is not None:
        return record_from_stored(
            stored, updated_at=event.occurred_at, status="deleted", change_source=event.change_source
        )
    if fallback is not None:
        return replace(
            fallback, status="deleted", updated_at=event.occurred_at, change_source=event.change_source
        )
    return None


def _is_own(event: InboxEvent, own: Mapping[str, frozenset[str]]) -> bool:
    return event.change_source is not None and event.change_source in own.get(event.source, frozenset())


def _trusted_other(event: InboxEvent, own: Mapping[str, frozenset[str]]) -> bool:
    """True when the provider names a writer and it is not us (markers known): a person's change."""
    return event.change_source is not None and bool(own.get(event.source)) and not _is_own(event, own)


# HubSpot deal properties that carry a synced field as is (the stage goes through the mappings).
_HUBSPOT_FIELDS = {
    "amount": "amount",
    "dealname": "title",
    "deal_currency_code": "currency",
    "closed_lost_reason": "lost_reason",
}

EchoCheck = Callable[[str, str, str, object], bool]
"""``(system, external id, field, value) -> bool``: did the service write this value lately?"""


def _remembered(event: InboxEvent, mappings: object, was_written: EchoCheck | None) -> bool:
    """True when a HubSpot property change reports a value the service wrote (no read needed)."""
    if was_written is None or event.action != "propertyChange" or event.property_value is None:
        return False
    name = event.property_name
    if name == "dealstage":
        to_canonical = getattr(mappings, "to_canonical", None)
        if to_canonical is None:
            return False
        key = to_canonical("hubspot", pipeline=None, stage=event.property_value)
        value: object = getattr(key, "value", None)
        if not isinstance(key, str) or value is None:
            return False
        return was_written("hubspot", event.object_id, "stage", value)
    field_name = _HUBSPOT_FIELDS.get(name or "")
    if field_name is None:
        return False
    return was_written("hubspot", event.object_id, field_name, event.property_value)


def _hubspot(
    events: Sequence[InboxEvent],
    connector: object,
    lookup: StoredLookup,
    own: Mapping[str, frozenset[str]],
    batch: int,
    out: Normalised,
    echo: Callable[[InboxEvent], bool],
) -> None:
    to_read: dict[str, list[InboxEvent]] = {}
    for event in events:
        if event.object_type != "deal":
            out.skipped_ids.append(event.id)
        elif event.action == "deletion":
            record = _deleted(event, "deal", lookup, None)
            if record is None:
                out.skipped_ids.append(event.id)
            else:
                out.records.append((record, (event.id,)))
        elif _is_own(event, own) or (not _trusted_other(event, own) and echo(event)):
            out.echo_ids.append(event.id)
        elif event.action in ("creation", "propertyChange", "restore", "merge"):
            object_id = str(event.payload.get("primaryObjectId") or event.object_id)
            to_read.setdefault(object_id, []).append(event)
        else:
            out.skipped_ids.append(event.id)
    if not to_read:
        return
    if not isinstance(connector, DealReader):
        raise TypeError(f"the {events[0].source} connector cannot read deals by id (read_deals)")
    ids = list(to_read)
    found: dict[str, CanonicalRecord] = {}
    for start in range(0, len(ids), batch):
        out.reads += 1
        for record in connector.read_deals(ids[start : start + batch]):
            found[record.external_id] = record
    for object_id, group in to_read.items():
        inbox_ids = tuple(e.id for e in group)
        record = found.get(object_id)
        if record is None:
            # Gone by the time we read it: archived since, or never visible to this token.
            out.skipped_ids.extend(inbox_ids)
            continue
        newest = max(group, key=lambda e: e.occurred_at)
        out.records.append((replace(record, change_source=newest.change_source), inbox_ids))


def _pipedrive(
    events: Sequence[InboxEvent], connector: object, lookup: StoredLookup, out: Normalised
) -> None:
    for event in events:
        if event.object_type != "deal":
            out.skipped_ids.append(event.id)
            continue
        raw = event.payload
        current = raw.get("data") if "data" in raw else raw.get("current")
        previous = raw.get("previous")
        if not isinstance(connector, RecordTranslator):
            raise TypeError("the pipedrive connector cannot translate webhook deals (to_record)")
        if event.action == "delete" or (isinstance(current, Mapping) and current.get("is_deleted") is True):
            base = previous if isinstance(previous, Mapping) and "update_time" in previous else None
            fallback = connector.to_record(base) if base is not None else None
            record = _deleted(event, "deal", lookup, fallback)
        elif event.action in ("create", "change") and isinstance(current, Mapping):
            record = replace(connector.to_record(current), change_source=event.change_source)
        else:
            record = None
        if record is None:
            out.skipped_ids.append(event.id)
        else:
            out.records.append((record, (event.id,)))


def _lagrowthmachine(
    events: Sequence[InboxEvent], connector: object, mappings: object, out: Normalised
) -> None:
    for event in events:
        if event.action != "reply_received":
            out.skipped_ids.append(event.id)
            continue
        if isinstance(connector, RecordTranslator):
            record = connector.to_record(event.payload)
        else:
            # The connector keeps its translation pure and public; the engine calls it directly.
            from connectors.lagrowthmachine.convert import reply_to_canonical

            record = reply_to_canonical(event.payload, mappings)  # type: ignore[arg-type]
        out.records.append((record, (event.id,)))


def normalise_events(
    events: Sequence[InboxEvent],
    connector: object,
    mappings: object,
    lookup: StoredLookup,
    *,
    own_change_sources: Mapping[str, frozenset[str]],
    read_batch: int = 100,
    was_written: EchoCheck | None = None,
) -> Normalised:
    """The records a batch of inbox events (all from one source) stands for; see the module doc.

    ``was_written`` (the store's write memory, bound to the echo window) lets a HubSpot property
    change that reports a value the service wrote be settled as an echo without a read.

    Connector errors propagate (:class:`~sync_worker.errors.TransientError` to be retried).
    """
    out = Normalised()
    if not events:
        return out
    sources = {e.source for e in events}
    if len(sources) != 1:
        raise ValueError(f"normalise_events takes events of one source, got {sorted(sources)}")
    source = sources.pop()
    if source == "hubspot":

        def echo(event: InboxEvent) -> bool:
            return _remembered(event, mappings, was_written)

        _hubspot(events, connector, lookup, own_change_sources, read_batch, out, echo)
    elif source == "pipedrive":
        _pipedrive(events, connector, lookup, out)
    elif source == "lagrowthmachine":
        _lagrowthmachine(events, connector, mappings, out)
    else:
        out.skipped_ids.extend(e.id for e in events)
    return out
