"""Delivery state: the outbox of pending pushes, idempotency keys and dead letters.

Idempotency keys and outbox keys are unique columns written with ``INSERT ... ON CONFLICT DO
NOTHING`` (https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT,
https://www.sqlite.org/lang_upsert.html): of two concurrent claims exactly one inserts, and the
loser's transaction is not aborted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import Insert

from sync_worker.store.base import StoreBase, built_once, dialect_insert, dump_json, load_json
from sync_worker.store.models import DeadLetter, OutboxItem
from sync_worker.store.schema import dead_letters, outbox, processed_keys
from sync_worker.store.types import as_utc

__all__ = ["DeliveryMixin"]


# Statements of the per-item paths, built once (see store.base.built_once).
def _build_claim(conn: Connection) -> Insert:
    return (
        dialect_insert(conn, processed_keys)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(processed_keys.c.key)
    )


def _build_enqueue(conn: Connection) -> Insert:
    return (
        dialect_insert(conn, outbox)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(outbox.c.id)
    )


_MARK_SENT = (
    update(outbox)
    .where(outbox.c.id == bindparam("outbox_id"))
    .values(status="sent", attempts=outbox.c.attempts + 1, last_error=None)
)


class DeliveryMixin(StoreBase):
    """Idempotency keys, the outbox and dead letters."""

    # -- idempotency keys ----------------------------------------------------------------------

    def claim_key(self, key: str, *, at: datetime | None = None) -> bool:
        """True for the first caller only, across threads and processes (unique key, ON CONFLICT).

        ``at`` is the claim's time (default now), which :meth:`take_over_claim` compares with.
        """
        now = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            claimed = conn.execute(
                built_once(conn, "claim_key", _build_claim), {"key": key, "processed_at": now}
            ).scalar_one_or_none()
            return claimed is not None

    def record_result(self, key: str, result: Mapping[str, Any] | None) -> None:
        """Attach the outcome to a claimed key; ``KeyError`` if the key was never claimed."""
        with self._write() as conn:
            changed = conn.execute(
                update(processed_keys)
                .where(processed_keys.c.key == key)
                .values(result=dump_json(dict(result)) if result is not None else None)
            ).rowcount
            if not changed:
                raise KeyError(key)

    def key_result(self, key: str) -> Mapping[str, Any] | None:
        """The result recorded for a key (None if unclaimed or no result yet)."""
        with self._read() as conn:
            raw = conn.execute(
                select(processed_keys.c.result).where(processed_keys.c.key == key)
            ).scalar_one_or_none()
            value = load_json(raw)
            return value if isinstance(value, dict) else None

    def take_over_claim(self, key: str, *, claimed_before: datetime, at: datetime | None = None) -> bool:
        """Take over a claim made before ``claimed_before`` that still has no result (whoever made
        it died mid-work); True for one caller only (a conditional ``UPDATE``), who now holds it
        from ``at`` (default now)."""
        now = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            changed = conn.execute(
                update(processed_keys)
                .where(
                    processed_keys.c.key == key,
                    processed_keys.c.result.is_(None),
                    processed_keys.c.processed_at < as_utc(claimed_before),
                )
                .values(processed_at=now)
            ).rowcount
            return bool(changed)

    def release_key(self, key: str) -> None:
        """Forget a claim whose work failed, so a retry can claim it again."""
        with self._write() as conn:
            conn.execute(delete(processed_keys).where(processed_keys.c.key == key))

    # -- outbox --------------------------------------------------------------------------------

    def enqueue_outbox(
        self,
        target: str,
        idempotency_key: str,
        payload: Mapping[str, Any],
        *,
        not_before: datetime | None = None,
        kind: str = "mirror",
    ) -> int | None:
        """Queue a push of item ``kind``; its id, or None when that idempotency key is already queued."""
        now = self._now()
        with self._write() as conn:
            return conn.execute(
                built_once(conn, "enqueue_outbox", _build_enqueue),
                {
                    "target": target,
                    "idempotency_key": idempotency_key,
                    "kind": kind,
                    "payload": dump_json(dict(payload)),
                    "status": "pending",
                    "next_attempt_at": as_utc(not_before) if not_before is not None else now,
                    "created_at": now,
                },
            ).scalar_one_or_none()

    def due_outbox(
        self, now: datetime | None = None, limit: int = 100, *, target: str | None = None
    ) -> list[OutboxItem]:
        """Pending or failed-but-retryable pushes whose ``next_attempt_at`` has come, oldest first."""
        when = as_utc(now) if now is not None else self._now()
        with self._read() as conn:
            query = select(outbox).where(
                outbox.c.status.in_(("pending", "failed")), outbox.c.next_attempt_at <= when
            )
            if target is not None:
                query = query.where(outbox.c.target == target)
            rows = conn.execute(query.order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit))
            return [_outbox_item(row) for row in rows]

    def get_outbox(self, outbox_id: int) -> OutboxItem | None:
        with self._read() as conn:
            row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).one_or_none()
            return _outbox_item(row) if row is not None else None

    def mark_outbox_sent(self, outbox_id: int, *more: int) -> None:
        """Mark pushed: ``outbox_id`` and any ``more`` ids (one ``executemany`` for all of them)."""
        now = self._now()
        with self._write() as conn:
            conn.execute(_MARK_SENT, [{"outbox_id": i, "sent_at": now} for i in (outbox_id, *more)])

    def mark_outbox_failed(
        self, outbox_id: int, error: str, next_attempt_at: datetime, dead: bool = False
    ) -> None:
        """Count a failed attempt: retry at ``next_attempt_at``, or give up for good when ``dead``.

        ``error`` is stored as given: callers pass a message free of secrets.
        """
        when = as_utc(next_attempt_at)
        with self._write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    status="dead" if dead else "failed",
                    attempts=outbox.c.attempts + 1,
                    last_error=error,
                    next_attempt_at=when,
                )
            )

    # -- dead letters --------------------------------------------------------------------------

    def add_dead_letter(
        self,
        *,
        queue: str,
        actor: str,
        message_id: str,
        payload: Mapping[str, Any],
        reason: str,
        error_class: str | None = None,
        inbox_id: int | None = None,
    ) -> int:
        """Keep a dead message; ``inbox_id`` names the inbox row it stood for (then not pending)."""
        now = self._now()
        with self._write() as conn:
            return int(
                conn.execute(
                    insert(dead_letters)
                    .values(
                        queue=queue,
                        actor=actor,
                        message_id=message_id,
                        payload=dump_json(dict(payload)),
                        reason=reason,
                        error_class=error_class,
                        created_at=now,
                        inbox_id=inbox_id,
                    )
                    .returning(dead_letters.c.id)
                ).scalar_one()
            )

    def list_dead_letters(self, *, include_replayed: bool = False, limit: int = 1000) -> list[DeadLetter]:
        """Dead letters, oldest first; replayed ones only when asked."""
        with self._read() as conn:
            query = select(dead_letters)
            if not include_replayed:
                query = query.where(dead_letters.c.replayed_at.is_(None))
            rows = conn.execute(query.order_by(dead_letters.c.created_at, dead_letters.c.id).limit(limit))
            return [_dead_letter(row) for row in rows]

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        with self._read() as conn:
            row = conn.execute(select(dead_letters).where(dead_letters.c.id == dead_letter_id)).one_or_none()
            return _dead_letter(row) if row is not None else None

    def mark_replayed(self, dead_letter_id: int) -> bool:
        """Record a replay; False when it was already replayed or does not exist."""
        now = self._now()
        with self._write() as conn:
            return bool(
                conn.execute(
                    update(dead_letters)
                    .where(dead_letters.c.id == dead_letter_id, dead_letters.c.replayed_at.is_(None))
                    .values(replayed_at=now)
                ).rowcount
            )

    def purge_dead_letters(
        self,
        *,
        replayed_only: bool = False,
        older_than: timedelta | None = None,
        ids: Sequence[int] | None = None,
    ) -> int:
        """Delete dead letters (all, or only these ids / replayed / older ones); how many were deleted."""
        with self._write() as conn:
            stmt = delete(dead_letters)
            if ids is not None:
                stmt = stmt.where(dead_letters.c.id.in_(list(ids)))
            if replayed_only:
                stmt = stmt.where(dead_letters.c.replayed_at.is_not(None))
            if older_than is not None:
                stmt = stmt.where(dead_letters.c.created_at <= self._now() - older_than)
            return int(conn.execute(stmt).rowcount)


def _outbox_item(row: Row[Any]) -> OutboxItem:
    m = row._mapping
    return OutboxItem(
        id=m["id"],
        target=m["target"],
        idempotency_key=m["idempotency_key"],
        payload=load_json(m["payload"]),
        status=m["status"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        last_error=m["last_error"],
        sent_at=m["sent_at"],
        kind=m["kind"],
    )


def _dead_letter(row: Row[Any]) -> DeadLetter:
    m = row._mapping
    return DeadLetter(
        id=m["id"],
        queue=m["queue"],
        actor=m["actor"],
        message_id=m["message_id"],
        payload=load_json(m["payload"]),
        reason=m["reason"],
        created_at=m["created_at"],
        error_class=m["error_class"],
        replayed_at=m["replayed_at"],
        inbox_id=m["inbox_id"],
    )
