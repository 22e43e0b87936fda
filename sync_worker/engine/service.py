"""The sync service: the entry points the actors call with primitives.

Flow: inbox events and polled records -> normalised through the stage mappings
(:mod:`~sync_worker.engine.normalise`) -> stored with stage history and checked for echoes
(:mod:`~sync_worker.engine.ingest`) -> routed into the outbox (:mod:`~sync_worker.engine.router`)
-> pushed to the targets, coalesced and batched (:mod:`~sync_worker.engine.push`).

Errors: :class:`~sync_worker.errors.TransientError` propagates (the actor retries the message;
nothing was marked processed and no cursor moved past unstored records). Per-item permanent push
failures become outbox ``dead`` items listed in :attr:`PushStats.dead`; the caller writes their
dead letters with :func:`~sync_worker.engine.push.dead_letter_items`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sync_worker.canonical import CanonicalRecord
from sync_worker.connector import Connector, EchoCheck
from sync_worker.engine.fullpull import record_full_pull
from sync_worker.engine.held import HeldReapply, reapply_held
from sync_worker.engine.ingest import observe
from sync_worker.engine.model import EngineConfig, InboxOutcome, IngestResult, PullStats, PushStats
from sync_worker.engine.normalise import normalise_events
from sync_worker.engine.push import push_target
from sync_worker.engine.router import route_observation
from sync_worker.errors import ConfigError
from sync_worker.mappings import Mappings
from sync_worker.metrics import note_skipped
from sync_worker.store import InboxEvent, SyncStore
from sync_worker.store.flags import value_hash

__all__ = ["MappingsSource", "SyncService"]


class _Holder(Protocol):
    @property
    def current(self) -> Mappings: ...


MappingsSource = _Holder | Callable[[], Mappings] | Mappings


_MOVES = frozenset({"stage", "status"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SyncService:
    """Normalise, store, route and push changes between the configured systems.

    ``mappings`` is a :class:`~sync_worker.mappings.MappingsHolder` (its ``current`` is read on
    every call, so a reload takes effect at once), a callable returning the current mappings, or
    one fixed :class:`~sync_worker.mappings.Mappings`. ``connectors`` maps a system name to its
    connector. ``clock`` supplies "now" (timezone-aware UTC). ``on_moved`` is called, inside the
    unit of work that stored it, with the id of each record whose stage or status just changed
    (the runtime clears the deal's leak flags that no longer hold, at once rather than at the next
    scan).
    """

    def __init__(
        self,
        store: SyncStore,
        mappings: MappingsSource,
        connectors: Mapping[str, Connector],
        *,
        clock: Callable[[], datetime] = _utc_now,
        config: EngineConfig | None = None,
        on_moved: Callable[[Sequence[int]], object] | None = None,
    ) -> None:
        self._store = store
        self._on_moved = on_moved
        self._mappings = mappings
        self._connectors = dict(connectors)
        self._clock = clock
        self._config = config or EngineConfig()

    def __repr__(self) -> str:
        return f"SyncService(systems={sorted(self._connectors)!r})"

    @property
    def config(self) -> EngineConfig:
        return self._config

    def mappings(self) -> Mappings:
        """The mappings in force now."""
        source = self._mappings
        if isinstance(source, Mappings):
            return source
        if callable(source):
            return source()
        return source.current

    def connector(self, system: str) -> Connector:
        try:
            return self._connectors[system]
        except KeyError:
            enabled = ", ".join(sorted(self._connectors)) or "none"
            raise ConfigError(f"{system}: no connector configured (enabled: {enabled})") from None

    # -- records -------------------------------------------------------------------------------

    def ingest_record(self, record: CanonicalRecord) -> IngestResult:
        """Store one record from its source, then route it unless it is stale or our own echo.

        Storing and routing run in one unit of work (:meth:`~sync_worker.store.SyncStore.unit`):
        a worker killed in between leaves neither, and the redelivered message or the next poll
        does both. Called inside a caller's unit (a page, a delivery), it joins that one.
        """
        mappings = self.mappings()
        with self._store.unit():
            obs = observe(
                self._store,
                record,
                own_change_sources=self._config.own_change_sources,
                echo_window=self._config.echo_window,
                clock=self._clock,
            )
            queued, targets = route_observation(
                self._store, mappings, mappings.model, obs, config=self._config, clock=self._clock
            )
            if self._on_moved is not None and obs.change.applied and obs.changed & _MOVES:
                self._on_moved([obs.change.record.id])
        return IngestResult(
            source=record.source,
            external_id=record.external_id,
            record_id=obs.change.record.id,
            events=obs.events,
            echo=obs.echo,
            stale=not obs.change.applied,
            enqueued=queued,
            targets=targets,
        )

    def route_record_change(self, record: CanonicalRecord) -> IngestResult:
        """Alias of :meth:`ingest_record` for callers that already hold a normalised record."""
        return self.ingest_record(record)

    def reapply_held(self) -> HeldReapply:
        """Give held records the stage the mappings in force now cover, and route the move
        (:func:`~sync_worker.engine.held.reapply_held`); run after a reload and at worker start."""
        return reapply_held(self._store, self.mappings(), self.ingest_record)

    # -- inbox ---------------------------------------------------------------------------------

    def handle_inbox_event(self, inbox_id: int) -> InboxOutcome:
        """Normalise, store and route one accepted webhook event, then mark it processed.

        An unknown or already processed id does nothing (a redelivered message never writes twice).
        """
        return self.handle_inbox_events([inbox_id])

    def handle_inbox_events(self, inbox_ids: Sequence[int]) -> InboxOutcome:
        """Like :meth:`handle_inbox_event` for several ids (one webhook delivery).

        The connector reads what the events need in one go (a batch read, outside any
        transaction); then each source's records are stored, routed and their events marked
        processed in one unit of work, so a redelivered delivery finds all of it done or none.
        """
        pending: dict[str, list[InboxEvent]] = {}
        results = InboxOutcome()
        for event in self._store.get_inbox_events(inbox_ids):  # one read for the delivery
            if event.processed_at is None:
                pending.setdefault(event.source, []).append(event)
            else:
                results.redone += 1
        for source, events in pending.items():
            connector = self.connector(source)
            normalised = normalise_events(
                events,
                connector,
                self.mappings(),
                self._store.get_record,
                own_change_sources=self._config.own_change_sources,
                was_written=self._echo_check(source, events),
            )
            with self._store.unit():
                for record, ids in normalised.records:
                    results.append(self.ingest_record(record))
                    for inbox_id in ids:
                        self._store.mark_processed(inbox_id, at=self._clock())
                for inbox_id in normalised.echo_ids:
                    self._store.mark_processed(inbox_id, at=self._clock())
                for inbox_id, reason in normalised.skipped.items():
                    self._store.mark_processed(inbox_id, at=self._clock(), skip_reason=reason)
            for reason in normalised.skipped.values():
                note_skipped(source, reason)
        return results

    def _echo_check(self, source: str, events: Sequence[InboxEvent]) -> EchoCheck:
        """The write-memory check for a delivery: for several events, the memory of their records
        is read once (:meth:`~sync_worker.store.SyncStore.recent_writes`) and each check answered
        from it; a check about another system or record asks the store."""
        if len(events) < 2:
            return self._was_written
        now = self._clock()
        ids = {e.object_id for e in events}
        written = self._store.recent_writes(source, ids, self._config.echo_window, now=now)

        def check(system: str, external_id: str, field: str, value: object) -> bool:
            if system != source or external_id not in ids:
                return self._was_written(system, external_id, field, value)
            return (external_id, field, value_hash(value)) in written

        return check

    def _was_written(self, system: str, external_id: str, field: str, value: object) -> bool:
        within = self._config.echo_window
        return self._store.was_written(system, external_id, field, value, within, now=self._clock())

    # -- polls ---------------------------------------------------------------------------------

    def poll(
        self,
        source: str,
        stream: str,
        *,
        full: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> PullStats:
        """Pull one stream page by page, storing and routing each record.

        ``full`` starts from the beginning (a backfill) instead of the stored cursor. Each page is
        one unit of work: its records, stage history, links, outbox rows and cursor commit
        together, so a crash leaves all of the page or none of it and re-reads at most
        that page. ``progress`` is called with the number of records of each page.

        A pull that started from the beginning (``full``, or no stored cursor) and ran to its last
        page records when it started (:func:`~sync_worker.engine.fullpull.record_full_pull`), for
        the "dropped" leak rule; one that raises part-way records nothing.
        """
        connector = self.connector(source)
        started = self._clock()
        # An empty stored cursor means "start over" (a stream whose sweep finished returns None).
        cursor = None if full else (self._store.get_cursor(source, stream) or None)
        from_start = cursor is None
        pages = records = changed = echoes = stale = enqueued = 0
        targets: set[str] = set()
        for page in connector.pull_changes(stream, cursor):
            pages += 1
            with self._store.unit():  # the page's records, links, outbox rows and cursor: all or none
                for record in page.records:
                    result = self.ingest_record(record)
                    records += 1
                    changed += 1 if result.events else 0
                    echoes += 1 if result.echo else 0
                    stale += 1 if result.stale else 0
                    enqueued += result.enqueued
                    targets |= result.targets
                if page.cursor is not None:
                    self._store.set_cursor(source, stream, page.cursor)
                elif page.done and cursor is not None:
                    self._store.set_cursor(source, stream, "")
            if page.cursor is not None:
                cursor = page.cursor
            elif page.done:
                cursor = None
            if progress is not None:
                progress(len(page.records))
        if from_start:
            record_full_pull(self._store, source, stream, started)
        return PullStats(
            source=source,
            stream=stream,
            pages=pages,
            records=records,
            changed=changed,
            echoes=echoes,
            stale=stale,
            enqueued=enqueued,
            cursor=cursor,
            targets=frozenset(targets),
        )

    # -- push ----------------------------------------------------------------------------------

    def push(self, target: str, *, limit: int = 500) -> PushStats:
        """Write the due outbox items of ``target`` (coalesced per record, batched); see :mod:`.push`."""
        return push_target(
            self._store,
            self.connector(target),
            target,
            self.mappings().model,
            config=self._config,
            clock=self._clock,
            limit=limit,
        )
