"""Routing one observed change: find the target record, decide the fields to write, queue the write.

Per route (see :mod:`sync_worker.engine.routing`):

1. The target record is found by the route's ``match`` strategies in order: the stored link
   between records, an id of the target record the source carries (``record.links``), or the
   contact's e-mail. A match found by id or e-mail is linked, so the next change takes the link.
   None found and ``create`` set: the target deal is created at push time (``external_id`` None)
   and linked then.
2. Fields: only fields that changed in the source flow (all of them for a create). ``stage`` is
   ``mirror`` (copied) or ``advance_only`` (written only when it moves the target forward in the
   funnel, :meth:`~sync_worker.canonical.StageModel.is_advance`; outreach never moves a deal
   back). A value the target already holds is not written again. Conflict: when the target
   changed the same field on its own since the last sync, the newer source timestamp wins; a tie
   goes to the system with the lower :func:`~sync_worker.engine.model.system_rank`.
3. The write is queued in the outbox under a deterministic idempotency key (route, origin record,
   target, values, source timestamp), ``not_before`` now + the coalescing window, so a replayed
   change is queued once and close changes to one record merge into one write at push time.
4. A deletion (the source record's status became ``deleted``: a Pipedrive deal deleted, a HubSpot
   deal archived) is decided before anything else, so it never creates a record and never
   writes fields. Per the route's ``on_delete``: ``delete`` or ``archive`` queue one ``remove``
   outbox item for the twin (:mod:`sync_worker.engine.removal` pushes it); ``mark`` writes
   nothing, logs a warning naming both records and keeps the deleted record in the store (the
   leak scan's ``dropped`` rule reports a deal deleted while live); ``ignore`` does nothing. The
   twin is found by the stored link or an id only, never by e-mail alone (a contact may have
   several deals); a twin that is unknown or already deleted is left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sync_worker.canonical import CanonicalRecord, RecordKind, StageKey, StageModel
from sync_worker.engine.ingest import PRECISION, Observation, field_time, field_value, target_wins
from sync_worker.engine.model import EVENT_REPLY, EngineConfig, system_rank
from sync_worker.engine.outbox import MIRROR, REMOVE
from sync_worker.engine.routing import EngineRoute, routes_for
from sync_worker.mappings import Mappings
from sync_worker.store import StoredRecord, SyncStore

_log = logging.getLogger(__name__)

__all__ = [
    "PAYLOAD_VERSION",
    "Target",
    "create_key",
    "find_target",
    "held_routes",
    "plan_fields",
    "queue_removal",
    "route_observation",
]

PAYLOAD_VERSION = 1


def _target_kind(system: str) -> RecordKind:
    """What a system holds: its spec's ``record_kind`` (deals unless it is an outreach tool)."""
    from sync_worker.plugins import registry

    spec = registry().get(system)
    return spec.record_kind if spec is not None else "deal"


@dataclass(frozen=True)
class Target:
    """The record a route writes to: stored (``stored``), known by id only, or to be created."""

    system: str
    kind: RecordKind
    external_id: str | None
    stored: StoredRecord | None = None

    @property
    def ref(self) -> str:
        return f"{self.system}:{self.kind}:{self.external_id}"


def create_key(target: str, origin: CanonicalRecord) -> str:
    """The one key under which the target deal for this origin record is created (claimed once)."""
    return f"create:{target}:{origin.source}:{origin.kind}:{origin.external_id}"


def _usable(record: StoredRecord, system: str) -> bool:
    return record.source == system and not record.deleted


