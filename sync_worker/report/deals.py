"""The report's deal-level views: the cumulative funnel, won/lost split, money per currency, copies.

A deal is the linked records of one opportunity (:mod:`sync_worker.store.record_queries`); every
count here is of deals, judged by their newest copy, with the copies kept for a drill-down.

- **reached** (a stage of the ladder: open and won-kind stages in ``order``; hold and lost stages
  are not rungs): deals whose furthest stage, over every copy's history and current stage, is this
  stage or a later one. So the funnel never grows downwards; a deal first seen in Proposal counts
  as having reached Prospect. **conversion to next** = reached(next rung) / reached(this one).
- **won / lost**: deals whose newest copy is won (any won-kind stage) or lost, with their amounts
  per currency.
- The period: with ``since`` only deals with a stage move (or first sighting) at or after it, or
  still open, count.
- Money is totalled per currency; an amount without a currency is its own bucket (``None``), never
  added into another.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select

from sync_worker.canonical import StageKey, StageKind, StageModel
from sync_worker.store.record_queries import DealCopy, deal_copies, deal_key, is_deal_head
from sync_worker.store.schema import held_stages, records, stage_history

__all__ = [
    "DealOutcomes",
    "MoneyTotal",
    "StageReach",
    "copies_of",
    "deal_outcomes",
    "deal_reach",
    "deals_in_period",
    "held_deals",
    "totals_by_currency",
    "unmapped_deals",
]

_CENT = Decimal("0.01")
DealLinks = Mapping[str, Callable[[str], str | None]]


@dataclass(frozen=True)
class MoneyTotal:
    """A sum in one currency (``currency`` None: amounts that carry no currency)."""

    currency: str | None
    amount: Decimal


def totals_by_currency(items: Iterable[tuple[str | None, Decimal | None]]) -> tuple[MoneyTotal, ...]:
    """Sum ``(currency, amount)`` pairs per currency, by code; no-currency last; None amounts skipped."""
    sums: dict[str | None, Decimal] = defaultdict(Decimal)
    for currency, amount in items:
        if amount is not None:
            sums[currency] += amount
    ordered = sorted(sums.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return tuple(MoneyTotal(currency, amount.quantize(_CENT)) for currency, amount in ordered)


@dataclass(frozen=True)
class StageReach:
    """One rung of the cumulative funnel."""

    stage: StageKey
    label: str
    kind: StageKind
    reached: int
    next_conversion: float | None


@dataclass(frozen=True)
class DealOutcomes:
    """Deals in the period by the newest copy's status, with won and lost amounts per currency."""

    open: int
    won: int
    lost: int
    won_amounts: tuple[MoneyTotal, ...]
    lost_amounts: tuple[MoneyTotal, ...]


def deals_in_period(conn: Connection, since: datetime | None) -> set[int] | None:
    """Deal keys that count in the period (None: no period, every deal counts)."""
    if since is None:
        return None
    r, h = records, stage_history
    moved = select(deal_key(r)).join(h, h.c.record_id == r.c.id).where(r.c.kind == "deal", h.c.at >= since)
    still_open = select(deal_key(r)).where(r.c.kind == "deal", r.c.status == "open", r.c.deleted.is_(False))
    return {int(key) for (key,) in conn.execute(moved.union(still_open))}


def deal_reach(conn: Connection, model: StageModel, period: set[int] | None) -> tuple[StageReach, ...]:
    """The cumulative funnel over the ladder stages (see the module docstring)."""
    ladder = [s for s in model.ordered() if s.kind in (StageKind.OPEN, StageKind.WON)]
    rung = {s.key.value: index for index, s in enumerate(ladder)}
    r, h = records, stage_history
    seen = select(deal_key(r).label("deal"), h.c.to_stage.label("stage")).join(h, h.c.record_id == r.c.id)
    current = select(deal_key(r).label("deal"), r.c.stage.label("stage")).where(r.c.stage.is_not(None))
    furthest: dict[int, int] = {}
    for deal, stage in conn.execute(seen.where(r.c.kind == "deal").union(current.where(r.c.kind == "deal"))):
        if stage in rung and (period is None or deal in period):
            furthest[deal] = max(furthest.get(deal, -1), rung[stage])
    reached = [sum(1 for top in furthest.values() if top >= index) for index in range(len(ladder))]
    rows: list[StageReach] = []
    for index, stage in enumerate(ladder):
        following = reached[index + 1] if index + 1 < len(ladder) else None
        rate = following / reached[index] if following is not None and reached[index] else None
        rows.append(StageReach(stage.key, stage.label, stage.kind, reached[index], rate))
    return tuple(rows)


def deal_outcomes(conn: Connection, model: StageModel, period: set[int] | None) -> DealOutcomes:
    """Open, won and lost deals by their newest copy (deleted ones are neither)."""
    r = records
    won_kind = {s.key.value for s in model.stages if s.kind is StageKind.WON}
    rows = conn.execute(
        select(deal_key(r), r.c.status, r.c.stage, r.c.amount, r.c.currency, r.c.deleted).where(
            r.c.kind == "deal", is_deal_head(r)
        )
    )
    counts = {"open": 0, "won": 0, "lost": 0}
    won: list[tuple[str | None, Decimal | None]] = []
    lost: list[tuple[str | None, Decimal | None]] = []
    for deal, status, stage, amount, currency, deleted in rows:
        if deleted or status == "deleted" or (period is not None and int(deal) not in period):
            continue
        outcome = "won" if status == "won" or stage in won_kind else status
        if outcome in counts:
            counts[outcome] += 1
        if outcome == "won":
            won.append((currency, amount))
        elif outcome == "lost":
            lost.append((currency, amount))
    return DealOutcomes(
        counts["open"], counts["won"], counts["lost"], totals_by_currency(won), totals_by_currency(lost)
    )


def unmapped_deals(conn: Connection) -> int:
    """Live deals whose newest copy has no canonical stage (its source stage is not mapped)."""
    r = records
    query = select(func.count()).where(
        r.c.kind == "deal", r.c.stage.is_(None), r.c.deleted.is_(False), is_deal_head(r)
    )
    return int(conn.execute(query).scalar_one())


def held_deals(conn: Connection) -> int:
    """Live deals one copy of which is held on a stage no mapping covers (``sync-worker held list``),
    counted once per deal however many of its copies are held."""
    r = records
    query = (
        select(func.count(func.distinct(deal_key(r))))
        .select_from(r.join(held_stages, held_stages.c.record_id == r.c.id))
        .where(r.c.kind == "deal", r.c.deleted.is_(False))
    )
    return int(conn.execute(query).scalar_one())


def copies_of(
    conn: Connection, record_ids: Iterable[int], deal_links: DealLinks | None
) -> dict[int, tuple[tuple[DealCopy, str | None], ...]]:
    """Each record's deal copies with the URL of each in its system (None without a link builder)."""
    links = deal_links or {}
    found = deal_copies(conn, list(record_ids))
    result: dict[int, tuple[tuple[DealCopy, str | None], ...]] = {}
    for record_id, copies in found.items():
        result[record_id] = tuple(
            (copy, links[copy.source](copy.external_id) if copy.source in links else None) for copy in copies
        )
    return result
