"""Held stages re-applied: records held on a stage no mapping covered get it once one does.

:func:`~sync_worker.engine.ingest.observe` holds a record whose source stage no mapping covers
(:meth:`~sync_worker.store.SyncStore.hold_stage`); its canonical stage stays at the last known
value. After a good mappings reload (and at worker start) :func:`reapply_held` resolves each held
row's raw pipeline and stage (ids and names, as the source gave them) through the mappings in
force; a row that now resolves is rebuilt from the stored record with that stage and its source
timestamp, and goes through the normal ingest path (store, diff, echo check, routing), so the
twin moves as if the change had just arrived and the row is released. Rows that still do not
resolve stay held. Idempotent: a record already on the resolved stage raises no event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sync_worker.canonical import CanonicalRecord, RecordKind, StageKey
from sync_worker.connector import record_from_stored
from sync_worker.engine.model import IngestResult
from sync_worker.mappings import Mappings
from sync_worker.store.models import HeldStage, StoredRecord

__all__ = ["HeldReapply", "HeldStore", "reapply_held", "resolve_held"]

_BATCH = 200


class HeldStore(Protocol):
    """The store methods re-application uses."""

    def held_stages(self, source: str | None = None) -> list[HeldStage]: ...

    def get_record(self, source: str, kind: RecordKind, external_id: str) -> StoredRecord | None: ...

    def unit(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class HeldReapply:
    """The outcome of one :func:`reapply_held`: rows looked at, re-applied, still held, queued."""

    held: int
    reapplied: int
    still_held: int
    enqueued: int
    targets: frozenset[str]


def resolve_held(mappings: Mappings, held: HeldStage) -> StageKey | None:
    """The canonical stage the mappings now give the held raw stage; None while still unmapped."""
    resolved = mappings.to_canonical(
        held.source,
        pipeline=held.pipeline,
        stage=held.stage,
        pipeline_name=held.pipeline_name,
        stage_name=held.stage_name,
    )
    return resolved if isinstance(resolved, StageKey) else None


def reapply_held(
    store: HeldStore,
    mappings: Mappings,
    ingest: Callable[[CanonicalRecord], IngestResult],
    *,
    batch: int = _BATCH,
) -> HeldReapply:
    """Re-apply every held stage ``mappings`` now covers through ``ingest`` (the service's
    :meth:`~sync_worker.engine.SyncService.ingest_record`), ``batch`` records per unit of work."""
    rows = store.held_stages()
    ready = [(row, key) for row in rows if (key := resolve_held(mappings, row)) is not None]
    reapplied = enqueued = 0
    targets: set[str] = set()
    for chunk in _chunks(ready, batch):
        with store.unit():
            for row, key in chunk:
                stored = store.get_record(row.source, row.kind, row.external_id)
                if stored is None:  # gone since it was listed (its held row went with it)
                    continue
                record = record_from_stored(
                    stored,
                    updated_at=stored.source_updated_at,
                    stage=key,
                    stage_changed_at=row.stage_changed_at,
                    # the held move was the source's own; what wrote the record last says nothing of it
                    change_source=None,
                )
                result = ingest(record)
                reapplied += 1
                enqueued += result.enqueued
                targets |= result.targets
    return HeldReapply(
        held=len(rows),
        reapplied=reapplied,
        still_held=len(rows) - len(ready),
        enqueued=enqueued,
        targets=frozenset(targets),
    )


def _chunks(items: list[tuple[HeldStage, StageKey]], size: int) -> Iterator[list[tuple[HeldStage, StageKey]]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
