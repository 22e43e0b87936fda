"""The leak scan: raise and clear flags in the database, queue write-backs and alerts.

The deal is the unit: the linked records of one opportunity across CRMs are its copies. The deal
rules judge a deal by its newest copy and keep one open flag per deal and rule
(:mod:`sync_worker.store.leak_queries`); leads are judged one record at a time.

:func:`scan_leaks` is the service function the scheduler's actor calls. In ONE transaction it
evaluates each rule as set-based SQL: first it clears the open flags whose deal no longer leaks
the same way (the deal moved on, was won, reopened, seen again, its copies agree again, or a linked
deal moved), then it raises flags on newly leaking deals (``INSERT ... SELECT ... ON CONFLICT DO
NOTHING``, skipping deals already flagged on another copy). Then, still in that transaction, it
queues for the engine's push step:

- one outbox item per newly raised flag and COPY of its deal, for the system the copy lives in
  (payload = a serialised :class:`~sync_worker.canonical.CanonicalUpdate` carrying a
  :class:`~sync_worker.canonical.LeakFlag`; key ``leak:<flag id>:raise:<record id>``), stamping
  the flag's ``written_to_crm_at``;
- one per cleared flag that had been written back and copy of its deal (``LeakFlag(rule=None)``,
  key ``leak:<flag id>:clear:<record id>``);
- when ``alerts`` is on and flags were raised, ONE digest (target ``alert``, key
  ``leak:digest:<scan time>``) and one message per new flag whose amount reaches
  ``alert_min_amount`` (naming every copy with its link and owner, key ``leak:<flag id>:alert``),
  stamping every new flag's ``alerted_at``;

and records the scan's time (:func:`last_scan_at`). A crash anywhere rolls all of it back, so flags,
their write-backs and their alerts never diverge. Outbox keys are unique: nothing is queued twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from sync_worker.canonical import CanonicalUpdate, StageModel
from sync_worker.engine.outbox import ALERT, FLAG
from sync_worker.leaks.alerts import ALERT_TARGET, alert_payload, digest_payload, wants_own_alert
from sync_worker.leaks.rules import RULES, RuleBook, clear_flag, leak_flag
from sync_worker.leaks.wire import serialise_update
from sync_worker.store import SyncStore
from sync_worker.store import leak_queries as _q
from sync_worker.store.base import dump_json
from sync_worker.store.models import FlagRule, StoredFlag
from sync_worker.store.record_queries import DealCopy, deal_copies
from sync_worker.store.types import as_utc

__all__ = ["ORIGIN", "DealLinks", "ScanResult", "clear_moved", "last_scan_at", "leak_gauges", "scan_leaks"]

DealLinks = Mapping[str, Callable[[str], str | None]]
"""source -> (external id -> the deal's URL in that system, or None); filled from the connector specs."""

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


def _update(item: _q.FlaggedRecord, copy: DealCopy, action: str) -> dict[str, Any]:
    update = CanonicalUpdate(
        target=copy.source,
        idempotency_key=f"leak:{item.flag.id}:{action}:{copy.record_id}",
        origin=ORIGIN,
        external_id=copy.external_id,
        kind="deal",
        flag=leak_flag(item.flag) if action == "raise" else clear_flag(),
    )
    return {
        "target": update.target,
        "idempotency_key": update.idempotency_key,
        "kind": FLAG,
        "payload": dump_json(serialise_update(update)),
    }


def scan_leaks(
    store: SyncStore,
    model: StageModel,
    *,
    now: datetime,
    full_pull_started: Mapping[str, datetime] | None = None,
    alerts: bool = True,
    diverged_grace: timedelta | None = None,
    deal_links: DealLinks | None = None,
    alert_min_amount: Decimal | None = Decimal(0),
    digest: bool = False,
) -> ScanResult:
    """Evaluate every rule at ``now``; see the module docstring for what is written.

    ``full_pull_started`` maps a source to the start of its last COMPLETE full pull: its open deals
    not seen since then are dropped. A source left out keeps its vanished flags as they are.
    ``alerts`` is whether an alert webhook is configured (``settings.alerts.webhook_url``).
    ``diverged_grace``: how long copies may disagree before ``diverged`` (one poll interval plus
    the push time; default :data:`~sync_worker.leaks.rules.DEFAULT_DIVERGED_GRACE`).
    ``deal_links`` gives each copy's URL in the alerts (source -> external id -> URL).
    ``digest``: queue one digest of the new flags (the service does; ``scan_leaks`` alone keeps
    one message per flag). ``alert_min_amount``: new flags whose amount reaches it get a message of
    their own (None: none; the service passes ``SYNC_ALERTS__MIN_AMOUNT``).
    """
    when = as_utc(now)
    pulls = {source: as_utc(started) for source, started in (full_pull_started or {}).items()}
    book = RuleBook.from_model(model, diverged_grace=diverged_grace)
    with store._write() as conn:
        dialect = conn.dialect.name
        cleared_ids: list[int] = []
        raised_ids: list[int] = []
        for rule in RULES:
            branches = _q.branches_for(rule, book, now=when, dialect=dialect, full_pull_started=pulls)
            cleared_ids += _q.clear_rule(conn, rule, branches, now=when)
            raised_ids += _q.raise_rule(conn, branches, rule)

        cleared = _written_back(conn, cleared_ids)
        to_write = _q.pending_flags(conn, "written_to_crm_at")
        to_alert = _q.pending_flags(conn, "alerted_at") if alerts else []
        copies = deal_copies(conn, [item.flag.record_id for item in (*cleared, *to_write, *to_alert)])
        written = _writes(cleared, copies, "clear") + _writes(to_write, copies, "raise")
        rows = list(written)
        _q.mark_flags(conn, [item.flag.id for item in to_write], "written_to_crm_at", at=when)
        if to_alert and digest:
            digest_body = digest_payload(to_alert, copies=copies, deal_links=deal_links or {})
            rows.append(
                {
                    "target": ALERT_TARGET,
                    "idempotency_key": f"leak:digest:{when.isoformat()}",
                    "kind": ALERT,
                    "payload": dump_json(digest_body),
                }
            )
        rows += [
            {
                "target": ALERT_TARGET,
                "idempotency_key": f"leak:{item.flag.id}:alert",
                "kind": ALERT,
                "payload": dump_json(
                    alert_payload(
                        item,
                        stage_label=_label(book, item.flag),
                        copies=copies.get(item.flag.record_id, ()),
                        deal_links=deal_links or {},
                    )
                ),
            }
            for item in to_alert
            if wants_own_alert(item, alert_min_amount)
        ]
        queued_alerts = len(rows) - len(written)
        _q.mark_flags(conn, [item.flag.id for item in to_alert], "alerted_at", at=when)
        _q.enqueue_outbox_rows(conn, rows, now=when)
        _q.record_scan(conn, now=when)

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
        alerts=queued_alerts,
    )


