"""Draining the outbox of one target: coalesce, write in batches, record what happened.

* Coalescing: due items for the same target record (same ``ref``) merge into ONE update, each
  field taking the value with the newest source timestamp (ties: the system first in
  :func:`~sync_worker.engine.model.system_rank`). The connector batches the updates as its API
  allows (HubSpot ``batch/update`` and ``batch/create``, 100 inputs a call:
  https://developers.hubspot.com/docs/api/crm/deals).
* Creates: the create key is claimed (``claim_key``) before the write, so a replay never creates
  a second deal; when the key is already claimed with a result, the item becomes an update of the
  deal created then. The new record is stored and linked to the record it came from. A claim with
  no result older than ``EngineConfig.create_lease`` was left by a push whose worker died between
  the claim and the answer: the next push takes it over (one taker, ``take_over_claim``). The dead
  push may have created the deal before dying, so the store is searched first for a record of the
  target linked to the origin (a later poll brings such a deal in, linked by the ids the create
  carried); found, the item becomes an update of it; not found, the deal is created.
* After a write: every written value is remembered (``remember_write``) so its echo is
  recognised, and the stored copy of the target record is brought up to date.
* Removals (``remove`` items, a route's ``on_delete``) are pushed after the writes by
  :func:`~sync_worker.engine.removal.push_removals` and counted in :attr:`PushStats.removed`.
* Failures: a retryable one is retried later with a growing delay (dead after
  ``max_attempts``); a permanent one marks the items ``dead`` with the reason, reported in
  :attr:`PushStats.dead` for the caller to dead-letter (:func:`dead_letter_items`). A
  :class:`~sync_worker.errors.TransientError` or :class:`~sync_worker.errors.AuthError` raised by
  the connector propagates and leaves the items due (the actor retries the message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    RecordKind,
    StageKey,
    StageKind,
    StageModel,
    UpdateResult,
)
from sync_worker.connector import Connector
from sync_worker.engine.ingest import field_time, field_value, target_wins
from sync_worker.engine.model import DeadItem, EngineConfig, PushStats, system_rank
from sync_worker.engine.normalise import record_from_stored
from sync_worker.engine.outbox import FLAG, MIRROR, REMOVE, by_kind, settle_failed
from sync_worker.engine.removal import push_removals
from sync_worker.errors import PermanentError, SyncWorkerError
from sync_worker.leaks.wire import deserialise_update
from sync_worker.store import OutboxItem, StoredRecord, SyncStore
from sync_worker.store.flags import value_hash

_log = logging.getLogger(__name__)

__all__ = ["Plan", "dead_letter_items", "merge_items", "push_target"]


@dataclass
class Plan:
    """One coalesced write: the outbox items it settles and the merged fields (name -> value, ts, origin)."""

    items: list[OutboxItem]
    fields: dict[str, tuple[Any, str, str]]
    kind: str
    external_id: str | None
    create_key: str | None
    title: str | None
    contact_email: str | None
    advance_only: set[str] = field(default_factory=set)
    origin_record_id: int | None = None
    claimed: bool = False
    # Per field, the value hashes the target held when the items were planned; a field some item
    # planned without knowing the target (a create, an old payload) is not listed.
    target_had: dict[str, set[str]] = field(default_factory=dict)
    # Per field, the newest time the target's value was known to date from when items were planned
    target_since: dict[str, datetime] = field(default_factory=dict)

    @property
    def record_kind(self) -> RecordKind:
        """The store's kind of the target record (a lead for lead pushes, else a deal)."""
        return "lead" if self.kind == "lead" else "deal"

    @property
    def origin(self) -> tuple[str, str]:
        """``(origin system, origin id)`` of the newest field."""
        newest = max(self.items, key=lambda i: (i.created_at, i.id))
        return str(newest.payload.get("origin")), str(newest.payload.get("origin_id"))


def _wins(new: tuple[Any, str, str], old: tuple[Any, str, str]) -> bool:
    """Whether the later-queued ``new`` value beats ``old``: the newer source timestamp; in a tie
    from the same system the later observation (a source with second precision reports several
    moves in one second); in a tie between systems the one first in ``system_rank``."""
    new_ts, old_ts = datetime.fromisoformat(new[1]), datetime.fromisoformat(old[1])
    if new_ts != old_ts:
        return new_ts > old_ts
    if new[2] == old[2]:
        return True
    return system_rank(new[2]) < system_rank(old[2])


