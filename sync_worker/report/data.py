"""The pipeline report's numbers, queried from the state store.

Only **deal** records count in the funnel and the forecast (leads from the outreach tool have no
pipeline stage of their own); open flags are listed for every record kind.

Definitions (for a canonical stage S; every count is of distinct deal records):

- **entered**: deals with a ``stage_history`` row ``to_stage = S`` (a first sighting in S is such a
  row with ``from_stage`` NULL), plus deals whose current stage is S with no history row for it.
- **converted** (open and hold stages only): of those entered, the deals with a LATER history row
  (later ``at``, or same ``at`` and later id) into a later open stage (``order`` above S's) or into a
  won stage. For a hold stage (nurture) any open stage or won counts: the deal was revived.
- **leaked** (open and hold stages only): of those entered, the deals with a leak flag raised from S
  (``leak_flags.stage = S``; open or since cleared: the report is historical), or a history row
  ``from_stage = S`` into a lost stage, or that are deleted / lost at the source while their last
  known stage is still S. A deal can be both converted and leaked (stalled, then moved on).
- **conversion rate** = converted / entered, **leak rate** = leaked / entered (None when nothing
  entered).
- **median days in stage** (open and hold stages only): the median over every stay in S. A stay
  runs from its history row to the record's next history row; the last stay ends now for an open
  deal, or at the source's last modification time for a deal closed or deleted without a stage
  move. Days are fractional (86 400 s), the median rounded to 0.1.
- **in stage now**: open, not deleted deals whose current stage is S.

Weighted forecast: open, not deleted deals with an amount whose stage is open or hold; weighted
amount = amount x the stage's probability from ``canonical.yaml`` (not the CRM's), summed exactly
and rounded to cents at the end. Grouped by stage and currency, and by expected close month
(``close_date`` as ``YYYY-MM``; ``None`` when the deal has no close date) and currency. Amounts in
different currencies are never added together.

Counts run in SQL (``COUNT(DISTINCT ...)`` over ``stage_history``'s ``(record_id, at)`` index,
stay lengths with the ``LEAD`` window function); medians and money totals are finished in Python
with :class:`~decimal.Decimal`. Window functions: https://www.sqlite.org/windowfunctions.html and
https://www.postgresql.org/docs/current/tutorial-window.html
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    func,
    literal,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.sql import Subquery

from sync_worker.canonical import Stage, StageKey, StageKind, StageModel
from sync_worker.errors import StoreUnavailableError
from sync_worker.report.deals import (
    DealLinks,
    DealOutcomes,
    MoneyTotal,
    StageReach,
    copies_of,
    deal_outcomes,
    deal_reach,
    deals_in_period,
    held_deals,
    totals_by_currency,
    unmapped_deals,
)
from sync_worker.store import SyncStore
from sync_worker.store.leak_queries import last_scan_at
from sync_worker.store.record_queries import DealCopy, deal_key, is_deal_head
from sync_worker.store.schema import leak_flags, records, stage_history
from sync_worker.store.types import UTCDateTime, as_utc

__all__ = [
    "ForecastRow",
    "FunnelRow",
    "OpenFlagRow",
    "PipelineReport",
    "build_report",
]

_CENT = Decimal("0.01")
_SECONDS_PER_DAY = 86_400
_DEAL = "deal"


@dataclass(frozen=True)
class FunnelRow:
    """One canonical stage of the funnel; see the module docstring for each definition."""

    stage: StageKey
    label: str
    kind: StageKind
    entered: int
    converted: int | None
    leaked: int | None
    median_days: float | None
    in_stage_now: int

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.converted, self.entered)

    @property
    def leak_rate(self) -> float | None:
        return _rate(self.leaked, self.entered)


@dataclass(frozen=True)
class ForecastRow:
    """Weighted pipeline of one bucket (a stage key, or a ``YYYY-MM`` month / None) in one currency.

    ``past_due``: a month before the report's month (deals still open after their close date).
    """

    bucket: str | None
    label: str
    currency: str | None
    deals: int
    amount: Decimal
    weighted: Decimal
    past_due: bool = False


@dataclass(frozen=True)
class OpenFlagRow:
    """One flag not cleared yet, with the record it sits on."""

    flag_id: int
    record_id: int
    source: str
    kind: str
    external_id: str
    title: str | None
    rule: str
    stage: StageKey | None
    days_in_stage: int | None
    reason: str
    amount: Decimal | None
    weighted_amount: Decimal | None
    currency: str | None
    raised_at: datetime
    copies: tuple[tuple[DealCopy, str | None], ...] = ()
    """The deal's records with the URL of each in its system (drill-down; the flagged one first)."""

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(sorted({copy.owner_id for copy, _url in self.copies if copy.owner_id}))


