"""Writes to ``crm.lead``: creates in one call, equal values grouped, documented won/lost actions.

- ``create(vals_list)`` takes many records at once and returns their ids, in order.
- ``write(vals)`` applies the **same** values to every id it is given and returns True (no result
  per record), so updates whose values are equal go in one call and the others one by one.
- Lost goes through ``action_set_lost(**additional_values)`` (archive, probability 0, then
  ``lost_reason_id``; the stage stays), won through ``action_set_won`` (unarchive, first won stage,
  probability 100), reopening through ``action_unarchive``; never by writing ``active`` or
  ``probability`` directly. Lost reasons are ``crm.lost.reason`` records, found by name or created.
- Leak flags: a tag ``<prefix><rule>`` (``crm.tag``; ``tag_ids`` commands ``(4, id)`` link and
  ``(3, id)`` unlink, other leak tags removed) and/or a note in the chatter (``message_post`` with
  ``subtype_xmlid="mail.mt_note"``, one record per call).

A grouped call that fails for good is retried one update at a time, so one bad record does not fail
the others; a transient failure fails its group as retryable. ``odoo/odoo`` ``crm_lead.py``
(``action_set_lost``, ``action_set_won``, ``action_unarchive``), ORM ``create``/``write``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.odoo.convert import LeadWrite, parse_time
from connectors.odoo.transport import OdooTransport
from sync_worker.canonical import CanonicalUpdate, LeakFlag, UpdateResult
from sync_worker.errors import PermanentError, SyncWorkerError, TransientError

__all__ = ["FLAG_RULES", "LeadWriter", "PlannedUpdate"]

FLAG_RULES: tuple[str, ...] = ("stalled", "regressed", "dropped", "unanswered")
_LEAD = "crm.lead"


@dataclass
class PlannedUpdate:
    """One update on its way: its write, the lead id once known, and its first failure."""

    update: CanonicalUpdate
    write: LeadWrite
    lead_id: int | None = None
    error: SyncWorkerError | None = None


@dataclass
class _Run:
    plans: list[PlannedUpdate] = field(default_factory=list)

    def live(self) -> list[PlannedUpdate]:
        return [p for p in self.plans if p.error is None and p.lead_id is not None]


def _key(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_key(v) for v in value)
    assert isinstance(value, Hashable)
    return value


class LeadWriter:
    """Applies planned updates through a transport; ``context`` goes with every call."""

    def __init__(
        self,
        transport: OdooTransport,
        context: Callable[[], Mapping[str, Any]],
        *,
        flag_with: str = "both",
        tag_prefix: str = "Leak: ",
    ) -> None:
        self._transport = transport
        self._context = context
        self._flag_with = flag_with
        self._tag_prefix = tag_prefix
        self._tags: dict[str, int] | None = None

    def _call(self, model: str, method: str, ids: Sequence[int] | None = None, **params: Any) -> Any:
        return self._transport.call(model, method, ids=ids, params=params, context=self._context())

    def _send(self, group: Sequence[PlannedUpdate], method: str, **params: Any) -> None:
        """``crm.lead.<method>`` on the group's ids; one by one again when a group of several fails
        for good."""
        ids = [p.lead_id for p in group if p.lead_id is not None]
        try:
            self._call(_LEAD, method, ids, **params)
        except TransientError as exc:
            for plan in group:
                plan.error = exc
        except SyncWorkerError as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for plan in group:
                assert plan.lead_id is not None
                try:
                    self._call(_LEAD, method, [plan.lead_id], **params)
                except SyncWorkerError as single:
                    plan.error = single

    def apply(self, plans: list[PlannedUpdate]) -> list[UpdateResult]:
        run = _Run(plans)
        self._create(run)
        self._act(run, "open", "action_unarchive")
        writes: dict[Hashable, list[PlannedUpdate]] = {}
        for plan in run.live():
            if plan.write.vals and plan.update.external_id is not None:
                writes.setdefault(_key(plan.write.vals), []).append(plan)
        for group in writes.values():
            vals = dict(group[0].write.vals)
            self._send(group, "write", vals=vals)
        self._act(run, "won", "action_set_won")
        self._lose(run)
        self._flag(run)
        return self._results(run)

    def _create(self, run: _Run) -> None:
        new = [p for p in run.plans if p.update.external_id is None and p.error is None]
        if not new:
            return
        try:
            created = self._call(_LEAD, "create", vals_list=[dict(p.write.vals) for p in new])
        except SyncWorkerError as exc:
            for plan in new:
                plan.error = exc
            return
        ids = created if isinstance(created, list) else [created]
        if len(ids) != len(new) or not all(isinstance(i, int) for i in ids):
            for plan in new:
                plan.error = PermanentError("odoo: crm.lead create did not return one id per record")
            return
        for plan, lead_id in zip(new, ids, strict=True):
            plan.lead_id = lead_id

    def _act(self, run: _Run, action: str, method: str) -> None:
        group = [p for p in run.live() if p.write.action == action]
        if group:
            self._send(group, method)

    def _lose(self, run: _Run) -> None:
        groups: dict[Hashable, list[PlannedUpdate]] = {}
        for plan in run.live():
            if plan.write.action == "lost":
                groups.setdefault(plan.write.lost_reason, []).append(plan)
        for reason, group in groups.items():
            try:
                reason_id = self._lost_reason(reason) if isinstance(reason, str) else None
            except SyncWorkerError as exc:
                for plan in group:
                    plan.error = exc
                continue
            extra = {"lost_reason_id": reason_id} if reason_id is not None else {}
            self._send(group, "action_set_lost", **extra)

    def _lost_reason(self, name: str) -> int:
        found = self._call(
            "crm.lost.reason", "search_read", domain=[("name", "=ilike", name)], fields=["name"], limit=1
        )
        if (
            isinstance(found, list)
            and found
            and isinstance(found[0], Mapping)
            and isinstance(found[0].get("id"), int)
        ):
            return int(found[0]["id"])
        created = self._call("crm.lost.reason", "create", vals_list=[{"name": name}])
        ids = created if isinstance(created, list) else [created]
        if not ids or not isinstance(ids[0], int):
            raise PermanentError("odoo: crm.lost.reason create returned no id")
        return ids[0]

    # -- leak flags -----------------------------------------------------------------------

    def tag_ids(self, *, create: bool) -> dict[str, int]:
        """Leak tag name -> id (``crm.tag``), creating missing ones when ``create``."""
        if self._tags is None:
            rows = self._call(
                "crm.tag", "search_read", domain=[("name", "=like", self._tag_prefix + "%")], fields=["name"]
            )
            self._tags = {
                str(r["name"]): int(r["id"])
                for r in rows or []
                if isinstance(r, Mapping) and isinstance(r.get("id"), int)
            }
        if create:
            missing = [
                self._tag_prefix + rule for rule in FLAG_RULES if self._tag_prefix + rule not in self._tags
            ]
            if missing:
                created = self._call("crm.tag", "create", vals_list=[{"name": name} for name in missing])
                ids = created if isinstance(created, list) else [created]
                self._tags.update(zip(missing, (int(i) for i in ids), strict=True))
        return dict(self._tags)

    def _flag(self, run: _Run) -> None:
        flagged = [p for p in run.live() if p.update.flag is not None]
        if not flagged:
            return
        if self._flag_with != "note":
            try:
                tags = self.tag_ids(create=True)
            except SyncWorkerError as exc:
                for plan in flagged:
                    plan.error = exc
                return
            groups: dict[Hashable, list[PlannedUpdate]] = {}
            for plan in flagged:
                assert plan.update.flag is not None
                groups.setdefault(plan.update.flag.rule, []).append(plan)
            for rule, group in groups.items():
                keep = tags.get(self._tag_prefix + str(rule)) if rule is not None else None
                commands = [(3, tid) for tid in sorted(tags.values()) if tid != keep]
                if keep is not None:
                    commands.append((4, keep))
                vals = {"tag_ids": commands}
                self._send(group, "write", vals=vals)
        if self._flag_with != "tag":
            for plan in run.live():
                flag = plan.update.flag
                if flag is not None and flag.rule is not None and plan.lead_id is not None:
                    self._send([plan], "message_post", **_note(flag))

    def _results(self, run: _Run) -> list[UpdateResult]:
        touched = sorted({p.lead_id for p in run.live() if p.lead_id is not None})
        stamps: dict[int, Any] = {}
        if touched:
            try:
                rows = self._call(_LEAD, "search_read", domain=[("id", "in", touched)], fields=["write_date"])
                stamps = {int(r["id"]): r.get("write_date") for r in rows or [] if isinstance(r, Mapping)}
            except SyncWorkerError:
                stamps = {}  # the writes happened; only their times are unknown
        results: list[UpdateResult] = []
        for plan in run.plans:
            key = plan.update.idempotency_key
            external = str(plan.lead_id) if plan.lead_id is not None else plan.update.external_id
            if plan.error is not None:
                results.append(
                    UpdateResult(
                        key,
                        ok=False,
                        external_id=external,
                        error=str(plan.error),
                        retryable=isinstance(plan.error, TransientError),
                    )
                )
                continue
            stamp = stamps.get(plan.lead_id) if plan.lead_id is not None else None
            results.append(
                UpdateResult(key, ok=True, external_id=external, updated_at=parse_time(stamp, "write_date"))
            )
        return results


def _note(flag: LeakFlag) -> dict[str, Any]:
    """``message_post`` arguments of a leak-flag note (plain text, an internal note)."""
    lines = [f"sync-worker: leak flag ({flag.rule})"]
    if flag.reason:
        lines.append(flag.reason)
    if flag.stage is not None:
        lines.append(f"Stage: {flag.stage.value}")
    if flag.days_in_stage is not None:
        lines.append(f"Days in stage: {flag.days_in_stage}")
    if flag.since is not None:
        lines.append(f"Since: {flag.since.date().isoformat()}")
    return {"body": "\n".join(lines), "message_type": "comment", "subtype_xmlid": "mail.mt_note"}
