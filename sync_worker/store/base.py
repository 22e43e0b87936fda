"""The state store's common ground: the engine, "now", and the one error boundary.

Every store method runs in one transaction opened by :meth:`StoreBase._write` (``BEGIN IMMEDIATE``
on SQLite) or :meth:`StoreBase._read` (plain ``BEGIN``), unless the caller holds a unit of work
(:meth:`StoreBase.unit`): then every method inside the block joins its one write transaction, so
the engine's work for a pulled page or a webhook delivery commits together or not at all.
A database that cannot be reached (SQLAlchemy ``OperationalError``/``InterfaceError``, a pool
timeout, SQLite "database is locked" after the busy timeout) raises
:class:`~sync_worker.errors.StoreUnavailableError` there, so the receiver answers 503 and the
sender retries. Messages name the host, the database and the driver's reason
(:func:`~sync_worker.store.engine.describe_failure`), never the password.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sync_worker.errors import StoreUnavailableError
from sync_worker.store.engine import READ_ONLY, create_engine_for, describe_failure, redacted_url
from sync_worker.store.types import as_utc

__all__ = ["StoreBase", "built_once", "dialect_insert", "dump_json", "load_json", "utc_now"]

_S = TypeVar("_S")

_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: object) -> str:
    """Compact, key-sorted JSON for TEXT columns (datetimes as ISO 8601, Decimals as strings)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_json_default)


def load_json(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def utc_now() -> datetime:
    return datetime.now(UTC)


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``on_conflict_do_nothing`` on the connection's backend."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_BUILT: dict[tuple[str, str], Any] = {}


def built_once(conn: Connection, name: str, build: Callable[[Connection], _S]) -> _S:
    """The statement ``build`` makes for the connection's backend, built on first use and reused.

    For statements of the per-record and per-item paths: executed with a parameter dict, a reused
    statement skips SQLAlchemy's per-call construction and cache-key generation and goes straight
    to its cached compiled form
    (https://docs.sqlalchemy.org/en/20/core/connections.html#sql-compilation-caching).
    """
    key = (conn.dialect.name, name)
    stmt = _BUILT.get(key)
    if stmt is None:
        stmt = _BUILT[key] = build(conn)
    return cast(_S, stmt)


class StoreBase:
    """Engine ownership, the clock and transactions; the mixins add the typed methods."""

    def __init__(self, database: Engine | str | URL, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._owns_engine = not isinstance(database, Engine)
        self._engine = database if isinstance(database, Engine) else create_engine_for(database)
        self._clock = clock
        # The connection of the unit of work open in this thread or task, if any (see unit()).
        self._unit: ContextVar[Connection | None] = ContextVar(f"store-unit-{id(self)}", default=None)
        # Answers kept for the length of the open unit (see unit_memo()).
        self._memo: ContextVar[dict[str, Any] | None] = ContextVar(f"store-memo-{id(self)}", default=None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted_url(self._engine.url)!r})"

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close pooled connections (only when the store built the engine itself)."""
        if self._owns_engine:
            self._engine.dispose()

    def _now(self) -> datetime:
        return as_utc(self._clock())

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One transaction for every store call inside the block (in this thread or task).

        Commits when the block ends, rolls everything back when it raises (any exception, a
        simulated kill included); a nested ``unit()`` joins the outer one. Keep network calls
        outside the block: SQLite holds its write lock for the length of it.
        """
        if self._unit.get() is not None:
            yield
            return
        with self._write() as conn:
            token = self._unit.set(conn)
            memo = self._memo.set({})
            try:
                yield
            finally:
                self._memo.reset(memo)
                self._unit.reset(token)

    def _unit_memo(self) -> dict[str, Any] | None:
        """A dict that lives as long as the open unit (None outside one): for small answers every
        record of a page or delivery asks again (the paused routes), read once per unit. A write
        that changes such an answer drops its entry."""
        return self._memo.get()

    @property
    def in_unit(self) -> bool:
        """Whether a unit of work is open in this thread or task."""
        return self._unit.get() is not None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        joined = self._unit.get()
        if joined is not None:
            yield joined
            return
        try:
            with self._engine.begin() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"state store unavailable: {self._describe(exc)}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        joined = self._unit.get()
        if joined is not None:
            yield joined  # a read inside a unit sees the unit's own uncommitted writes
            return
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"state store unavailable: {self._describe(exc)}") from exc

    def _describe(self, exc: Exception) -> str:
        return describe_failure(self._engine.url, exc)

    def ping(self) -> None:
        """Return when the database answers; :class:`StoreUnavailableError` otherwise."""
        with self._read() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: never migrated)."""
        from alembic.runtime.migration import MigrationContext

        with self._read() as conn:
            return MigrationContext.configure(conn).get_current_revision()