@dataclass(frozen=True)
class PipelineReport:
    """Everything ``sync-worker leaks`` shows, computed at ``generated_at``.

    ``reach`` is the cumulative funnel, ``outcomes`` the won/lost split (both over ``since`` when
    given); ``weighted_totals``/``open_totals`` the open pipeline per currency; ``open_deals``
    counts deals (not copies); ``unmapped_deals`` deals whose stage no mapping names; ``held_deals`` deals
    held on a stage no mapping covers since they moved onto it (their stage shown is the last mapped);
    ``last_scan_at`` the last leak scan (None before the first).
    """

    generated_at: datetime
    flags: tuple[OpenFlagRow, ...]
    funnel: tuple[FunnelRow, ...]
    forecast_by_stage: tuple[ForecastRow, ...]
    forecast_by_month: tuple[ForecastRow, ...]
    reach: tuple[StageReach, ...] = ()
    outcomes: DealOutcomes = field(default_factory=lambda: DealOutcomes(0, 0, 0, (), ()))
    weighted_totals: tuple[MoneyTotal, ...] = ()
    open_totals: tuple[MoneyTotal, ...] = ()
    open_deals: int = 0
    unmapped_deals: int = 0
    held_deals: int = 0
    last_scan_at: datetime | None = None
    since: datetime | None = None


def build_report(
    store: SyncStore,
    model: StageModel,
    now: datetime,
    *,
    since: datetime | None = None,
    deal_links: DealLinks | None = None,
) -> PipelineReport:
    """Query the store once (one read transaction) and compute the report as of ``now``.

    ``since`` limits the cumulative funnel and the won/lost split to a period (the CLI's
    ``--since``, default 90 days); ``deal_links`` (source -> external id -> URL) links each copy.
    Raises :class:`~sync_worker.errors.StoreUnavailableError` when the database cannot be reached.
    """
    when = as_utc(now)
    start = as_utc(since) if since is not None else None
    with _reading(store) as conn:
        flags = _open_flags(conn)
        copies = copies_of(conn, [flag.record_id for flag in flags], deal_links)
        flags = tuple(_with_copies(flag, copies.get(flag.record_id, ())) for flag in flags)
        period = deals_in_period(conn, start)
        reach = deal_reach(conn, model, period)
        outcomes = deal_outcomes(conn, model, period)
        unmapped = unmapped_deals(conn)
        held = held_deals(conn)
        scanned = last_scan_at(conn)
        entered = _count_by_stage(conn, _entered_pairs())
        converted = _count_by_stage(conn, _converted_pairs(model))
        leaked = _count_by_stage(conn, _leaked_pairs(model))
        stays = _stay_days(conn, when)
        current = _current_counts(conn)
        groups = _forecast_groups(conn)
    funnel = tuple(
        _funnel_row(stage, entered, converted, leaked, stays, current) for stage in model.ordered()
    )
    by_stage, by_month = _forecast(model, groups, when)
    return PipelineReport(
        when,
        flags,
        funnel,
        by_stage,
        by_month,
        reach=reach,
        outcomes=outcomes,
        weighted_totals=totals_by_currency((row.currency, row.weighted) for row in by_stage),
        open_totals=totals_by_currency((row.currency, row.amount) for row in by_stage),
        open_deals=outcomes.open if period is None else sum(row.in_stage_now for row in funnel),
        unmapped_deals=unmapped,
        held_deals=held,
        last_scan_at=scanned,
        since=start,
    )


