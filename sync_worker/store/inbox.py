"""Inbox (accepted webhook events) and pull cursors.

A webhook is acknowledged only once :meth:`InboxMixin.accept_events` has committed its events;
a sweeper re-enqueues what was stored but never handed to the broker (:meth:`pending_enqueue`).
Duplicates are dropped by the ``(source, dedupe_key)`` unique constraint with
``INSERT ... ON CONFLICT DO NOTHING``: https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
and https://www.sqlite.org/lang_upsert.html
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, exists, func, or_, select, update

from sync_worker.canonical import WebhookEvent
from sync_worker.store.base import StoreBase, dialect_insert, dump_json, load_json
from sync_worker.store.models import AcceptResult, InboxEvent
from sync_worker.store.schema import cursors, dead_letters, inbox
from sync_worker.store.types import as_utc

__all__ = ["InboxMixin"]


class InboxMixin(StoreBase):
    """Accepted webhook events and pull cursors."""

    def accept_events(
        self, source: str, events: Sequence[WebhookEvent], *, received_at: datetime | None = None
    ) -> AcceptResult:
        """Store new events in ONE transaction, skipping duplicates by ``(source, dedupe_key)``.

        Duplicates inside ``events`` and against earlier calls are both counted in ``duplicates``.
        When this returns the events are committed (durable); on error nothing is stored. An event
        the connector does not handle (``handled`` False) is stored already processed, with its
        ``reason`` as the row's skip reason: kept and visible, never sent to a worker.
        """
        now = as_utc(received_at) if received_at is not None else self._now()
        seen: set[str] = set()
        rows: list[dict[str, Any]] = []
        duplicates = 0
        for event in events:
            if event.source != source:
                raise ValueError(f"event from {event.source!r} passed to accept_events for {source!r}")
            if event.dedupe_key in seen:
                duplicates += 1
                continue
            seen.add(event.dedupe_key)
            rows.append(
                {
                    "source": source,
                    "dedupe_key": event.dedupe_key,
                    "object_type": event.object_type,
                    "object_id": event.object_id,
                    "action": event.action,
                    "occurred_at": as_utc(event.occurred_at),
                    "property_name": event.property_name,
                    "property_value": event.property_value,
                    "change_source": event.change_source,
                    "payload": dump_json(dict(event.raw)),
                    "received_at": now,
                    "processed_at": None if event.handled else now,
                    "skip_reason": None if event.handled else (event.reason or "not handled"),
                }
            )
        new_ids: list[int] = []
        kept: dict[str, int] = {}
        with self._write() as conn:
            for row in rows:
                new_id = conn.execute(
                    dialect_insert(conn, inbox)
                    .values(**row)
                    .on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
                    .returning(inbox.c.id)
                ).scalar_one_or_none()
                if new_id is None:
                    duplicates += 1
                elif row["skip_reason"] is None:
                    new_ids.append(new_id)
                else:
                    kept[row["dedupe_key"]] = new_id
        return AcceptResult(new_ids=tuple(new_ids), duplicates=duplicates, kept=kept)

    def mark_enqueued(self, ids: Iterable[int], *, at: datetime | None = None, requeued: bool = False) -> int:
        """Record that these inbox events were handed to the broker; how many rows changed.

        The first enqueue time is kept, unless ``requeued``: the sweeper sent an unprocessed event
        again (its earlier message was lost with Redis's data), so its clock starts over.
        """
        wanted = list(ids)
        if not wanted:
            return 0
        when = as_utc(at) if at is not None else self._now()
        pending = inbox.c.processed_at.is_(None) if requeued else inbox.c.enqueued_at.is_(None)
        with self._write() as conn:
            result = conn.execute(
                update(inbox).where(inbox.c.id.in_(wanted), pending).values(enqueued_at=when)
            )
            return int(result.rowcount)

    def pending_enqueue(
        self,
        older_than: timedelta,
        limit: int = 100,
        *,
        now: datetime | None = None,
        stale_after: timedelta | None = None,
        enqueued_before: datetime | None = None,
        after: tuple[datetime, int] | None = None,
    ) -> list[InboxEvent]:
        """Events for the sweeper, oldest first (by ``received_at`` then id), at most ``limit``.

        Stored but never enqueued for at least ``older_than``; with ``stale_after``, also enqueued
        that long ago and still not processed (their message may have been lost, e.g. Redis
        restarted without its data); with ``enqueued_before``, also every unprocessed event
        enqueued at or before that instant (the broker is known to have lost its queue since).
        Processed events and events whose dead letter was not replayed are never returned, so
        neither a row processed but never marked enqueued nor one that failed for good is sent
        again. ``after`` is the ``(received_at, id)`` of the last row of the previous batch: the
        next batch starts past it, so rows that could not be marked never hold the sweep back.
        """
        current = as_utc(now) if now is not None else self._now()
        wanted: ColumnElement[bool] = and_(
            inbox.c.enqueued_at.is_(None), inbox.c.received_at <= current - older_than
        )
        cutoffs = [current - stale_after] if stale_after is not None else []
        if enqueued_before is not None:
            cutoffs.append(as_utc(enqueued_before))
        if cutoffs:
            wanted = or_(wanted, inbox.c.enqueued_at <= max(cutoffs))
        conditions = [wanted, inbox.c.processed_at.is_(None), ~_dead()]
        if after is not None:
            received, last_id = as_utc(after[0]), after[1]
            conditions.append(
                or_(
                    inbox.c.received_at > received,
                    and_(inbox.c.received_at == received, inbox.c.id > last_id),
                )
            )
        with self._read() as conn:
            rows = conn.execute(
                select(inbox).where(*conditions).order_by(inbox.c.received_at, inbox.c.id).limit(limit)
            )
            return [_inbox_event(row) for row in rows]

    def mark_processed(
        self, inbox_id: int, *, at: datetime | None = None, skip_reason: str | None = None
    ) -> bool:
        """Record that a worker applied the event (counts one attempt); False if it was already done.

        ``skip_reason`` says why the event stood for no record (kept on the row).
        """
        when = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            result = conn.execute(
                update(inbox)
                .where(inbox.c.id == inbox_id, inbox.c.processed_at.is_(None))
                .values(processed_at=when, attempts=inbox.c.attempts + 1, skip_reason=skip_reason)
            )
            return bool(result.rowcount)

    def record_attempt(self, inbox_id: int) -> int:
        """Count one failed processing attempt; the new attempt count."""
        with self._write() as conn:
            return int(
                conn.execute(
                    update(inbox)
                    .where(inbox.c.id == inbox_id)
                    .values(attempts=inbox.c.attempts + 1)
                    .returning(inbox.c.attempts)
                ).scalar_one()
            )

    def inbox_depth(self) -> int:
        """Accepted events still pending: not processed, and not given up on (a dead letter not replayed)."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(inbox).where(inbox.c.processed_at.is_(None), ~_dead())
                ).scalar_one()
            )

    def get_inbox_event(self, inbox_id: int) -> InboxEvent | None:
        with self._read() as conn:
            row = conn.execute(select(inbox).where(inbox.c.id == inbox_id)).one_or_none()
            return _inbox_event(row) if row is not None else None

    def get_inbox_events(self, inbox_ids: Sequence[int]) -> list[InboxEvent]:
        """The events with these ids, in the order given (ids not found left out); one read."""
        wanted = list(dict.fromkeys(int(i) for i in inbox_ids))
        found: dict[int, InboxEvent] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for row in conn.execute(select(inbox).where(inbox.c.id.in_(chunk))):
                    event = _inbox_event(row)
                    found[event.id] = event
        return [found[i] for i in wanted if i in found]

    def get_cursor(self, source: str, stream: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                select(cursors.c.value).where(cursors.c.source == source, cursors.c.stream == stream)
            ).scalar_one_or_none()

    def set_cursor(self, source: str, stream: str, value: str) -> None:
        """Persist a cursor; call only once the page it closes is durably accepted."""
        now = self._now()
        with self._write() as conn:
            stmt = dialect_insert(conn, cursors).values(
                source=source, stream=stream, value=value, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["source", "stream"], set_={"value": value, "updated_at": now}
                )
            )


def _inbox_event(row: Row[Any]) -> InboxEvent:
    m = row._mapping
    return InboxEvent(
        id=m["id"],
        source=m["source"],
        dedupe_key=m["dedupe_key"],
        object_type=m["object_type"],
        object_id=m["object_id"],
        action=m["action"],
        occurred_at=m["occurred_at"],
        payload=load_json(m["payload"]),
        received_at=m["received_at"],
        property_name=m["property_name"],
        property_value=m["property_value"],
        change_source=m["change_source"],
        enqueued_at=m["enqueued_at"],
        processed_at=m["processed_at"],
        attempts=m["attempts"],
        skip_reason=m["skip_reason"],
    )


def _dead() -> ColumnElement[bool]:
    """The inbox row's message is a dead letter nobody replayed yet."""
    return exists().where(dead_letters.c.inbox_id == inbox.c.id, dead_letters.c.replayed_at.is_(None))
