"""Leak flags raised on records, and the write memory used to suppress echoes.

At most one OPEN flag per (record, rule): a partial unique index over ``cleared_at IS NULL``
(https://www.sqlite.org/partialindex.html, https://www.postgresql.org/docs/current/indexes-partial.html)
used as the ``ON CONFLICT`` target, so a concurrent second raise is a no-op rather than an error.

Write memory: after pushing ``field = value`` to a target, the worker remembers a hash of the
value; when the target's webhook later reports that very value, :meth:`FlagsMixin.was_written`
says it is our own echo. Values are hashed, not stored, so no field content lands in the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from sync_worker.canonical import StageKey
from sync_worker.store.base import StoreBase, dialect_insert, dump_json
from sync_worker.store.models import FlagRule, StoredFlag
from sync_worker.store.schema import leak_flags, write_memory
from sync_worker.store.types import as_utc

__all__ = ["FlagsMixin", "flag_from_row", "value_hash"]


def value_hash(value: object) -> str:
    """A stable hash of a written value, equal for equal numbers whatever their spelling.

    ``100``, ``100.0``, ``Decimal("100.00")`` and the string ``"100.00"`` hash alike, because
    webhooks report property values as strings while the worker writes typed values.
    """
    normal: object = value
    if isinstance(value, StageKey):
        normal = value.value
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        normal = _number(str(value))
    elif isinstance(value, str):
        normal = _number(value.strip()) or value
    return hashlib.sha256(dump_json(normal).encode("utf-8")).hexdigest()


def _number(text: str) -> str | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return format(number.normalize(), "f")


class FlagsMixin(StoreBase):
    """Leak flags and the write memory for echo suppression."""

    # -- leak flags ----------------------------------------------------------------------------

    def raise_flag(
        self,
        record_id: int,
        rule: FlagRule,
        *,
        reason: str = "",
        stage: StageKey | None = None,
        since: datetime | None = None,
        days_in_stage: int | None = None,
        amount: Decimal | None = None,
        weighted_amount: Decimal | None = None,
        raised_at: datetime | None = None,
    ) -> int | None:
        """Open a flag; its id, or None when an open flag for this record and rule already exists."""
        when = as_utc(raised_at) if raised_at is not None else self._now()
        with self._write() as conn:
            return conn.execute(
                dialect_insert(conn, leak_flags)
                .values(
                    record_id=record_id,
                    rule=rule,
                    reason=reason,
                    stage=stage.value if stage is not None else None,
                    since=since,
                    days_in_stage=days_in_stage,
                    amount=amount,
                    weighted_amount=weighted_amount,
                    raised_at=when,
                )
                .on_conflict_do_nothing(
                    index_elements=["record_id", "rule"], index_where=leak_flags.c.cleared_at.is_(None)
                )
                .returning(leak_flags.c.id)
            ).scalar_one_or_none()

    def clear_flags(
        self, record_id: int, rules: Iterable[FlagRule] | None = None, *, at: datetime | None = None
    ) -> list[StoredFlag]:
        """Close the record's open flags (only ``rules`` when given); the flags it closed."""
        when = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            stmt = update(leak_flags).where(
                leak_flags.c.record_id == record_id, leak_flags.c.cleared_at.is_(None)
            )
            if rules is not None:
                stmt = stmt.where(leak_flags.c.rule.in_(list(rules)))
            rows = conn.execute(stmt.values(cleared_at=when).returning(*leak_flags.c)).all()
            return sorted((flag_from_row(row) for row in rows), key=lambda flag: flag.id)

    def open_flags(self, *, rule: FlagRule | None = None, record_id: int | None = None) -> list[StoredFlag]:
        """Flags not cleared yet, oldest first."""
        with self._read() as conn:
            query = select(leak_flags).where(leak_flags.c.cleared_at.is_(None))
            if rule is not None:
                query = query.where(leak_flags.c.rule == rule)
            if record_id is not None:
                query = query.where(leak_flags.c.record_id == record_id)
            rows = conn.execute(query.order_by(leak_flags.c.raised_at, leak_flags.c.id))
            return [flag_from_row(row) for row in rows]

    def get_flag(self, flag_id: int) -> StoredFlag | None:
        with self._read() as conn:
            row = conn.execute(select(leak_flags).where(leak_flags.c.id == flag_id)).one_or_none()
            return flag_from_row(row) if row is not None else None

    def mark_flag_written(self, flag_id: int, *, at: datetime | None = None) -> None:
        """Record that the flag was written back onto the deal in its CRM."""
        self._stamp_flag(flag_id, "written_to_crm_at", at)

    def mark_flag_alerted(self, flag_id: int, *, at: datetime | None = None) -> None:
        """Record that an alert went out for the flag."""
        self._stamp_flag(flag_id, "alerted_at", at)

    def _stamp_flag(self, flag_id: int, column: str, at: datetime | None) -> None:
        when = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            conn.execute(update(leak_flags).where(leak_flags.c.id == flag_id).values({column: when}))

    # -- write memory --------------------------------------------------------------------------

    def remember_write(
        self, target: str, external_id: str, field: str, value: object, *, at: datetime | None = None
    ) -> None:
        """Remember that we wrote ``value`` to ``field`` of ``external_id`` in ``target``."""
        self.remember_writes(target, [(external_id, field, value)], at=at)

    def remember_writes(
        self, target: str, writes: Iterable[tuple[str, str, object]], *, at: datetime | None = None
    ) -> None:
        """:meth:`remember_write` for each ``(external_id, field, value)``, in one ``executemany``."""
        when = as_utc(at) if at is not None else self._now()
        rows = [
            {
                "target": target,
                "external_id": external_id,
                "field": field,
                "value_hash": value_hash(value),
                "written_at": when,
            }
            for external_id, field, value in writes
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(_REMEMBER_WRITE, rows)

    def was_written(
        self,
        target: str,
        external_id: str,
        field: str,
        value: object,
        within: timedelta,
        *,
        now: datetime | None = None,
    ) -> bool:
        """True when we wrote this very value to this field within ``within`` before ``now``."""
        cutoff = (as_utc(now) if now is not None else self._now()) - within
        params = {
            "target": target,
            "external_id": external_id,
            "field": field,
            "cutoff": cutoff,
            "value_hash": value_hash(value),
        }
        with self._read() as conn:
            return conn.execute(_WAS_WRITTEN, params).first() is not None

    def recent_writes(
        self,
        target: str,
        external_ids: Iterable[str],
        within: timedelta,
        *,
        now: datetime | None = None,
    ) -> frozenset[tuple[str, str, str]]:
        """Every ``(external_id, field, value hash)`` written to ``target`` for these records within
        ``within`` before ``now``, in one read (chunks of 500 ids): what :meth:`was_written` would
        answer for each, for a whole webhook delivery at once (compare with :func:`value_hash`)."""
        cutoff = (as_utc(now) if now is not None else self._now()) - within
        wanted = sorted(set(external_ids))
        found: set[tuple[str, str, str]] = set()
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(
                    _RECENT_WRITES,
                    {"target": target, "ids": wanted[start : start + 500], "cutoff": cutoff},
                )
                found.update((row.external_id, row.field, row.value_hash) for row in rows)
        return frozenset(found)

    def forget_overwritten(self, target: str, external_id: str, values: Mapping[str, object]) -> None:
        """Forget the values we wrote to these fields of a record that now holds other values
        (``values``: field -> the value the record holds now). A value the service once wrote
        and has since seen overwritten is no longer its echo: a person setting it back is a
        real change. One ``executemany``."""
        rows = [
            {"target": target, "external_id": external_id, "field": name, "value_hash": value_hash(value)}
            for name, value in values.items()
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(_FORGET_OVERWRITTEN, rows)

    def prune_write_memory(self, older_than: timedelta) -> int:
        """Forget writes older than ``older_than``; how many rows went."""
        cutoff = self._now() - older_than
        with self._write() as conn:
            return int(conn.execute(delete(write_memory).where(write_memory.c.written_at < cutoff)).rowcount)


# Built once (see store.base.built_once): every push remembers, every ingest asks.
_REMEMBER_WRITE = insert(write_memory)
_WAS_WRITTEN = (
    select(write_memory.c.id)
    .where(
        write_memory.c.target == bindparam("target"),
        write_memory.c.external_id == bindparam("external_id"),
        write_memory.c.field == bindparam("field"),
        write_memory.c.written_at >= bindparam("cutoff"),
        write_memory.c.value_hash == bindparam("value_hash"),
    )
    .limit(1)
)

_FORGET_OVERWRITTEN = delete(write_memory).where(
    write_memory.c.target == bindparam("target"),
    write_memory.c.external_id == bindparam("external_id"),
    write_memory.c.field == bindparam("field"),
    write_memory.c.value_hash != bindparam("value_hash"),
)

_RECENT_WRITES = select(write_memory.c.external_id, write_memory.c.field, write_memory.c.value_hash).where(
    write_memory.c.target == bindparam("target"),
    write_memory.c.external_id.in_(bindparam("ids", expanding=True)),
    write_memory.c.written_at >= bindparam("cutoff"),
)


def flag_from_row(row: Row[Any]) -> StoredFlag:
    """A ``leak_flags`` row (extra joined columns are ignored) as a :class:`StoredFlag`."""
    m = row._mapping
    return StoredFlag(
        id=m["id"],
        record_id=m["record_id"],
        rule=m["rule"],
        raised_at=m["raised_at"],
        reason=m["reason"],
        stage=StageKey(m["stage"]) if m["stage"] is not None else None,
        since=m["since"],
        days_in_stage=m["days_in_stage"],
        amount=m["amount"],
        weighted_amount=m["weighted_amount"],
        cleared_at=m["cleared_at"],
        written_to_crm_at=m["written_to_crm_at"],
        alerted_at=m["alerted_at"],
    )
