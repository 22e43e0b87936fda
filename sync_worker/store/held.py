"""Held stages: records whose latest source stage no mapping covers (``held_stages``).

- :meth:`HeldStagesMixin.hold_stage` keeps, per record, the raw pipeline and stage the source gave
  (ids and names), when it was first and last held and how often: one row per record, replaced
  when the record moves on to another unmapped stage.
- :meth:`HeldStagesMixin.release_held` drops the row once the record lands on a mapped stage.
- :meth:`HeldStagesMixin.held_stages` and :meth:`held_groups` list them for operators and for the
  re-application after a mappings reload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, update

from sync_worker.canonical import UnmappedStage
from sync_worker.store.base import StoreBase, dialect_insert
from sync_worker.store.models import HeldGroup, HeldStage
from sync_worker.store.schema import held_stages, records
from sync_worker.store.types import as_utc

__all__ = ["HeldStagesMixin"]

_TEXT_MAX = 255


def _cut(value: str | None) -> str | None:
    return value[:_TEXT_MAX] if value is not None else None


class HeldStagesMixin(StoreBase):
    """Rows of ``held_stages``."""

    def hold_stage(
        self,
        record_id: int,
        unmapped: UnmappedStage,
        *,
        stage_changed_at: datetime | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Hold record ``record_id`` on ``unmapped``; True when it was not held on that stage yet.

        Seen again on the same stage: ``last_held_at`` and ``held_count`` move. On another unmapped
        stage: the row is replaced (first held now, count 1).
        """
        now = as_utc(at) if at is not None else self._now()
        raw: dict[str, Any] = {
            "source": unmapped.source,
            "pipeline": _cut(unmapped.pipeline),
            "pipeline_name": _cut(unmapped.pipeline_name),
            "stage": _cut(unmapped.stage),
            "stage_name": _cut(unmapped.stage_name),
            "stage_changed_at": as_utc(stage_changed_at) if stage_changed_at is not None else None,
        }
        with self._write() as conn:
            held = held_stages.c
            current = conn.execute(
                select(held.pipeline, held.stage).where(held.record_id == record_id)
            ).one_or_none()
            if current is not None and (current.pipeline, current.stage) == (raw["pipeline"], raw["stage"]):
                conn.execute(
                    update(held_stages)
                    .where(held_stages.c.record_id == record_id)
                    .values(last_held_at=now, held_count=held_stages.c.held_count + 1)
                )
                return False
            fresh = {**raw, "first_held_at": now, "last_held_at": now, "held_count": 1}
            if current is not None:
                conn.execute(update(held_stages).where(held_stages.c.record_id == record_id).values(**fresh))
            else:
                conn.execute(
                    dialect_insert(conn, held_stages)
                    .values(record_id=record_id, **fresh)
                    .on_conflict_do_update(index_elements=[held_stages.c.record_id], set_=fresh)
                )
            return True

    def release_held(self, record_id: int) -> bool:
        """The record landed on a mapped stage: forget its held stage. True when one was held."""
        with self._write() as conn:
            gone = conn.execute(delete(held_stages).where(held_stages.c.record_id == record_id)).rowcount
        return bool(gone)

    def held_stages(self, source: str | None = None) -> list[HeldStage]:
        """The held records (of ``source``), by source, pipeline, stage and external id."""
        stmt = (
            select(held_stages, records.c.kind, records.c.external_id)
            .join(records, records.c.id == held_stages.c.record_id)
            .order_by(held_stages.c.source, held_stages.c.pipeline, held_stages.c.stage)
            .order_by(records.c.external_id)
        )
        if source is not None:
            stmt = stmt.where(held_stages.c.source == source)
        with self._read() as conn:
            return [_held(row) for row in conn.execute(stmt)]

    def held_groups(self) -> list[HeldGroup]:
        """How many records are held per ``(source, pipeline, stage)``, most first."""
        held = held_stages.c
        count = func.count().label("n")
        stmt = (
            select(
                held.source,
                held.pipeline,
                held.stage,
                count,
                func.max(held.pipeline_name).label("pipeline_name"),
                func.max(held.stage_name).label("stage_name"),
            )
            .group_by(held.source, held.pipeline, held.stage)
            .order_by(count.desc(), held.source, held.pipeline, held.stage)
        )
        with self._read() as conn:
            return [
                HeldGroup(row.source, row.pipeline, row.stage, int(row.n), row.pipeline_name, row.stage_name)
                for row in conn.execute(stmt)
            ]


def _held(row: Row[Any]) -> HeldStage:
    # The row's columns are the held_stages columns plus the record's kind and external id.
    return HeldStage(**dict(row._mapping))