def merge_items(items: Sequence[OutboxItem]) -> list[Plan]:
    """Group due items by target record and merge their fields, newest value per field winning."""
    plans: dict[str, Plan] = {}
    unknown: dict[str, set[str]] = {}  # per ref, fields some item planned without the target's value
    for item in sorted(items, key=lambda i: (i.created_at, i.id)):
        payload = item.payload
        ref = str(payload.get("ref"))
        plan = plans.get(ref)
        if plan is None:
            plan = Plan(
                items=[],
                fields={},
                kind=str(payload.get("kind") or "deal"),
                external_id=payload.get("external_id"),
                create_key=payload.get("create_key"),
                title=payload.get("title"),
                contact_email=payload.get("contact_email"),
                origin_record_id=payload.get("origin_record_id"),
            )
            plans[ref] = plan
        plan.items.append(item)
        plan.contact_email = plan.contact_email or payload.get("contact_email")
        raw_fields: Mapping[str, Any] = payload.get("fields") or {}
        for name, entry in raw_fields.items():
            if "t" in entry:
                plan.target_had.setdefault(name, set()).add(value_hash(entry["t"]))
                if entry.get("tt"):
                    since = datetime.fromisoformat(str(entry["tt"]))
                    plan.target_since[name] = max(since, plan.target_since.get(name, since))
            else:
                unknown.setdefault(ref, set()).add(name)
            candidate = (entry.get("v"), str(entry.get("ts")), str(entry.get("o")))
            current = plan.fields.get(name)
            if current is None or _wins(candidate, current):
                plan.fields[name] = candidate
                if name in (payload.get("advance_only") or []):
                    plan.advance_only.add(name)
                else:
                    plan.advance_only.discard(name)
    for ref, names in unknown.items():
        for name in names:
            plans[ref].target_had.pop(name, None)
    return list(plans.values())


