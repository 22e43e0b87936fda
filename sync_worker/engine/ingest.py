"""Recording one incoming record: what changed, whether it is our own echo, which events it raises.

Echoes (a change the service itself wrote, coming back from the target) are recognised two ways,
either one suffices:

* the provider says who wrote it: HubSpot webhook ``changeSource`` + ``sourceId`` (``INTEGRATION``
  and our app id, https://developers.hubspot.com/docs/api/webhooks), Pipedrive ``meta.change_source``
  + ``meta.user_id`` (``api`` and our user, https://pipedrive.readme.io/docs/guide-for-webhooks-v2
  and https://developers.pipedrive.com/changelog/post/new-field-for-webhooks),
  compared with :attr:`EngineConfig.own_change_sources`;
* every field that changed holds a value the engine wrote to this very record within the echo
  window (the store's write memory, ``was_written``). This catches echoes in polls, which carry
  no change source. When the provider names another writer and our own markers are known, the
  provider is believed: a person setting a value back to one we wrote is a real change.

The service's own write is an echo only while it is still the value the source holds: once a
real (non-echo) change of a field is observed, the values we wrote to that field before are
forgotten (``forget_overwritten``), so a person reverting the field to one of them is routed like
any other change.

A third, structural guard: after each push the stored copy of the target record is updated with
what was written (:mod:`sync_worker.engine.push`), so an echo that comes back unchanged differs
from nothing and raises no event. An echo is still stored (marked ``written_by_worker`` in the
stage history) but never routed, so a two-way route cannot bounce a change back and forth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from sync_worker.canonical import CanonicalRecord, RecordKind, UnmappedStage
from sync_worker.engine.model import (
    EVENT_CREATED,
    EVENT_FIELD_CHANGE,
    EVENT_REPLY,
    EVENT_STAGE_CHANGE,
    EVENT_STATUS_CHANGE,
    SYNCED_FIELDS,
    system_rank,
)
from sync_worker.metrics import note_unmapped
from sync_worker.store.models import RecordChange, StoredRecord, stage_reentered

__all__ = [
    "IngestStore",
    "Observation",
    "changed_fields",
    "events_for",
    "field_time",
    "field_value",
    "is_echo",
    "observe",
]

# Fields a source may not carry (a webhook deal has no e-mail): a record lacking them keeps the stored value.
_KEPT_WHEN_MISSING = ("contact_email", "linkedin_url", "company", "title")


class IngestStore(Protocol):
    """The store methods ingestion uses."""

    def get_record(self, source: str, kind: RecordKind, external_id: str) -> StoredRecord | None: ...

    def upsert_record(
        self,
        record: CanonicalRecord,
        *,
        origin: str,
        written_by_worker: bool,
        seen_at: datetime | None = None,
        exists: bool = False,
    ) -> RecordChange: ...

    def was_written(
        self,
        target: str,
        external_id: str,
        field: str,
        value: object,
        within: timedelta,
        *,
        now: datetime | None = None,
    ) -> bool: ...

    def forget_overwritten(self, target: str, external_id: str, values: Mapping[str, object]) -> None: ...

    def hold_stage(
        self, record_id: int, unmapped: UnmappedStage, *, stage_changed_at: datetime | None, at: datetime
    ) -> bool: ...

    def release_held(self, record_id: int) -> bool: ...


def field_value(record: CanonicalRecord | StoredRecord, name: str) -> object:
    """The value of a synced field (stage as its key string), comparable across both shapes."""
    value = getattr(record, name)
    if name == "stage" and value is not None:
        return str(value.value)
    return value


PRECISION = timedelta(seconds=1)
"""The coarsest clock of the providers (Pipedrive's, whole seconds): two changes of different
systems closer than this cannot be ordered by their timestamps."""


def target_wins(name: str, target: str, theirs: datetime, source: str, ours: datetime) -> bool:
    """Whether ``target``'s value of ``name`` (taken at ``theirs``) beats ``source``'s change (at
    ``ours``): the newer one wins; stage moves less than :data:`PRECISION` apart, and equal times,
    go to the system first in the tie order (:func:`~sync_worker.engine.model.system_rank`). The
    router and the push decide with this one rule, so both copies end alike."""
    if theirs != ours and not (name == "stage" and abs(theirs - ours) < PRECISION):
        return theirs > ours
    return system_rank(target) < system_rank(source)


def field_time(record: StoredRecord, name: str) -> datetime:
    """When a stored record's field took its value, as far as the store knows: for ``stage`` the
    earlier of its entry time (the source's stage-change time, else when the service first saw the
    stage: later than the change itself) and the record's source timestamp; for the other fields
    the record's source timestamp."""
    if name == "stage" and record.stage_entered_at is not None:
        return min(record.stage_entered_at, record.source_updated_at)
    return record.source_updated_at


def changed_fields(before: StoredRecord | None, record: CanonicalRecord) -> frozenset[str]:
    """Synced fields whose value differs from the stored one (all set fields when first seen).

    An unmapped stage (``stage`` None) is not a change: the store keeps the last known stage.
    """
    changed: set[str] = set()
    for name in SYNCED_FIELDS:
        new = field_value(record, name)
        if new is None:
            continue
        if before is None or field_value(before, name) != new:
            changed.add(name)
    if before is not None and "stage" not in changed and stage_reentered(before, record):
        changed.add("stage")  # a move back is a change like any other
    return frozenset(changed)


def is_echo(
    store: IngestStore,
    record: CanonicalRecord,
    changed: frozenset[str],
    *,
    own_change_sources: Mapping[str, frozenset[str]],
    within: timedelta,
    now: datetime,
) -> bool:
    """True when the change is one the service wrote itself (see the module docstring)."""
    marker = record.change_source
    ours = own_change_sources.get(record.source, frozenset())
    if marker is not None and marker in ours:
        return True
    if marker is not None and ours:
        return False  # the provider names another writer (a person, another app): not our echo
    if not changed:
        return False
    return all(
        store.was_written(record.source, record.external_id, name, field_value(record, name), within, now=now)
        for name in changed
    )


def events_for(
    change: RecordChange, before: StoredRecord | None, record: CanonicalRecord, changed: frozenset[str]
) -> frozenset[str]:
    """The change kinds one applied upsert raises (empty when nothing routable changed)."""
    events: set[str] = set()
    if record.replied_at is not None and (before is None or before.replied_at != record.replied_at):
        events.add(EVENT_REPLY)
    if change.created:
        events.add(EVENT_CREATED)
    if "stage" in changed and before is not None:
        events.add(EVENT_STAGE_CHANGE)
    if "status" in changed and before is not None:
        events.add(EVENT_STATUS_CHANGE)
    if before is not None and changed - {"stage", "status"}:
        events.add(EVENT_FIELD_CHANGE)
    return frozenset(events)


@dataclass(frozen=True)
class Observation:
    """What :func:`observe` did with one record: the stored change, the diff, echo or not, events."""

    before: StoredRecord | None
    record: CanonicalRecord
    change: RecordChange
    changed: frozenset[str]
    echo: bool
    events: frozenset[str]


def observe(
    store: IngestStore,
    record: CanonicalRecord,
    *,
    own_change_sources: Mapping[str, frozenset[str]],
    echo_window: timedelta,
    clock: Callable[[], datetime],
) -> Observation:
    """Store ``record`` and say what changed: the one write path for webhooks and polls alike.

    A record older than the stored one is not applied (``change.applied`` False) and raises no
    event; an echo is stored but raises no event either. An applied record on a stage no mapping
    covers is held (:meth:`~sync_worker.store.SyncStore.hold_stage`: its raw stage is kept for
    ``held list`` and for re-application once a mapping covers it); one on a mapped stage releases
    a stage held before.
    """
    now = clock()
    before = store.get_record(record.source, record.kind, record.external_id)
    if before is not None:
        kept = {name: getattr(before, name) for name in _KEPT_WHEN_MISSING if getattr(record, name) is None}
        if kept:
            record = replace(record, **kept)
    changed = changed_fields(before, record)
    echo = is_echo(store, record, changed, own_change_sources=own_change_sources, within=echo_window, now=now)
    change = store.upsert_record(
        record, origin=record.source, written_by_worker=echo, seen_at=now, exists=before is not None
    )
    if change.applied:
        _track_held(store, record, change.record.id, now)
    events: frozenset[str] = frozenset()
    if change.applied and not echo:
        events = events_for(change, before, record, changed)
        if before is not None and changed:
            # What we wrote to these fields is overwritten now: no longer our echo if it comes back.
            # A stage re-entered (same value, newer entry: a person moved away and back) is the
            # person's now, even if the service once wrote that value: forget all of the field.
            reentered = {"stage"} if "stage" in changed and before.stage == record.stage else set()
            store.forget_overwritten(
                record.source,
                record.external_id,
                {name: None if name in reentered else field_value(record, name) for name in changed},
            )
    return Observation(before, record, change, changed, echo, events)


def _track_held(store: IngestStore, record: CanonicalRecord, record_id: int, now: datetime) -> None:
    """Hold the record's unmapped stage (counted, warned once per stage), or release a held one."""
    if record.unmapped is not None:
        store.hold_stage(record_id, record.unmapped, stage_changed_at=record.stage_changed_at, at=now)
        note_unmapped(record.unmapped)
    elif record.stage is not None:
        store.release_held(record_id)
