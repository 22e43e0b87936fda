"""The leak scan: raise and clear flags in the database, queue write-backs and alerts.

:func:`scan_leaks` is the service function the scheduler's actor calls. In ONE transaction it
evaluates each rule as set-based SQL (:mod:`sync_worker.store.leak_queries`): first it clears the
open flags whose record no longer leaks the same way (the deal moved on, was won, reopened, seen
again, or a linked deal moved), then it raises flags on newly leaking records (``INSERT ... SELECT
... ON CONFLICT DO NOTHING`` on the partial unique index of open flags, so a flag is raised once).
Then, still in that transaction, it queues for the engine's push step:

- one outbox item per newly raised flag for the system the record lives in (target = the record's
  source; payload = a serialised :class:`~sync_worker.canonical.CanonicalUpdate` carrying a
  :class:`~sync_worker.canonical.LeakFlag`; key ``leak:<flag id>:raise``), stamping the flag's
  ``written_to_crm_at``;
- one per cleared flag that had been written back (``LeakFlag(rule=None)``, key
  ``leak:<flag id>:clear``);
- when ``alerts`` is on, one alert per new flag (target ``alert``, a Slack-compatible message, key
  ``leak:<flag id>:alert``), stamping ``alerted_at``.

A crash anywhere rolls all of it back, so flags, their write-backs and their alerts never diverge.
Outbox keys are unique, so nothing is queued twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sync_worker.canonical import CanonicalUpdate, StageModel
from sync_worker.leaks.alerts import ALERT_TARGET, alert_payload
from sync_worker.leaks.rules import RULES, RuleBook, clear_flag, leak_flag
from sync_worker.leaks.wire import serialise_update
from sync_worker.store import SyncStore
from sync_worker.store import leak_queries as _q
from sync_worker.store.base import dump_json
from sync_worker.store.models import FlagRule, StoredFlag
from sync_worker.store.types import as_utc

__all__ = ["ORIGIN", "ScanResult", "leak_gauges", "scan_leaks"]

ORIGIN = "leak-scan"


@dataclass(frozen=True)
class ScanResult:
    """What one scan changed: flags it raised and cleared, and the open flags per rule after it.

    ``queued`` counts every outbox item it queued, ``alerts`` those of them for target ``"alert"``.
    """

    raised: tuple[StoredFlag, ...]
    cleared: tuple[StoredFlag, ...]
    open_by_rule: Mapping[FlagRule, int]
    queued: int = 0
    alerts: int = 0


def _update(item: _q.FlaggedRecord, action: str) -> dict[str, Any]:
    update = CanonicalUpdate(
        target=item.source,
        idempotency_key=f"leak:{item.flag.id}:{action}",
        origin=ORIGIN,
        external_id=item.external_id,
        kind=item.kind,
        flag=leak_flag(item.flag) if action == "raise" else clear_flag(),
    )
    return {
        "target": update.target,
        "idempotency_key": update.idempotency_key,
        "payload": dump_json(serialise_update(update)),
    }


def scan_leaks(
    store: SyncStore,
    model: StageModel,
    *,
    now: datetime,
    full_pull_started: Mapping[str, datetime] | None = None,
    alerts: bool = True,
) -> ScanResult:
    """Evaluate every rule at ``now``; see the module docstring for what is written.

    ``full_pull_started`` maps a source to the start of its last COMPLETE full pull: its open deals
    not seen since then are dropped. A source left out keeps its vanished flags as they are.
    ``alerts`` is whether an alert webhook is configured (``settings.alerts.webhook_url``).
    """
    when = as_utc(now)
    pulls = {source: as_utc(started) for source, started in (full_pull_started or {}).items()}
    book = RuleBook.from_model(model)
    with store._write() as conn:
        dialect = conn.dialect.name
        cleared_ids: list[int] = []
        raised_ids: list[int] = []
        for rule in RULES:
            branches = _q.branches_for(rule, book, now=when, dialect=dialect, full_pull_started=pulls)
            cleared_ids += _q.clear_rule(conn, rule, branches, now=when)
            raised_ids += _q.raise_rule(conn, branches)

        cleared = _q.flagged_records(conn, cleared_ids)
        rows = [_update(item, "clear") for item in cleared if item.flag.written_to_crm_at is not None]
        to_write = _q.pending_flags(conn, "written_to_crm_at")
        rows += [_update(item, "raise") for item in to_write]
        _q.mark_flags(conn, [item.flag.id for item in to_write], "written_to_crm_at", at=when)
        to_alert: list[_q.FlaggedRecord] = []
        if alerts:
            to_alert = _q.pending_flags(conn, "alerted_at")
            rows += [
                {
                    "target": ALERT_TARGET,
                    "idempotency_key": f"leak:{item.flag.id}:alert",
                    "payload": dump_json(alert_payload(item, stage_label=_label(book, item.flag))),
                }
                for item in to_alert
            ]
            _q.mark_flags(conn, [item.flag.id for item in to_alert], "alerted_at", at=when)
        _q.enqueue_outbox_rows(conn, rows, now=when)

        new = set(raised_ids)
        raised = tuple(item.flag for item in to_write if item.flag.id in new)
        if len(raised) != len(new):  # raised by this scan but not pending: re-read them
            raised = tuple(item.flag for item in _q.flagged_records(conn, raised_ids))
        counts = {rule: 0 for rule in RULES}
        for total in _q.open_flag_totals(conn):
            counts[total.rule] += total.count
    return ScanResult(
        raised=raised,
        cleared=tuple(item.flag for item in cleared),
        open_by_rule=counts,
        queued=len(rows),
        alerts=len(to_alert),
    )


def _label(book: RuleBook, flag: StoredFlag) -> str | None:
    return book.labels.get(flag.stage.value) if flag.stage is not None else None


def leak_gauges(store: SyncStore) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus samples ``(metric, labels, value)`` for open flags by rule and stage.

    Metrics: ``sync_worker_leak_flags_open`` (count), ``sync_worker_leak_amount_at_risk`` and
    ``sync_worker_leak_weighted_amount_at_risk`` (sums in record currency, mixed currencies added
    as numbers). Labels ``rule`` and ``stage`` (``""`` when the flag has no stage).
    """
    with store._read() as conn:
        totals = _q.open_flag_totals(conn)
    samples: list[tuple[str, dict[str, str], float]] = []
    for total in totals:
        labels = {"rule": total.rule, "stage": total.stage.value if total.stage is not None else ""}
        samples.append(("sync_worker_leak_flags_open", labels, float(total.count)))
        samples.append(("sync_worker_leak_amount_at_risk", dict(labels), float(total.amount)))
        samples.append(
            ("sync_worker_leak_weighted_amount_at_risk", dict(labels), float(total.weighted_amount))
        )
    return samples