def _with_copies(flag: OpenFlagRow, copies: tuple[tuple[DealCopy, str | None], ...]) -> OpenFlagRow:
    return replace(flag, copies=copies)


# -- reading -------------------------------------------------------------------------------------


@contextmanager
def _reading(store: SyncStore) -> Iterator[Connection]:
    try:
        with store.engine.connect() as conn, conn.begin():
            yield conn
    except (OperationalError, InterfaceError) as exc:
        # The driver's message may echo host or user; the class name is enough to act on.
        orig = getattr(exc, "orig", None) or exc
        raise StoreUnavailableError(f"state store unavailable: {type(orig).__name__}") from exc


def _open_flags(conn: Connection) -> tuple[OpenFlagRow, ...]:
    r, f = records, leak_flags
    query = (
        select(
            f.c.id,
            f.c.record_id,
            r.c.source,
            r.c.kind,
            r.c.external_id,
            r.c.title,
            f.c.rule,
            f.c.stage,
            f.c.days_in_stage,
            f.c.reason,
            f.c.amount,
            f.c.weighted_amount,
            r.c.currency,
            f.c.raised_at,
        )
        .join(r, r.c.id == f.c.record_id)
        .where(f.c.cleared_at.is_(None))
        .order_by(f.c.raised_at, f.c.id)
    )
    return tuple(
        OpenFlagRow(
            flag_id=m["id"],
            record_id=m["record_id"],
            source=m["source"],
            kind=m["kind"],
            external_id=m["external_id"],
            title=m["title"],
            rule=m["rule"],
            stage=StageKey(m["stage"]) if m["stage"] is not None else None,
            days_in_stage=m["days_in_stage"],
            reason=m["reason"],
            amount=_cents(m["amount"]),
            weighted_amount=_cents(m["weighted_amount"]),
            currency=m["currency"],
            raised_at=m["raised_at"],
        )
        for m in (row._mapping for row in conn.execute(query))
    )


def _cents(amount: Decimal | None) -> Decimal | None:
    return None if amount is None else amount.quantize(_CENT)


# -- funnel --------------------------------------------------------------------------------------


def _is_deal() -> ColumnElement[bool]:
    return records.c.kind == _DEAL


def _entered_pairs() -> Subquery:
    """Distinct ``(record_id, stage)``: every stage a deal was ever in."""
    h, r = stage_history, records
    from_history = (
        select(deal_key(r).label("record_id"), h.c.to_stage.label("stage"))
        .join(r, r.c.id == h.c.record_id)
        .where(_is_deal())
    )
    current = select(deal_key(r).label("record_id"), r.c.stage.label("stage")).where(
        _is_deal(), r.c.stage.is_not(None)
    )
    return union(from_history, current).subquery("entered")


def _later_stages(model: StageModel) -> Subquery | None:
    """``(stage, later)`` pairs as a literal table: where a deal in ``stage`` converts to."""
    pairs = [
        select(literal(stage.key.value).label("stage"), literal(other.key.value).label("later"))
        for stage in model.stages
        for other in model.stages
        if _converts(model, stage.key, other.key)
    ]
    return union_all(*pairs).subquery("later_stages") if pairs else None


def _converts(model: StageModel, before: StageKey, after: StageKey) -> bool:
    old, new = model.get(before), model.get(after)
    if new.kind is StageKind.WON:
        return old.kind in (StageKind.OPEN, StageKind.HOLD)
    if old.kind is StageKind.OPEN:
        return new.kind is StageKind.OPEN and new.order > old.order
    if old.kind is StageKind.HOLD:
        return new.kind is StageKind.OPEN
    return False


