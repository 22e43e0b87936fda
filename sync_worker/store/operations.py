"""What operators see and steer: the last run of each poll, push and scan, and the pauses.

- :meth:`OperationsMixin.record_activity` keeps, per ``(kind, name)`` (``poll``/``hubspot/deals``,
  ``push``/``pipedrive``, ``scan``/``leaks``), the last run, last success, last error, the count
  of the last run, a running total and the failures; one upsert per run.
- :meth:`OperationsMixin.pause` / :meth:`resume` / :meth:`pauses` store what ``sync-worker pause``
  stopped (a source or a route), read by every worker before it works.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, update

from sync_worker.store.base import StoreBase, dialect_insert
from sync_worker.store.models import Activity, Pause
from sync_worker.store.schema import (
    activity,
    dead_letters,
    leak_flags,
    outbox,
    pauses,
    records,
    route_starts,
)
from sync_worker.store.types import as_utc

__all__ = ["OperationsMixin"]

_ERROR_MAX = 1000


class OperationsMixin(StoreBase):
    """Activity rows and pauses."""

    def record_activity(self, kind: str, name: str, *, count: int = 0, error: str | None = None) -> None:
        """One run of ``kind``/``name`` finished: a success with ``count`` items, or ``error``."""
        now = self._now()
        ok = error is None
        values: dict[str, Any] = {"last_run_at": now, "last_count": count}
        if error is None:
            values["last_success_at"] = now
        else:
            values["last_error_at"] = now
            values["last_error"] = error[:_ERROR_MAX]
        with self._write() as conn:
            changed = conn.execute(
                update(activity)
                .where(activity.c.kind == kind, activity.c.name == name)
                .values(
                    **values,
                    total_count=activity.c.total_count + count,
                    failures=activity.c.failures + (0 if ok else 1),
                )
            ).rowcount
            if not changed:
                conn.execute(
                    dialect_insert(conn, activity)
                    .values(kind=kind, name=name, total_count=count, failures=0 if ok else 1, **values)
                    .on_conflict_do_nothing()
                )

    def list_activity(self, kind: str | None = None) -> list[Activity]:
        """Every activity row (of ``kind``), by kind and name."""
        stmt = select(activity).order_by(activity.c.kind, activity.c.name)
        if kind is not None:
            stmt = stmt.where(activity.c.kind == kind)
        with self._read() as conn:
            return [_activity(row) for row in conn.execute(stmt)]

    def pause(self, scope: str, name: str, *, reason: str | None = None) -> bool:
        """Pause a source or a route; False when it was already paused."""
        with self._write() as conn:
            result = conn.execute(
                dialect_insert(conn, pauses)
                .values(scope=scope, name=name, paused_at=self._now(), reason=reason)
                .on_conflict_do_nothing()
            )
            self._forget_pauses()
            return bool(result.rowcount)

    def resume(self, scope: str, name: str) -> bool:
        """Lift a pause; False when it was not paused."""
        with self._write() as conn:
            result = conn.execute(delete(pauses).where(pauses.c.scope == scope, pauses.c.name == name))
            self._forget_pauses()
            return bool(result.rowcount)

    def _forget_pauses(self) -> None:
        memo = self._unit_memo()
        if memo is not None:
            memo.pop("paused_routes", None)

    def pauses(self) -> list[Pause]:
        """Every pause, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(pauses).order_by(pauses.c.paused_at, pauses.c.scope, pauses.c.name))
            return [Pause(scope=r.scope, name=r.name, paused_at=r.paused_at, reason=r.reason) for r in rows]

    def outbox_counts(self) -> dict[str, dict[str, int]]:
        """Outbox items per target and status (``pending``, ``failed``, ``dead``, ``sent``)."""
        stmt = select(outbox.c.target, outbox.c.status, func.count()).group_by(
            outbox.c.target, outbox.c.status
        )
        counts: dict[str, dict[str, int]] = {}
        with self._read() as conn:
            for target, status, count in conn.execute(stmt):
                counts.setdefault(target, {})[status] = int(count)
        return counts

    def open_dead_letters(self) -> int:
        """Dead letters not replayed yet."""
        with self._read() as conn:
            stmt = select(func.count()).select_from(dead_letters).where(dead_letters.c.replayed_at.is_(None))
            return int(conn.execute(stmt).scalar_one())

    def open_flags_by_rule(self) -> dict[str, int]:
        """Open leak flags per rule (one per deal and rule)."""
        stmt = (
            select(leak_flags.c.rule, func.count())
            .where(leak_flags.c.cleared_at.is_(None))
            .group_by(leak_flags.c.rule)
        )
        with self._read() as conn:
            return {rule: int(count) for rule, count in conn.execute(stmt)}

    def start_routes(self, names: Iterable[str], *, at: datetime | None = None) -> None:
        """Record ``at`` (default now) as the start of each route that has none yet."""
        wanted = sorted(set(names))
        if not wanted:
            return
        when = as_utc(at) if at is not None else self._now()
        with self._write() as conn:
            conn.execute(
                dialect_insert(conn, route_starts)
                .values([{"name": name, "started_at": when} for name in wanted])
                .on_conflict_do_nothing()
            )

    def route_starts(self) -> dict[str, datetime]:
        """Each started route's start."""
        with self._read() as conn:
            return {row.name: row.started_at for row in conn.execute(select(route_starts))}

    def paused_routes(self) -> frozenset[str]:
        """The paused routes; inside a unit of work, read once for the whole unit."""
        memo = self._unit_memo()
        if memo is not None and "paused_routes" in memo:
            return frozenset(memo["paused_routes"])
        with self._read() as conn:
            found = frozenset(conn.execute(_PAUSED_ROUTES).scalars())
        if memo is not None:
            memo["paused_routes"] = found
        return found

    def unmapped_deals(self) -> dict[str, int]:
        """Open deals per source with no canonical stage (their stage is not mapped)."""
        stmt = (
            select(records.c.source, func.count())
            .where(records.c.kind == "deal", records.c.status == "open", records.c.stage.is_(None))
            .group_by(records.c.source)
        )
        with self._read() as conn:
            return {source: int(count) for source, count in conn.execute(stmt)}

    def is_paused(self, scope: str, name: str) -> bool:
        with self._read() as conn:
            found = conn.execute(
                select(pauses.c.name).where(pauses.c.scope == scope, pauses.c.name == name)
            ).first()
            return found is not None


_PAUSED_ROUTES = select(pauses.c.name).where(pauses.c.scope == "route")  # asked once per routed change


def _activity(row: Row[Any]) -> Activity:
    m = row._mapping
    return Activity(
        kind=m["kind"],
        name=m["name"],
        last_run_at=m["last_run_at"],
        last_success_at=m["last_success_at"],
        last_error_at=m["last_error_at"],
        last_error=m["last_error"],
        last_count=m["last_count"],
        total_count=m["total_count"],
        failures=m["failures"],
    )
