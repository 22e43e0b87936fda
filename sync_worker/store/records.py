"""Records as the store holds them: upserts with stage history, lookups and cross-system links.

The SQL lives in :mod:`sync_worker.store.record_queries`; each method here is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from sync_worker.canonical import CanonicalRecord, RecordKind, StageKey
from sync_worker.store import record_queries as _q
from sync_worker.store.base import StoreBase
from sync_worker.store.models import RecordChange, StageTransition, StoredRecord
from sync_worker.store.schema import records
from sync_worker.store.types import as_utc

__all__ = ["RecordsMixin"]


class RecordsMixin(StoreBase):
    """Records, their stage history and cross-system links."""

    def upsert_record(
        self,
        record: CanonicalRecord,
        *,
        origin: str,
        written_by_worker: bool,
        seen_at: datetime | None = None,
        exists: bool = False,
    ) -> RecordChange:
        """Insert or update a record by ``(source, kind, external_id)``.

        ``exists``: the caller has just read the record, so the insert attempt is skipped (it is
        made after all if the row is gone).

        When the canonical stage changes (or on first sight) a stage-history row is added and
        ``stage_entered_at`` is reset to ``record.stage_changed_at``, else to ``seen_at``
        (default: now). A record whose ``stage`` is None (unmapped) keeps the last known canonical
        stage and its clock. A record older than the stored one (``updated_at`` before
        ``source_updated_at``) changes nothing but ``last_seen_at`` (``applied`` False).
        ``replied_at`` and ``created_at`` are never cleared by a record that lacks them.
        """
        seen = as_utc(seen_at) if seen_at is not None else self._now()
        with self._write() as conn:
            return _q.upsert(
                conn, record, origin=origin, written_by_worker=written_by_worker, seen_at=seen, exists=exists
            )

    def get_record(self, source: str, kind: RecordKind, external_id: str) -> StoredRecord | None:
        with self._read() as conn:
            return _q.load_record(conn, source, kind, external_id)

    def get_records(
        self, source: str, kind: RecordKind, external_ids: Iterable[str]
    ) -> dict[str, StoredRecord]:
        """:meth:`get_record` for several ids of one source in one read: the found ones by id."""
        with self._read() as conn:
            return _q.load_records(conn, source, kind, external_ids)

    def get_record_by_id(self, record_id: int) -> StoredRecord | None:
        with self._read() as conn:
            row = conn.execute(select(records).where(records.c.id == record_id)).one_or_none()
            return _q.record_from_row(row) if row is not None else None

    def find_records_by_email(self, email: str) -> list[StoredRecord]:
        """Records whose contact email matches, case-insensitively."""
        with self._read() as conn:
            return _q.find_by_email(conn, email)

    def records_in_stages(
        self, stages: Iterable[StageKey], *, limit: int | None = None
    ) -> list[StoredRecord]:
        """Records currently in any of ``stages``, longest in stage first (for the leak scan)."""
        wanted = [stage.value for stage in stages]
        table = records
        with self._read() as conn:
            query = (
                select(table)
                .where(table.c.stage.in_(wanted), table.c.deleted.is_(False))
                .order_by(table.c.stage_entered_at, table.c.id)
            )
            if limit is not None:
                query = query.limit(limit)
            return [_q.record_from_row(row) for row in conn.execute(query)]

    def stage_history(self, record_id: int) -> list[StageTransition]:
        """The record's canonical stage transitions, oldest first."""
        with self._read() as conn:
            return _q.load_history(conn, record_id)

    def link_records(self, record_ids: Iterable[int]) -> int:
        """Group records as the same deal across systems; merges existing groups. The group id."""
        now = self._now()
        with self._write() as conn:
            return _q.link(conn, record_ids, now=now)

    def linked_records(self, record_id: int) -> list[StoredRecord]:
        """The other records in this record's link group (empty when not linked)."""
        with self._read() as conn:
            return _q.linked(conn, record_id)[1]

    def link_id(self, record_id: int) -> int | None:
        with self._read() as conn:
            return _q.linked(conn, record_id)[0]