def find_target(
    store: SyncStore, route: EngineRoute, record: CanonicalRecord, record_id: int
) -> Target | None:
    """The target record of ``route`` for ``record`` by the route's match strategies, linking new finds."""
    system = route.target
    for how in route.match:
        if how == "link":
            for other in store.linked_records(record_id):
                if _usable(other, system):
                    return Target(system, other.kind, other.external_id, other)
        elif how == "external_id":
            known = record.links.get(system)
            if known:
                kind = _target_kind(system)
                stored = store.get_record(system, kind, known)
                if stored is not None:
                    store.link_records([record_id, stored.id])
                return Target(system, kind, known, stored)
        elif how == "email" and record.contact_email:
            found = [r for r in store.find_records_by_email(record.contact_email) if _usable(r, system)]
            if found:
                best = max(found, key=lambda r: (r.source_updated_at, r.id))
                store.link_records([record_id, best.id])
                return Target(system, best.kind, best.external_id, best)
    return None


WrittenCheck = Callable[[str, object], bool]
"""``written(field, value)``: whether the service itself wrote ``value`` to the target's ``field``
lately (its write memory): such a value is the service's copy, not the target's own change."""


def _loses_conflict(
    name: str,
    obs: Observation,
    target: StoredRecord | None,
    value: object,
    written: WrittenCheck | None = None,
) -> bool:
    """True when the target changed ``name`` on its own since the last sync and its change is newer.

    A target showing what the source moved away from is in step, unless it moved back to it on
    its own: clearly after the source's change (the target wins), or within a second of it (the
    clocks cannot order the two moves: the tie order decides). A target first seen in that stage
    made no move."""
    if target is None or obs.before is None:
        return False
    current = field_value(target, name)
    if current == value:
        return False  # no divergence
    theirs, ours = field_time(target, name), obs.record.updated_at
    in_step = current == field_value(obs.before, name)
    if in_step and (name != "stage" or theirs + PRECISION <= ours):
        return False  # the target still shows what the source moved away from (no store read)
    if written is not None and written(name, current):
        return False  # the target shows what the service copied there, not a change of its own
    if in_step:
        if theirs >= ours + PRECISION:
            return True  # the target came back to it on its own, clearly after the source moved
        # The target moved to this value within a second of the source's change (a move, not a
        # first sighting): the clocks cannot order the two moves, so the system first in the tie
        # order wins, on both copies (the push applies the same rule the other way).
        entered = target.stage_entered_at
        moved = entered is not None and entered > target.first_seen_at
        return moved and system_rank(target.source) < system_rank(obs.record.source)
    return target_wins(name, target.source, theirs, obs.record.source, ours)


def plan_fields(
    route: EngineRoute,
    obs: Observation,
    target: Target | None,
    model: StageModel,
    written: WrittenCheck | None = None,
) -> dict[str, object]:
    """The fields (name -> canonical value) this route writes for this change; empty: nothing to do.

    ``written`` tells a value the service wrote to the target (see :data:`WrittenCheck`)."""
    record = obs.record
    creating = target is None
    stored = target.stored if target is not None else None
    out: dict[str, object] = {}
    if route.stage != "none" and record.stage is not None:
        new = record.stage
        current = stored.stage if stored is not None else None
        if route.stage == "advance_only":
            wanted = current is None or (current != new and model.is_advance(current, new))
        else:
            # A change back to what the target holds is queued too: a write of the change before it
            # may still wait in the outbox, and the newer value must win the merge (the push drops
            # a value the target already holds, so nothing is written twice).
            # A record seen for the first time has no change before it waiting: nothing to outvote.
            first_sight_in_step = obs.before is None and current == new
            wanted = (creating or "stage" in obs.changed) and not first_sight_in_step
            wanted = wanted and not _loses_conflict("stage", obs, stored, new.value, written)
        if wanted:
            out["stage"] = new.value
    for name in sorted(route.fields):
        value = field_value(record, name)
        if value is None or (name == "status" and value == "deleted"):
            continue
        if not creating and name not in obs.changed:
            continue
        if obs.before is None and stored is not None and field_value(stored, name) == value:
            continue  # first sighting, already in step (see the stage above)
        if _loses_conflict(name, obs, stored, value, written):
            continue
        out[name] = value
    if route.only_status is not None and "status" in route.fields and "status" not in out:
        return {}
    if "amount" in out and record.currency is not None and "currency" in route.fields:
        # Money travels with its currency: an amount is never written into another currency.
        out["currency"] = record.currency
    return out


