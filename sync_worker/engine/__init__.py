"""The sync engine: normalise, store, route and push changes, without loops or losses.

:class:`SyncService` is what the actors call (``handle_inbox_event``, ``poll``, ``push``); the
modules behind it are pure enough to test with a SQLite store and fake connectors:
:mod:`~sync_worker.engine.normalise` (webhook events -> records), :mod:`~sync_worker.engine.ingest`
(store, diff, echo detection), :mod:`~sync_worker.engine.routing` (the routes) and
:mod:`~sync_worker.engine.router` (target matching, field planning, outbox),
:mod:`~sync_worker.engine.push` (coalesced, batched, idempotent writes).
"""

from __future__ import annotations

from sync_worker.engine.fullpull import full_pull_started, full_streams, last_full_pull
from sync_worker.engine.held import HeldReapply
from sync_worker.engine.model import (
    SYNCED_FIELDS,
    DeadItem,
    EngineConfig,
    IngestResult,
    PullStats,
    PushStats,
    system_rank,
)
from sync_worker.engine.push import dead_letter_items
from sync_worker.engine.routing import EngineRoute, as_route, routes_for
from sync_worker.engine.service import SyncService

__all__ = [
    "SYNCED_FIELDS",
    "DeadItem",
    "EngineConfig",
    "EngineRoute",
    "HeldReapply",
    "IngestResult",
    "PullStats",
    "PushStats",
    "SyncService",
    "as_route",
    "dead_letter_items",
    "full_pull_started",
    "full_streams",
    "last_full_pull",
    "routes_for",
    "system_rank",
]
