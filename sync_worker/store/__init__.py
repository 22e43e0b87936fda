"""The state store: tables, migrations and :class:`SyncStore` (SQLite or PostgreSQL).

Typical use::

    upgrade_database(settings.database_url)
    store = SyncStore(settings.database_url)
"""

from __future__ import annotations

from sync_worker.store.engine import create_engine_for, normalise_url, redacted_url
from sync_worker.store.flags import value_hash
from sync_worker.store.migrate import current_revision, head_revision, upgrade_database
from sync_worker.store.models import (
    AcceptResult,
    Activity,
    DeadLetter,
    FlagRule,
    HeldGroup,
    HeldStage,
    InboxEvent,
    OutboxItem,
    OutboxStatus,
    Pause,
    RecordChange,
    StageTransition,
    StoredFlag,
    StoredRecord,
)
from sync_worker.store.store import SyncStore

__all__ = [
    "AcceptResult",
    "Activity",
    "DeadLetter",
    "FlagRule",
    "HeldGroup",
    "HeldStage",
    "InboxEvent",
    "OutboxItem",
    "OutboxStatus",
    "Pause",
    "RecordChange",
    "StageTransition",
    "StoredFlag",
    "StoredRecord",
    "SyncStore",
    "create_engine_for",
    "current_revision",
    "head_revision",
    "normalise_url",
    "redacted_url",
    "upgrade_database",
    "value_hash",
]