def _converted_pairs(model: StageModel) -> Subquery | None:
    later = _later_stages(model)
    if later is None:
        return None
    h1, h2, r = stage_history.alias("h1"), stage_history.alias("h2"), records
    return (
        select(deal_key(r).label("record_id"), h1.c.to_stage.label("stage"))
        .join(r, r.c.id == h1.c.record_id)
        .join(later, later.c.stage == h1.c.to_stage)
        .join(
            h2,
            and_(
                h2.c.record_id == h1.c.record_id,
                h2.c.to_stage == later.c.later,
                or_(h2.c.at > h1.c.at, and_(h2.c.at == h1.c.at, h2.c.id > h1.c.id)),
            ),
        )
        .where(_is_deal())
        .distinct()
        .subquery("converted")
    )


def _leaked_pairs(model: StageModel) -> Subquery:
    h, r, f = stage_history, records, leak_flags
    lost = [s.key.value for s in model.stages if s.kind is StageKind.LOST]
    in_funnel = [s.key.value for s in model.stages if s.kind in (StageKind.OPEN, StageKind.HOLD)]
    flagged = (
        select(deal_key(r).label("record_id"), f.c.stage.label("stage"))
        .join(r, r.c.id == f.c.record_id)
        .where(_is_deal(), f.c.stage.is_not(None))
    )
    went_lost = (
        select(deal_key(r).label("record_id"), h.c.from_stage.label("stage"))
        .join(r, r.c.id == h.c.record_id)
        .where(_is_deal(), h.c.from_stage.is_not(None), h.c.to_stage.in_(lost))
    )
    dropped = select(deal_key(r).label("record_id"), r.c.stage.label("stage")).where(
        _is_deal(),
        is_deal_head(r),
        r.c.stage.in_(in_funnel),
        or_(r.c.deleted.is_(True), r.c.status.in_(["lost", "deleted"])),
    )
    leaked = union(flagged, went_lost, dropped).subquery("leaked_any")
    entered = _entered_pairs()
    # Only deals that did enter the stage count (a flag naming a stage the deal never had does not).
    return (
        select(leaked.c.record_id, leaked.c.stage)
        .join(entered, and_(entered.c.record_id == leaked.c.record_id, entered.c.stage == leaked.c.stage))
        .subquery("leaked")
    )


def _count_by_stage(conn: Connection, pairs: Subquery | None) -> dict[str, int]:
    if pairs is None:
        return {}
    query = select(pairs.c.stage, func.count(func.distinct(pairs.c.record_id))).group_by(pairs.c.stage)
    return {stage: int(count) for stage, count in conn.execute(query)}


def _stay_days(conn: Connection, now: datetime) -> dict[str, list[float]]:
    """Every stay of every deal in each stage, in days."""
    h, r = stage_history, records
    next_at = func.lead(h.c.at, type_=UTCDateTime()).over(
        partition_by=h.c.record_id, order_by=(h.c.at, h.c.id)
    )
    stays = (
        select(
            h.c.to_stage.label("stage"),
            h.c.at.label("started"),
            next_at.label("ended"),
            r.c.status,
            r.c.deleted,
            r.c.source_updated_at,
        )
        .join(r, r.c.id == h.c.record_id)
        .where(_is_deal(), is_deal_head(r))
    )
    days: dict[str, list[float]] = defaultdict(list)
    for m in (row._mapping for row in conn.execute(stays)):
        started: datetime = m["started"]
        ended: datetime | None = m["ended"]
        if ended is None:
            still_open = m["status"] == "open" and not m["deleted"]
            ended = now if still_open else max(m["source_updated_at"], started)
        days[m["stage"]].append(max((ended - started).total_seconds(), 0.0) / _SECONDS_PER_DAY)
    return days


def _current_counts(conn: Connection) -> dict[str, int]:
    r = records
    query = (
        select(r.c.stage, func.count())
        .where(
            _is_deal(), is_deal_head(r), r.c.stage.is_not(None), r.c.status == "open", r.c.deleted.is_(False)
        )
        .group_by(r.c.stage)
    )
    return {stage: int(count) for stage, count in conn.execute(query)}


