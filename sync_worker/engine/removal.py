"""Pushing ``remove`` outbox items: deleting or archiving the twins of deleted records.

The router queues one ``remove`` item per route and deletion (``on_delete: delete`` or
``archive``, :func:`sync_worker.engine.router.queue_removal`). A drain of one target:

* items for the same target record settle together with ONE removal (the newest item's mode);
* a twin the store already holds as deleted is not removed again (the items are settled);
* the removals go to the connector's optional ``remove_records`` in one call
  (:class:`~sync_worker.connector.RecordRemover`). A connector without it removes nothing: its
  items fail for good, naming the target, the route and the mode, with one warning per drain, and
  the caller turns them into dead letters (``dlq list`` shows them; nothing is dropped silently);
* a removal done is remembered as a write of ``status = deleted`` (``remember_writes``) and the
  stored twin is marked deleted, so the deletion coming back from the target (HubSpot's archived
  stream or webhook, Pipedrive's deleted deals) is the service's echo and raises no change;
* a failed removal is retried with a growing delay while retryable, else it goes dead; a
  :class:`~sync_worker.errors.TransientError` or :class:`~sync_worker.errors.AuthError` raised by
  the connector propagates and leaves the items due (the actor retries the message).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sync_worker.canonical import CanonicalRecord, RecordKind, RecordRemoval, RemovalMode
from sync_worker.connector import Connector, RecordRemover
from sync_worker.engine.model import DeadItem, EngineConfig
from sync_worker.engine.normalise import record_from_stored
from sync_worker.engine.outbox import settle_failed
from sync_worker.store import OutboxItem, SyncStore

_log = logging.getLogger(__name__)

__all__ = ["RemovalStats", "push_removals"]

_MODES: frozenset[str] = frozenset({"delete", "archive"})


@dataclass(frozen=True)
class RemovalStats:
    """What one drain of ``remove`` items did: records removed, items settled without a call
    (twin already deleted), items retried later, items dead."""

    removed: int = 0
    skipped: int = 0
    retried: int = 0
    dead: tuple[DeadItem, ...] = ()


@dataclass
class _Removal:
    items: list[OutboxItem]
    removal: RecordRemoval


def _routes(items: Sequence[OutboxItem]) -> str:
    return ", ".join(sorted({str(i.payload.get("route")) for i in items}))


def _removals(
    target: str, items: Sequence[OutboxItem], dead: list[tuple[OutboxItem, str]]
) -> dict[tuple[RecordKind, str], _Removal]:
    """One removal per target record (the newest item's mode); unreadable items into ``dead``."""
    out: dict[tuple[RecordKind, str], _Removal] = {}
    for item in sorted(items, key=lambda i: (i.created_at, i.id)):
        payload = item.payload
        external_id, mode = payload.get("external_id"), payload.get("mode")
        if not external_id or mode not in _MODES:
            dead.append((item, f"a removal names no record or an unknown mode {str(mode)[:20]!r}"))
            continue
        kind: RecordKind = "lead" if payload.get("kind") == "lead" else "deal"
        removal = RecordRemoval(
            target=target,
            idempotency_key=item.idempotency_key,
            kind=kind,
            external_id=str(external_id),
            mode=_mode(str(mode)),
            origin=str(payload.get("origin")),
            origin_id=str(payload.get("origin_id")),
        )
        earlier = out.get((kind, removal.external_id))
        out[(kind, removal.external_id)] = _Removal([*(earlier.items if earlier else ()), item], removal)
    return out


def _mode(mode: str) -> RemovalMode:
    return "archive" if mode == "archive" else "delete"


def _fail(store: SyncStore, items: Sequence[OutboxItem], reason: str, now: datetime) -> list[DeadItem]:
    for item in items:
        store.mark_outbox_failed(item.id, reason, now, dead=True)
    return [DeadItem(i.id, i.idempotency_key, reason, dict(i.payload)) for i in items]


def _store_removed(store: SyncStore, target: str, removal: RecordRemoval, now: datetime) -> None:
    """Remember the removal as our write and mark the stored twin deleted (echo rule)."""
    store.remember_writes(target, [(removal.external_id, "status", "deleted")], at=now)
    stored = store.get_record(target, removal.kind, removal.external_id)
    if stored is None:
        record = CanonicalRecord(
            source=target,
            kind=removal.kind,
            external_id=removal.external_id,
            updated_at=now,
            status="deleted",
        )
    else:
        record = record_from_stored(stored, updated_at=max(now, stored.source_updated_at), status="deleted")
    store.upsert_record(
        record, origin=removal.origin, written_by_worker=True, seen_at=now, exists=stored is not None
    )


def push_removals(
    store: SyncStore,
    connector: Connector,
    target: str,
    items: Sequence[OutboxItem],
    *,
    config: EngineConfig,
    now: datetime,
) -> RemovalStats:
    """Remove the twins the due ``remove`` items of ``target`` call for; see the module docstring."""
    if not items:
        return RemovalStats()
    rejected: list[tuple[OutboxItem, str]] = []
    planned = _removals(target, items, rejected)
    dead: list[DeadItem] = []
    skipped = 0
    with store.unit():
        for item, reason in rejected:
            dead += _fail(store, [item], reason, now)
        if not isinstance(connector, RecordRemover):
            every = [item for p in planned.values() for item in p.items]
            _log.warning(
                "%s cannot remove records: %d removal(s) of route(s) %s fail for good (dead letters)",
                target,
                len(every),
                _routes(every),
            )
            for p in planned.values():
                reason = (
                    f"{target} cannot remove records: on_delete: {p.removal.mode} of route "
                    f"{_routes(p.items)} needs a connector with remove_records"
                )
                dead += _fail(store, p.items, reason, now)
            return RemovalStats(dead=tuple(dead))
        stored = {
            kind: store.get_records(target, kind, [i for k, i in planned if k == kind])
            for kind in {k for k, _ in planned}
        }
        for ref, p in list(planned.items()):
            twin = stored[ref[0]].get(ref[1])
            if twin is not None and twin.deleted:
                store.mark_outbox_sent(*(item.id for item in p.items))
                skipped += len(p.items)
                del planned[ref]
    if not planned:
        return RemovalStats(skipped=skipped, dead=tuple(dead))
    ready = list(planned.values())
    results = connector.remove_records([p.removal for p in ready])
    removed = retried = 0
    with store.unit():
        for p, result in zip(ready, results, strict=True):
            if result.ok:
                removed += 1
                _store_removed(store, target, p.removal, now)
                store.mark_outbox_sent(*(item.id for item in p.items))
                _log.info(
                    "%s %s %s: %s (%s %s was deleted)",
                    target,
                    p.removal.kind,
                    p.removal.external_id,
                    "archived" if p.removal.mode == "archive" else "deleted",
                    p.removal.origin,
                    p.removal.origin_id,
                )
                continue
            again, gone = settle_failed(store, p.items, result, config=config, now=now)
            retried += again
            dead += gone
    return RemovalStats(removed=removed, skipped=skipped, retried=retried, dead=tuple(dead))
