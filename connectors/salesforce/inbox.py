"""Stored Outbound Message notifications -> canonical records.

An Outbound Message carries the fields its definition selects, with their latest values
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm):
a notification with ``StageName`` and ``SystemModstamp`` (or ``LastModifiedDate``) is enough; won or
lost comes from ``IsClosed``/``IsWon`` when sent, else from the OpportunityStage flags. Thinner
notifications are read back, all in one ``queryAll`` batch. The service's own writes (``LastModifiedById``
is the integration user) are echoes, read nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connectors.salesforce.convert import StageFlags, is_record_id
from sync_worker.canonical import CanonicalRecord
from sync_worker.connector import NormaliseContext, Normalised
from sync_worker.errors import PayloadError

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["normalise_events"]

_Best = dict[str, tuple[CanonicalRecord, list[int]]]


def _keep(best: _Best, record: CanonicalRecord, inbox_id: int) -> None:
    """Repeats of one Opportunity in a batch give one record: the latest, answering every event."""
    held = best.get(record.external_id)
    if held is None:
        best[record.external_id] = (record, [inbox_id])
    elif record.updated_at >= held[0].updated_at:
        best[record.external_id] = (record, [*held[1], inbox_id])
    else:
        held[1].append(inbox_id)


def normalise_events(
    events: Sequence[InboxEvent],
    ctx: NormaliseContext,
    *,
    to_record: Callable[[Mapping[str, Any], StageFlags | None], CanonicalRecord],
    stage_flags: Callable[[], StageFlags],
    read_rows: Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]],
    own_user: str | None,
) -> Normalised:
    """The records a batch of Salesforce inbox events stands for (at most one batch read)."""
    out = Normalised()
    best: _Best = {}
    unread: list[InboxEvent] = []
    for event in events:
        fields = event.payload.get("fields")
        if event.object_type != "opportunity" or not isinstance(fields, Mapping):
            out.skip(event, f"{event.object_type} notifications are not synced")
        elif ctx.is_own(event.change_source) or (own_user is not None and event.change_source == own_user):
            out.echo_ids.append(event.id)
        elif fields.get("StageName") and (fields.get("SystemModstamp") or fields.get("LastModifiedDate")):
            flags = None if "IsClosed" in fields else stage_flags()
            try:
                _keep(best, to_record(fields, flags), event.id)
            except PayloadError as exc:
                out.skip(event, str(exc))
        elif not is_record_id(event.object_id):
            out.skip(event, "the notification's Id is not a record id")
        else:
            unread.append(event)
    if unread:
        rows = read_rows([e.object_id for e in unread])
        out.reads += 1
        for event in unread:
            row = rows.get(event.object_id)
            if row is None:
                out.skip(event, "the Opportunity can no longer be read")
            else:
                _keep(best, to_record(row, None), event.id)
    out.records.extend((record, tuple(ids)) for record, ids in best.values())
    return out
