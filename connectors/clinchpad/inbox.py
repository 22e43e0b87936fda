"""ClinchPad webhook events (stored in the inbox) -> canonical records.

A delivery's ``lead`` carries only ``_id``, ``name``, ``stage`` and ``pipe``
(https://clinchpad.com/api/docs/webhooks): not ``size``, ``archived`` or ``user``. So the lead is
read again (``GET /leads/:lead_id``, one call per lead: the API has no batch read), once for all
the events of a batch that name it; the pipeline comes from ``lead.pipe`` or the stored copy. A
lead that answers 404 is gone: its stored copy is marked deleted. Events by the service's own
user (``activity.user._id``, when ``SYNC_CLINCHPAD__USER_ID`` is set) are echoes and read nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from connectors.clinchpad.webhooks import ACTION_DELETED
from sync_worker.canonical import CanonicalRecord
from sync_worker.connector import NormaliseContext, Normalised, deleted_record

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["ToRecord", "normalise_events"]


class ToRecord(Protocol):
    def __call__(
        self,
        lead: Mapping[str, Any],
        *,
        updated_at: datetime,
        pipeline_id: str | None,
        pipeline_name: str | None,
        change_source: str | None,
    ) -> CanonicalRecord: ...


def _pipe(event: InboxEvent) -> tuple[str | None, str | None]:
    lead = event.payload.get("lead")
    pipe = lead.get("pipe") if isinstance(lead, Mapping) else None
    if not isinstance(pipe, Mapping):
        return None, None
    pipe_id, name = pipe.get("_id"), pipe.get("name")
    return (
        pipe_id if isinstance(pipe_id, str) and pipe_id else None,
        name if isinstance(name, str) and name else None,
    )


def normalise_events(
    events: Sequence[InboxEvent],
    ctx: NormaliseContext,
    *,
    read_lead: Callable[[str], Mapping[str, Any] | None],
    to_record: ToRecord,
) -> Normalised:
    """The records a batch of ClinchPad inbox events stands for (one read per lead named)."""
    out = Normalised()
    by_lead: dict[str, list[InboxEvent]] = {}
    for event in events:
        if event.object_type != "lead":
            out.skip(event, f"{event.object_type} events are not synced")
        else:
            by_lead.setdefault(event.object_id, []).append(event)
    for lead_id, group in by_lead.items():
        group.sort(key=lambda e: (e.occurred_at, e.id))
        last = group[-1]
        ids = tuple(e.id for e in group)
        if any(e.action == ACTION_DELETED for e in group):
            _deleted(out, group, ctx)
            continue
        if all(ctx.is_own(e.change_source) for e in group):
            out.echo_ids.extend(ids)
            continue
        lead = read_lead(lead_id)
        out.reads += 1
        if lead is None:
            _deleted(out, group, ctx)
            continue
        pipeline_id, pipeline_name = next(
            (found for e in reversed(group) if (found := _pipe(e))[0] is not None), (None, None)
        )
        if pipeline_id is None:
            stored = ctx.lookup(last.source, "deal", lead_id)
            pipeline_id = stored.pipeline_id if stored is not None else None
        record = to_record(
            lead,
            updated_at=last.occurred_at,
            pipeline_id=pipeline_id,
            pipeline_name=pipeline_name,
            change_source=last.change_source,
        )
        out.records.append((record, ids))
    return out


def _deleted(out: Normalised, group: list[InboxEvent], ctx: NormaliseContext) -> None:
    record = deleted_record(group[-1], "deal", ctx)
    if record is None:
        for event in group:
            out.skip(event, "deletion of a lead never stored")
    else:
        out.records.append((record, tuple(e.id for e in group)))