def _values(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (value, _, _) in plan.fields.items():
        if value is None:
            continue
        if name == "stage":
            out[name] = StageKey(value)
        elif name == "amount":
            out[name] = Decimal(str(value))
        elif name == "close_date":
            out[name] = date.fromisoformat(str(value))
        else:
            out[name] = value
    return out


def _update(target: str, plan: Plan, values: Mapping[str, Any]) -> CanonicalUpdate:
    origin, origin_id = plan.origin
    key = (
        plan.items[-1].idempotency_key
        if len(plan.items) == 1
        else f"{plan.items[-1].idempotency_key}+{len(plan.items)}"
    )
    return CanonicalUpdate(
        target=target,
        idempotency_key=key,
        origin=origin,
        origin_id=origin_id,
        external_id=plan.external_id,
        kind=plan.record_kind,
        stage=values.get("stage"),
        status=values.get("status"),
        title=values.get("title") or (plan.title if plan.external_id is None else None),
        amount=values.get("amount"),
        currency=values.get("currency"),
        close_date=values.get("close_date"),
        lost_reason=values.get("lost_reason"),
        contact_email=plan.contact_email,
    )


def _status_after(model: StageModel, values: Mapping[str, Any]) -> str | None:
    stage = values.get("stage")
    if stage is not None:
        kind = model.get(stage).kind
        if kind is StageKind.WON:
            return "won"
        if kind is StageKind.LOST:
            return "lost"
        return values.get("status") or "open"
    status = values.get("status")
    return str(status) if status is not None else None


def _store_written(
    store: SyncStore,
    model: StageModel,
    target: str,
    plan: Plan,
    values: Mapping[str, Any],
    result: UpdateResult,
    now: datetime,
) -> None:
    external_id = result.external_id or plan.external_id
    if external_id is None:
        return
    kind = plan.record_kind
    written = [(external_id, k, v.value if isinstance(v, StageKey) else v) for k, v in values.items()]
    # What the service wrote to these fields before is overwritten now, by itself: no longer an
    # echo (a person setting the field back to it later makes a real change)
    store.forget_overwritten(target, external_id, {k: v for _, k, v in written})
    store.remember_writes(target, written, at=now)
    changes: dict[str, Any] = {k: v for k, v in values.items() if k != "status"}
    status = _status_after(model, values)
    if status is not None:
        changes["status"] = status
    stored = store.get_record(target, kind, external_id)
    origin = plan.origin[0]
    if stored is not None:
        when = max(result.updated_at or stored.source_updated_at, stored.source_updated_at)
        changes.setdefault("contact_email", stored.contact_email or plan.contact_email)
        if "stage" in changes:
            changes["source_stage"] = None
        record = record_from_stored(stored, updated_at=when, **changes)
    else:
        record = CanonicalRecord(
            source=target,
            kind=kind,
            external_id=external_id,
            updated_at=result.updated_at or now,
            title=values.get("title") or plan.title,
            contact_email=plan.contact_email,
            created_at=result.updated_at or now,
            **{k: v for k, v in changes.items() if k != "title"},
        )
    change = store.upsert_record(
        record, origin=origin, written_by_worker=True, seen_at=now, exists=stored is not None
    )
    if plan.origin_record_id is not None and (stored is None or plan.create_key is not None):
        store.link_records([int(plan.origin_record_id), change.record.id])


def _claim_create(store: SyncStore, target: str, plan: Plan, *, config: EngineConfig, now: datetime) -> bool:
    """Claim the create of a planned new deal; False when it must wait (claimed, no result yet)."""
    key = plan.create_key
    if key is None or plan.external_id is not None:
        return True
    if store.claim_key(key, at=now):
        plan.claimed = True
        return True
    previous = store.key_result(key) or {}
    created = previous.get("external_id")
    if created:
        plan.external_id = str(created)  # created before: this is now an update of that deal
        return True
    if not store.take_over_claim(key, claimed_before=now - config.create_lease, at=now):
        return False  # another push is creating it right now
    made = _made_before(store, target, plan)
    if made is not None:
        _log.warning("create %s: left unfinished by a push that died; the deal it made is %s", key, made)
        store.record_result(key, {"external_id": made})
        plan.external_id = made
        return True
    _log.warning("create %s: left unfinished by a push that died, no such deal known: creating it", key)
    plan.claimed = True
    return True


def _made_before(store: SyncStore, target: str, plan: Plan) -> str | None:
    """The id of a ``target`` record already linked to the plan's origin (a deal a dead push made)."""
    if plan.origin_record_id is None:
        return None
    for record in store.linked_records(int(plan.origin_record_id)):
        if record.source == target and record.kind == plan.record_kind:
            return record.external_id
    return None


def _advance_filter(
    model: StageModel, plan: Plan, stored: StoredRecord | None, values: dict[str, Any]
) -> None:
    if "stage" not in plan.advance_only or "stage" not in values or plan.external_id is None:
        return
    if (
        stored is not None
        and stored.stage is not None
        and not model.is_advance(stored.stage, values["stage"])
    ):
        del values["stage"]


def _newer_at_target(
    plan: Plan,
    stored: StoredRecord | None,
    written: frozenset[tuple[str, str, str]],
    values: dict[str, Any],
) -> None:
    """Drop the fields the target changed on its own after they were planned, with a newer
    timestamp than theirs: newest wins per field, also when the target's change was observed
    after this write was queued (its own change is routed the other way and wins there).

    The target changed on its own when its stored value is none of the values it held when the
    items were planned, or is one of them but took it later than it was known then (it went A, B,
    A meanwhile: for the stage, whose entry time the store keeps), and is not a value the service
    wrote to it (write memory)."""
    if stored is None or plan.external_id is None:
        return
    for name in [n for n in values if n in plan.target_had]:
        current = field_value(stored, name)
        held = value_hash(current)
        if (plan.external_id, name, held) in written:
            continue
        if held == value_hash(values[name]):
            continue  # the target already holds what would be written
        # Only the stage has a clock of its own (its entry time); the other fields share the
        # record's, which any field's change moves on.
        known = plan.target_since.get(name) if name == "stage" else None
        if held in plan.target_had[name] and (known is None or field_time(stored, name) <= known):
            continue  # not changed since planned
        _, stamp, origin = plan.fields[name]
        theirs, ours = field_time(stored, name), datetime.fromisoformat(stamp)
        if target_wins(name, stored.source, theirs, origin, ours):  # the router's rule, the other way
            _log.info(
                "%s %s: kept the target's newer %s (%s at %s) over %s's change at %s",
                stored.source,
                plan.external_id,
                name,
                current,
                theirs.isoformat(),
                origin,
                stamp,
            )
            del values[name]


def _drop_held(stored: StoredRecord | None, values: dict[str, Any]) -> None:
    """Drop the fields the target's stored copy already holds. The router queues every change of
    a mirrored field, even one back to what the target holds (A, B, A while B is still queued):
    merged, the newest value wins, and when that is what the target holds the queued items settle
    with no write. A currency stays beside an amount that is written."""
    if stored is None:
        return
    for name in list(values):
        if name == "currency" and "amount" in values:
            continue
        if value_hash(field_value(stored, name)) == value_hash(values[name]):
            del values[name]


@dataclass
class _Write:
    """One input of the connector's batch: the items it settles, and the mirror plan behind it."""

    items: list[OutboxItem]
    update: CanonicalUpdate
    plan: Plan | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


def _flag_writes(
    items: Sequence[OutboxItem], dead: list[tuple[OutboxItem, str]]
) -> dict[tuple[str, str], _Write]:
    """The newest flag write per target record; older ones ride along (settled with it)."""
    writes: dict[tuple[str, str], _Write] = {}
    for item in sorted(items, key=lambda i: (i.created_at, i.id)):
        try:
            update = deserialise_update(item.payload)
        except PermanentError as exc:
            dead.append((item, f"unreadable flag write-back: {exc}"))
            continue
        if update.external_id is None or update.flag is None:
            dead.append((item, "a flag write-back names no existing record or no flag"))
            continue
        ref = (update.kind, update.external_id)
        earlier = writes.get(ref)
        writes[ref] = _Write([*(earlier.items if earlier else ()), item], update)
    return writes


def _targets_now(
    store: SyncStore, target: str, plans: Sequence[Plan], *, config: EngineConfig, now: datetime
) -> tuple[dict[tuple[str, str | None], StoredRecord], frozenset[tuple[str, str, str]]]:
    """The stored copies of the plans' target records (by kind and id) and what the service wrote
    to them within the echo window: one read each per kind, for the whole push."""
    ids: dict[RecordKind, set[str]] = {}
    for plan in plans:
        if plan.external_id is not None:
            kind = plan.record_kind
            ids.setdefault(kind, set()).add(str(plan.external_id))
    stored: dict[tuple[str, str | None], StoredRecord] = {}
    for kind, wanted in ids.items():
        for external_id, record in store.get_records(target, kind, wanted).items():
            stored[(kind, external_id)] = record
    every = set().union(*ids.values()) if ids else set()
    written = store.recent_writes(target, every, config.echo_window, now=now) if every else frozenset()
    return stored, written


def _plan_writes(
    store: SyncStore,
    model: StageModel,
    target: str,
    plans: Sequence[Plan],
    flags: dict[tuple[str, str], _Write],
    ready: list[_Write],
    *,
    config: EngineConfig,
    now: datetime,
) -> tuple[int, int]:
    """Turn the mirror plans into writes (``ready``, flags riding along); (retried, skipped) items."""
    retried = skipped = 0
    stored, written = _targets_now(store, target, plans, config=config, now=now)
    for plan in plans:
        if not _claim_create(store, target, plan, config=config, now=now):
            for item in plan.items:
                store.mark_outbox_failed(
                    item.id, "waiting for the deal being created", now + config.retry_base
                )
            retried += len(plan.items)
            continue
        values = _values(plan)
        current = stored.get((plan.record_kind, plan.external_id)) if plan.external_id is not None else None
        if current is not None and (current.deleted or current.status == "deleted"):
            # A twin deleted meanwhile (by a person or by the service's removal) takes no write:
            # it would fail, or bring a deleted deal back to life in the store
            _log.info("%s %s: deleted, the queued write is dropped", target, plan.external_id)
            values.clear()
        _advance_filter(model, plan, current, values)
        _newer_at_target(plan, current, written, values)
        _drop_held(current, values)
        if not values and plan.external_id is not None:
            for item in plan.items:
                store.mark_outbox_sent(item.id)
            skipped += len(plan.items)
            continue
        update = _update(target, plan, values)
        items = list(plan.items)
        flag = flags.pop((update.kind, plan.external_id), None) if plan.external_id is not None else None
        if flag is not None:  # one input per record: the flag rides on the mirror write
            update = replace(update, flag=flag.update.flag)
            items += flag.items
        ready.append(_Write(items, update, plan, values))
    ready += flags.values()
    return retried, skipped


def _reject(store: SyncStore, rejected: Sequence[tuple[OutboxItem, str]], now: datetime) -> list[DeadItem]:
    dead: list[DeadItem] = []
    for item, reason in rejected:
        store.mark_outbox_failed(item.id, reason, now, dead=True)
        dead.append(DeadItem(item.id, item.idempotency_key, reason, dict(item.payload)))
    return dead


def push_target(
    store: SyncStore,
    connector: Connector,
    target: str,
    model: StageModel,
    *,
    config: EngineConfig,
    clock: Callable[[], datetime],
    limit: int = 500,
) -> PushStats:
    """Drain the due outbox items of ``target`` once; see the module docstring."""
    now = clock()
    due = store.due_outbox(now, limit, target=target)
    groups = by_kind(due)
    rejected: list[tuple[OutboxItem, str]] = [
        (item, f"outbox item of unknown kind {kind!r} for {target}")
        for kind, items in groups.items()
        if kind not in (MIRROR, FLAG, REMOVE)
        for item in items
    ]
    flags = _flag_writes(groups.get(FLAG, ()), rejected)
    plans = merge_items(groups.get(MIRROR, ()))
    ready: list[_Write] = []
    with store.unit():  # claims, waits and skips: one commit, made before the HTTP call
        retried, skipped = _plan_writes(store, model, target, plans, flags, ready, config=config, now=now)
        dead = _reject(store, rejected, now)
    if not ready:
        stats = PushStats(target, items=len(due), retried=retried, skipped=skipped, dead=tuple(dead))
        return _with_removals(store, connector, stats, groups.get(REMOVE, ()), config=config, now=now)
    try:
        results = connector.apply_updates([write.update for write in ready])
    except SyncWorkerError:
        with store.unit():
            for write in ready:
                if write.plan is not None and write.plan.claimed and write.plan.create_key is not None:
                    store.release_key(write.plan.create_key)
        raise
    writes = created = 0
    # What the target answered, recorded in ONE transaction: the values written (echo markers),
    # the target's record, the create results and every settled outbox item commit together.
    sent: list[int] = []
    with store.unit():
        for write, result in zip(ready, results, strict=True):
            written = write.plan
            if result.ok:
                writes += 1
                if written is not None:
                    if written.claimed and written.create_key is not None:
                        created += 1
                        store.record_result(written.create_key, {"external_id": result.external_id})
                    _store_written(store, model, target, written, write.values, result, now)
                sent.extend(item.id for item in write.items)
                continue
            if written is not None and written.claimed and written.create_key is not None:
                store.release_key(written.create_key)
            again, gone = settle_failed(store, write.items, result, config=config, now=now)
            retried += again
            dead += gone
        if sent:
            store.mark_outbox_sent(*sent)
    stats = PushStats(
        target,
        items=len(due),
        writes=writes,
        created=created,
        skipped=skipped,
        retried=retried,
        dead=tuple(dead),
    )
    return _with_removals(store, connector, stats, groups.get(REMOVE, ()), config=config, now=now)


def _with_removals(
    store: SyncStore,
    connector: Connector,
    stats: PushStats,
    items: Sequence[OutboxItem],
    *,
    config: EngineConfig,
    now: datetime,
) -> PushStats:
    """``stats`` with the outcome of the due ``remove`` items added (they go after the writes)."""
    if not items:
        return stats
    done = push_removals(store, connector, stats.target, items, config=config, now=now)
    return replace(
        stats,
        removed=done.removed,
        skipped=stats.skipped + done.skipped,
        retried=stats.retried + done.retried,
        dead=stats.dead + done.dead,
    )


def dead_letter_items(
    store: SyncStore, dead: Sequence[DeadItem], *, queue: str = "push", actor: str = "push"
) -> list[int]:
    """Write one dead letter per dead outbox item (message id ``outbox:<id>``); their ids."""
    return [
        store.add_dead_letter(
            queue=queue,
            actor=actor,
            message_id=f"outbox:{item.outbox_id}",
            payload={"outbox_id": item.outbox_id, "idempotency_key": item.idempotency_key, **item.payload},
            reason=item.reason,
            error_class="PermanentError",
        )
        for item in dead
    ]
