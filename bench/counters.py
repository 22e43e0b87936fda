"""Counters for the benchmarks: database transactions and Redis round trips made in a block.

- Transactions: SQLAlchemy's engine events ``begin`` (every transaction, read-only ones included:
  SQLAlchemy 2 begins one on first use of a connection) and ``commit`` (the durable ones),
  listened to on the ``Engine`` class so every engine of the process is counted
  (https://docs.sqlalchemy.org/en/20/core/events.html#sqlalchemy.events.ConnectionEvents).
- Redis round trips: redis-py writes each command, or each pipeline's whole batch, with one
  ``send_packed_command`` call on the connection and then reads the replies; counting those calls
  counts the round trips (health-check PINGs included), across every client of the process.

Counts are process-wide and thread-safe enough for benchmarks (an int increment under the GIL);
work done in other processes (a worker started with ``subprocess``) is not seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis.connection import AbstractConnection
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["Counts", "counting"]


@dataclass
class Counts:
    """What a :func:`counting` block saw; read after the block (or during it, for a snapshot)."""

    transactions: int = 0
    commits: int = 0
    redis_round_trips: int = 0

    def per(self, changes: int) -> dict[str, float]:
        """``name: value`` figures per routed change, for the benchmark's closing lines."""
        n = max(1, changes)
        return {
            "transactions_per_change": self.transactions / n,
            "commits_per_change": self.commits / n,
            "redis_round_trips_per_change": self.redis_round_trips / n,
        }


_lock = threading.Lock()


@contextmanager
def counting() -> Iterator[Counts]:
    """Count transactions, commits and Redis round trips made by this process inside the block."""
    counts = Counts()

    def on_begin(_conn: Any) -> None:
        counts.transactions += 1

    def on_commit(_conn: Any) -> None:
        counts.commits += 1

    original = AbstractConnection.send_packed_command

    def send_packed_command(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counts.redis_round_trips += 1
        original(self, command, check_health)

    with _lock:
        event.listen(Engine, "begin", on_begin)
        event.listen(Engine, "commit", on_commit)
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        with _lock:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
            event.remove(Engine, "commit", on_commit)
            event.remove(Engine, "begin", on_begin)