def _json(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _key(obs: Observation, route: EngineRoute, ref: str, fields: dict[str, object]) -> str:
    """The write's idempotency key: the same change observed twice gets the same key. The source's
    values before the change are part of it, so a record moved A, B, A within one second of a source
    with second precision queues the second A too (a replay has the same before and after)."""
    record = obs.record
    before = obs.before
    identity = [
        route.name,
        record.source,
        record.kind,
        record.external_id,
        ref,
        sorted((k, _json(v)) for k, v in fields.items()),
        record.updated_at.isoformat(),
        sorted((k, _json(field_value(before, k))) for k in fields if hasattr(before, k)) if before else [],
    ]
    digest = hashlib.sha256(json.dumps(identity, default=str, separators=(",", ":")).encode()).hexdigest()
    return f"push:{route.target}:{digest[:40]}"


def _about(route: EngineRoute, obs: Observation) -> dict[str, Any]:
    """What every outbox item of a route says about itself: version, route, target and origin."""
    return {
        "v": PAYLOAD_VERSION,
        "route": route.name,
        "target": route.target,
        "origin": obs.record.source,
        "origin_id": obs.record.external_id,
        "origin_record_id": obs.change.record.id,
    }


def _payload(
    route: EngineRoute, obs: Observation, target: Target | None, fields: dict[str, object]
) -> dict[str, Any]:
    record = obs.record
    stamp = record.updated_at.isoformat()
    stored = target.stored if target is not None else None
    payload: dict[str, Any] = {
        **_about(route, obs),
        "fields": {
            name: {"v": _json(value), "ts": stamp, "o": record.source}
            # "t": what the target held when this write was planned, "tt": since when (the push
            # re-checks both: a target stage that went A, B, A since holds "t" again, but newer)
            | (
                {"t": _json(field_value(stored, name)), "tt": field_time(stored, name).isoformat()}
                if stored is not None
                else {}
            )
            for name, value in fields.items()
        },
        "advance_only": ["stage"] if route.stage == "advance_only" and "stage" in fields else [],
        "contact_email": (stored.contact_email if stored is not None else None) or record.contact_email,
    }
    if target is None:
        key = create_key(route.target, record)
        payload.update(
            ref=f"new:{key}",
            kind="deal",
            external_id=None,
            create_key=key,
            title=record.title or record.contact_email or f"{record.source} {record.external_id}",
        )
    else:
        payload.update(ref=target.ref, kind=target.kind, external_id=target.external_id)
    return payload


def _write_memory(
    store: SyncStore, target: Target | None, config: EngineConfig, clock: Callable[[], datetime]
) -> WrittenCheck | None:
    """The write-memory check for ``target`` (asked only when a conflict needs it)."""
    if target is None or target.external_id is None:
        return None
    system, external_id = target.system, target.external_id

    def written(name: str, value: object) -> bool:
        return store.was_written(system, external_id, name, value, config.echo_window, now=clock())

    return written


def _representable(mappings: object, target: str, stage: str) -> bool:
    """Whether ``target``'s mapping names a stage (or status) to write for canonical ``stage``."""
    if not isinstance(mappings, Mappings):
        return True
    return mappings.to_target(target, StageKey(stage)) is not None


def held_routes(store: SyncStore, routes: tuple[EngineRoute, ...], obs: Observation) -> frozenset[str]:
    """Routes that must not act on ``obs``: paused by an operator (``sync-worker pause``), or a reply
    route seeing a reply older than its start (``since`` in routes.yaml, else when the service first
    ran it) unless the route asks for ``history``. First-run safety: a first sync never turns a
    whole reply history into deals."""
    held = set(store.paused_routes())
    replies = [r for r in routes if not r.history and r.events & obs.events == {EVENT_REPLY}]
    starts = store.route_starts() if replies else {}
    for route in replies:
        start = route.since or starts.get(route.name)
        replied = obs.record.replied_at
        if start is not None and (replied is None or replied < start):
            held.add(route.name)
    return frozenset(held)


def _deleted_now(obs: Observation) -> bool:
    """True when this change is the deletion of a record the store knew live."""
    return obs.record.status == "deleted" and obs.before is not None and "status" in obs.changed


def _by_identity(route: EngineRoute) -> EngineRoute:
    """``route`` matching by the stored link and ids only: a contact may have several deals, so a
    deletion never removes a deal found by e-mail alone."""
    return replace(route, match=tuple(m for m in route.match if m != "email"))


def queue_removal(
    store: SyncStore,
    route: EngineRoute,
    obs: Observation,
    target: Target | None,
    *,
    not_before: datetime,
) -> bool:
    """Act on the deletion of ``obs.record`` for one route (see the module docstring, step 4);
    True when a ``remove`` item was newly queued."""
    record = obs.record
    where = f"{record.source} {record.kind} {record.external_id}"
    if route.on_delete == "ignore":
        _log.debug("route %s: %s deleted; on_delete: ignore", route.name, where)
        return False
    if target is None or target.external_id is None:
        _log.info(
            "route %s: %s deleted; no %s twin known, nothing to remove", route.name, where, route.target
        )
        return False
    if target.stored is not None and target.stored.deleted:
        return False  # the twin is gone already (deleted on both sides, or our own removal)
    if route.on_delete == "mark":
        _log.warning(
            "route %s: %s deleted; its %s twin %s is left live (on_delete: mark)",
            route.name,
            where,
            route.target,
            target.external_id,
        )
        return False
    payload: dict[str, Any] = {
        **_about(route, obs),
        "ref": target.ref,
        "kind": target.kind,
        "external_id": target.external_id,
        "mode": route.on_delete,
    }
    key = _key(obs, route, target.ref, {"status": "deleted"})
    return store.enqueue_outbox(route.target, key, payload, not_before=not_before, kind=REMOVE) is not None


def route_observation(
    store: SyncStore,
    mappings: object,
    model: StageModel,
    obs: Observation,
    *,
    config: EngineConfig,
    clock: Callable[[], datetime],
) -> tuple[int, frozenset[str]]:
    """Queue the writes the routes call for: how many outbox items were newly queued, and for
    which targets (the ones a push must now be scheduled for)."""
    if not obs.events:
        return 0, frozenset()
    record = obs.record
    queued = 0
    targets: set[str] = set()
    routes = routes_for(mappings, record.source, obs.events)
    held = held_routes(store, routes, obs) if routes else frozenset()
    deleting = _deleted_now(obs)
    for route in routes:
        if route.name in held:
            continue
        if route.only_status is not None and record.status not in route.only_status:
            continue
        if deleting:  # before the create branch: a deletion never creates, never writes fields
            target = find_target(store, _by_identity(route), record, obs.change.record.id)
            if queue_removal(store, route, obs, target, not_before=clock() + config.coalesce_window):
                queued += 1
                targets.add(route.target)
            continue
        if record.status == "deleted":
            continue  # a record deleted before the store knew it, or a replay: nothing flows from it
        target = find_target(store, route, record, obs.change.record.id)
        if target is None and not (route.create and record.kind in ("deal", "lead")):
            continue
        written = _write_memory(store, target, config, clock)
        fields = plan_fields(route, obs, target, model, written)
        if "stage" in fields and not _representable(mappings, route.target, str(fields["stage"])):
            # `mappings validate` warned about this gap; the other fields still flow.
            _log.info("%s has no stage for canonical %r: stage not written", route.target, fields["stage"])
            del fields["stage"]
        if not fields:
            continue
        payload = _payload(route, obs, target, fields)
        key = _key(obs, route, str(payload["ref"]), fields)
        not_before = clock() + config.coalesce_window
        if store.enqueue_outbox(route.target, key, payload, not_before=not_before, kind=MIRROR) is not None:
            queued += 1
            targets.add(route.target)
    return queued, frozenset(targets)
