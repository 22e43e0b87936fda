"""Inbox events -> canonical records, through each source's connector.

The translation itself is the connector's (:meth:`sync_worker.connector.Connector.normalise_events`,
reading from the system only when the events do not say enough); this module gives it the core's
context (the current mappings, the stored copy of a record, the echo markers and the write memory)
and checks that every event is answered exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sync_worker.connector import (
    Connector,
    EchoCheck,
    NormaliseContext,
    Normalised,
    StoredLookup,
    record_from_stored,
)
from sync_worker.mappings import Mappings
from sync_worker.store.models import InboxEvent

__all__ = ["EchoCheck", "Normalised", "StoredLookup", "normalise_events", "record_from_stored"]


def normalise_events(
    events: Sequence[InboxEvent],
    connector: Connector,
    mappings: Mappings,
    lookup: StoredLookup,
    *,
    own_change_sources: Mapping[str, frozenset[str]],
    was_written: EchoCheck | None = None,
) -> Normalised:
    """The records a batch of inbox events (all from one source) stands for.

    Every event ends in exactly one of ``records``, ``echo_ids`` or ``skipped``; one the connector
    left unanswered is skipped with that reason. Connector errors propagate
    (:class:`~sync_worker.errors.TransientError` to be retried).
    """
    if not events:
        return Normalised()
    sources = {e.source for e in events}
    if len(sources) != 1:
        raise ValueError(f"normalise_events takes events of one source, got {sorted(sources)}")
    source = sources.pop()
    ctx = NormaliseContext(
        mappings=mappings,
        lookup=lookup,
        own_markers=own_change_sources.get(source, frozenset()),
        was_written=was_written,
    )
    out = connector.normalise_events(events, ctx)
    answered = {i for _, ids in out.records for i in ids} | set(out.echo_ids) | set(out.skipped)
    for event in events:
        if event.id not in answered:
            out.skip(event, f"the {source} connector did not answer this event")
    return out
