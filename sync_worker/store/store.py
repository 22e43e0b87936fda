"""The state store: one typed method per question the service asks, one transaction per method.

:class:`SyncStore` is the only class callers use. It composes the areas of the store, each in
its own module: records and links (:mod:`~sync_worker.store.records`), the webhook inbox and
cursors (:mod:`~sync_worker.store.inbox`), outbox, idempotency keys and dead letters
(:mod:`~sync_worker.store.delivery`), leak flags and write memory (:mod:`~sync_worker.store.flags`),
activity and pauses (:mod:`~sync_worker.store.operations`), held stages (:mod:`~sync_worker.store.held`).
The engine, the clock and the error boundary live in :mod:`~sync_worker.store.base`.

Every method returns frozen values (:mod:`sync_worker.store.models`), never ORM objects; takes and
returns timezone-aware UTC timestamps; and raises :class:`~sync_worker.errors.StoreUnavailableError`
when the database cannot be reached. Migrate first with
:func:`~sync_worker.store.migrate.upgrade_database`.
"""

from __future__ import annotations

from sync_worker.store.delivery import DeliveryMixin
from sync_worker.store.flags import FlagsMixin
from sync_worker.store.held import HeldStagesMixin
from sync_worker.store.inbox import InboxMixin
from sync_worker.store.operations import OperationsMixin
from sync_worker.store.records import RecordsMixin

__all__ = ["SyncStore"]


class SyncStore(RecordsMixin, InboxMixin, DeliveryMixin, FlagsMixin, OperationsMixin, HeldStagesMixin):
    """The service's durable state on SQLite or PostgreSQL.

    ``SyncStore(engine_or_url, clock=...)``: ``clock`` supplies "now" where the caller passes no
    timestamp (tests inject a fixed one). Safe to share between threads: every call checks a
    connection out of the engine's pool for the length of one transaction.
    """