def _funnel_row(
    stage: Stage,
    entered: dict[str, int],
    converted: dict[str, int],
    leaked: dict[str, int],
    stays: dict[str, list[float]],
    current: dict[str, int],
) -> FunnelRow:
    key: str = stage.key.value
    in_funnel = stage.kind in (StageKind.OPEN, StageKind.HOLD)
    spans = stays.get(key, [])
    return FunnelRow(
        stage=stage.key,
        label=stage.label,
        kind=stage.kind,
        entered=entered.get(key, 0),
        converted=converted.get(key, 0) if in_funnel else None,
        leaked=leaked.get(key, 0) if in_funnel else None,
        median_days=round(statistics.median(spans), 1) if in_funnel and spans else None,
        in_stage_now=current.get(key, 0),
    )


def _rate(part: int | None, whole: int) -> float | None:
    if part is None or whole == 0:
        return None
    return part / whole


# -- forecast ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    stage: str
    currency: str | None
    close_date: date | None
    deals: int
    amount: Decimal


def _forecast_groups(conn: Connection) -> list[_Group]:
    r = records
    query = (
        select(r.c.stage, r.c.currency, r.c.close_date, func.count(), func.sum(r.c.amount))
        .where(
            _is_deal(),
            is_deal_head(r),
            r.c.status == "open",
            r.c.deleted.is_(False),
            r.c.stage.is_not(None),
            r.c.amount.is_not(None),
        )
        .group_by(r.c.stage, r.c.currency, r.c.close_date)
    )
    return [
        _Group(stage, currency, close, int(count), Decimal(total))
        for stage, currency, close, count, total in conn.execute(query)
    ]


@dataclass
class _Totals:
    deals: int = 0
    amount: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)

    def add(self, group: _Group, weighted: Decimal) -> None:
        self.deals += group.deals
        self.amount += group.amount
        self.weighted += weighted


def _forecast(
    model: StageModel, groups: Sequence[_Group], now: datetime
) -> tuple[tuple[ForecastRow, ...], tuple[ForecastRow, ...]]:
    order = {s.key.value: s.order for s in model.stages}
    labels = {s.key.value: s.label for s in model.stages}
    weights = {
        s.key.value: Decimal(str(s.probability))
        for s in model.stages
        if s.kind in (StageKind.OPEN, StageKind.HOLD)
    }
    by_stage: dict[tuple[str, str | None], _Totals] = defaultdict(_Totals)
    by_month: dict[tuple[str | None, str | None], _Totals] = defaultdict(_Totals)
    for group in groups:
        if group.stage not in weights:
            continue
        weighted = group.amount * weights[group.stage]
        month = group.close_date.strftime("%Y-%m") if group.close_date is not None else None
        by_stage[(group.stage, group.currency)].add(group, weighted)
        by_month[(month, group.currency)].add(group, weighted)
    stage_rows = tuple(
        _forecast_row(stage, labels[stage], currency, totals)
        for (stage, currency), totals in sorted(
            by_stage.items(), key=lambda item: (order[item[0][0]], item[0][1] or "")
        )
    )
    this_month = now.strftime("%Y-%m")
    month_rows = tuple(
        _forecast_row(
            month,
            month or "no close date",
            currency,
            totals,
            past_due=month is not None and month < this_month,
        )
        for (month, currency), totals in sorted(
            by_month.items(), key=lambda item: (item[0][0] is None, item[0][0] or "", item[0][1] or "")
        )
    )
    return stage_rows, month_rows


def _forecast_row(
    bucket: str | None, label: str, currency: str | None, totals: _Totals, *, past_due: bool = False
) -> ForecastRow:
    return ForecastRow(
        bucket=bucket,
        label=f"{label} (past due)" if past_due else label,
        currency=currency,
        deals=totals.deals,
        amount=totals.amount.quantize(_CENT),
        weighted=totals.weighted.quantize(_CENT),
        past_due=past_due,
    )