def clear_moved(
    store: SyncStore,
    model: StageModel,
    record_ids: Sequence[int],
    *,
    now: datetime,
    diverged_grace: timedelta | None = None,
) -> tuple[StoredFlag, ...]:
    """Clear at once the open flags of these records' deals that no longer hold, because the deal
    just moved (a stage or status change of one of its copies), and queue the clear for every copy
    they were written to: what the next scan would do for these deals, without waiting for it.
    Raises nothing new (that stays the scan's job). Runs in the caller's unit of work; the cleared
    flags.

    Vanished-deal ("dropped") flags are judged as a scan with no full pull: they stay until a
    scan after a full pull, or the deal being seen again, clears them.
    """
    ids = sorted(set(record_ids))
    if not ids:
        return ()
    when = as_utc(now)
    with store._write() as conn:
        if not _q.open_flags_of_deals(conn, ids):
            return ()
        book = RuleBook.from_model(model, diverged_grace=diverged_grace)
        dialect = conn.dialect.name
        cleared_ids: list[int] = []
        for rule in RULES:
            branches = _q.branches_for(rule, book, now=when, dialect=dialect, full_pull_started={})
            cleared_ids += _q.clear_rule(conn, rule, branches, now=when, of_records=ids)
        if not cleared_ids:
            return ()
        cleared = _written_back(conn, cleared_ids)
        copies = deal_copies(conn, [item.flag.record_id for item in cleared])
        _q.enqueue_outbox_rows(conn, _writes(cleared, copies, "clear"), now=when)
        return tuple(item.flag for item in _q.flagged_records(conn, cleared_ids))


def _written_back(conn: Connection, flag_ids: Sequence[int]) -> list[_q.FlaggedRecord]:
    """The flags among ``flag_ids`` that were written to the CRMs (their clear must be written too)."""
    return [item for item in _q.flagged_records(conn, flag_ids) if item.flag.written_to_crm_at]


def _writes(
    items: Sequence[_q.FlaggedRecord], copies: Mapping[int, Sequence[DealCopy]], action: str
) -> list[dict[str, Any]]:
    """One write-back per flag and deal copy of its deal. Deleted copies have nothing to write to;
    a lead (an outreach tool's record of the person) holds no deal flag."""
    return [
        _update(item, copy, action)
        for item in items
        for copy in copies.get(item.flag.record_id, ())
        if not copy.deleted and copy.status != "deleted" and copy.kind == "deal"
    ]


def last_scan_at(store: SyncStore) -> datetime | None:
    """When the last leak scan finished (None before the first), for the report."""
    with store._read() as conn:
        return _q.last_scan_at(conn)


def _label(book: RuleBook, flag: StoredFlag) -> str | None:
    return book.labels.get(flag.stage.value) if flag.stage is not None else None


def leak_gauges(store: SyncStore) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus samples ``(metric, labels, value)`` for open flags by rule, stage and currency.

    Metrics: ``sync_worker_leak_flags_open`` (deals: one flag per deal and rule),
    ``sync_worker_leak_amount_at_risk`` and ``sync_worker_leak_weighted_amount_at_risk`` (sums per
    currency, never across currencies). Labels ``rule``, ``stage`` (``""`` when the flag has no
    stage) and ``currency`` (the ISO code, ``"none"`` for amounts that carry no currency).
    """
    with store._read() as conn:
        totals = _q.open_flag_totals(conn)
    samples: list[tuple[str, dict[str, str], float]] = []
    for total in totals:
        labels = {
            "rule": total.rule,
            "stage": total.stage.value if total.stage is not None else "",
            "currency": total.currency or "none",
        }
        samples.append(("sync_worker_leak_flags_open", labels, float(total.count)))
        samples.append(("sync_worker_leak_amount_at_risk", dict(labels), float(total.amount)))
        samples.append(
            ("sync_worker_leak_weighted_amount_at_risk", dict(labels), float(total.weighted_amount))
        )
    return samples
