"""Set-based SQL for the leak scan: every rule is evaluated inside the database.

Each rule is one or more :class:`Branch` selects over ``records`` (joined to ``stage_history`` and
``link_members`` where the rule needs them), filtered on indexed columns (``records (stage,
stage_entered_at)``, ``stage_history (record_id, at)``, ``link_members (group_id)``). Raising is one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING id`` per branch whose conflict target is the
partial unique index on open flags (https://www.sqlite.org/lang_upsert.html,
https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT), so a flag is raised once
however often the scan runs. Clearing is one ``UPDATE ... WHERE NOT EXISTS (<same branch,
correlated on the flag's record, stage and since>) RETURNING id``: a flag stays open exactly while
its record still leaks the same way. No Python loop walks the records.

Days are computed in SQL: ``julianday`` on SQLite (https://www.sqlite.org/lang_datefunc.html),
``EXTRACT(EPOCH FROM ...)`` on PostgreSQL
(https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-EXTRACT).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Row,
    Select,
    String,
    and_,
    case,
    cast,
    extract,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)

from sync_worker.canonical import RecordKind, StageKey
from sync_worker.store.base import dialect_insert
from sync_worker.store.flags import flag_from_row
from sync_worker.store.models import FlagRule, StoredFlag
from sync_worker.store.record_queries import is_deal_head, same_deal, stage_since_across_copies
from sync_worker.store.schema import cursors, leak_flags, link_members, outbox, records, stage_history
from sync_worker.store.types import UTCDateTime, as_utc

if TYPE_CHECKING:
    from sync_worker.leaks.rules import RuleBook

__all__ = [
    "SCAN_CURSOR",
    "Branch",
    "FlagTotal",
    "FlaggedRecord",
    "branches_for",
    "clear_rule",
    "enqueue_outbox_rows",
    "flagged_records",
    "last_scan_at",
    "mark_flags",
    "open_flag_totals",
    "open_flags_of_deals",
    "pending_flags",
    "raise_rule",
    "record_scan",
]

_CHUNK = 2000
SCAN_CURSOR = ("leak-scan", "finished")
"""The ``cursors`` row (source, stream) holding the time of the last finished scan."""
_FLAG_COLUMNS = (
    "record_id",
    "rule",
    "reason",
    "stage",
    "since",
    "days_in_stage",
    "amount",
    "weighted_amount",
    "raised_at",
)


@dataclass(frozen=True)
class Branch:
    """One way a rule matches: a select of flag columns plus what identifies the leak.

    ``stage``/``since`` are the expressions an open flag must still equal for its leak to persist
    (None when the rule ignores it). ``deal``: the rule judges deals (the match is the deal's head
    copy, a flag on any copy of the deal is the deal's flag, and ``since`` is only compared while
    the head is the copy the flag sits on); False for leads, judged one record at a time.
    """

    query: Select[Any]
    stage: ColumnElement[Any] | None
    since: ColumnElement[Any] | None
    deal: bool = True


@dataclass(frozen=True)
class FlaggedRecord:
    """A flag with the record it sits on (for the write-back and the alert)."""

    flag: StoredFlag
    source: str
    kind: RecordKind
    external_id: str
    title: str | None
    currency: str | None = None
    owner_id: str | None = None


@dataclass(frozen=True)
class FlagTotal:
    """Open flags (one per deal) of one rule, stage and currency: how many, and the amounts at risk.

    ``currency`` None: the deals' amounts carry no currency (never added into another currency).
    """

    rule: FlagRule
    stage: StageKey | None
    count: int
    amount: Decimal
    weighted_amount: Decimal
    currency: str | None = None


# -- expressions -----------------------------------------------------------------------------------


def _when(now: datetime) -> ColumnElement[datetime]:
    return literal(now, UTCDateTime)


def _text(value: str) -> ColumnElement[str]:
    return literal(value, String)


def _days(dialect: str, start: ColumnElement[Any], end: ColumnElement[Any]) -> ColumnElement[int]:
    """Whole days from ``start`` to ``end`` (NULL when either is NULL)."""
    if dialect == "sqlite":
        return cast(func.julianday(end) - func.julianday(start), Integer)
    return cast(func.floor(extract("epoch", end - start) / 86400), Integer)


def _probability(book: RuleBook, stage: ColumnElement[Any]) -> ColumnElement[Any]:
    # Rendered inline: a number literal is NUMERIC on PostgreSQL and REAL on SQLite.
    whens: dict[str, ColumnElement[Any]] = {k: literal_column(str(p)) for k, p in book.probabilities.items()}
    return case(whens, value=stage, else_=null())


def _weighted(book: RuleBook, amount: ColumnElement[Any], stage: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.round(amount * _probability(book, stage), 2)


def _columns(
    *,
    rule: FlagRule,
    reason: ColumnElement[Any],
    stage: ColumnElement[Any],
    since: ColumnElement[Any],
    days: ColumnElement[Any],
    book: RuleBook,
    now: datetime,
) -> list[ColumnElement[Any]]:
    return [
        records.c.id.label("record_id"),
        _text(rule).label("rule"),
        reason.label("reason"),
        stage.label("stage"),
        since.label("since"),
        days.label("days_in_stage"),
        records.c.amount.label("amount"),
        _weighted(book, records.c.amount, stage).label("weighted_amount"),
        _when(now).label("raised_at"),
    ]


def _by_stage(stage: ColumnElement[Any], texts: Mapping[str, str]) -> ColumnElement[Any]:
    return case({key: _text(value) for key, value in texts.items()}, value=stage, else_=_text(""))


# -- rules -----------------------------------------------------------------------------------------


def _open_deal() -> ColumnElement[bool]:
    return and_(records.c.kind == "deal", records.c.status == "open", records.c.deleted.is_(false()))


def _stalled(book: RuleBook, now: datetime, dialect: str) -> list[Branch]:
    cutoffs = book.stall_cutoffs(now)
    if not cutoffs:
        return []
    since = stage_since_across_copies(records)
    query = select(
        *_columns(
            rule="stalled",
            reason=_by_stage(records.c.stage, {k: book.stalled_reason(k) for k in cutoffs}),
            stage=records.c.stage,
            since=since,
            days=_days(dialect, since, _when(now)),
            book=book,
            now=now,
        )
    ).where(
        _open_deal(),
        is_deal_head(records),
        or_(*(and_(records.c.stage == key, since < cutoff) for key, cutoff in cutoffs.items())),
    )
    return [Branch(query, records.c.stage, since)]


def _entered_from(
    book: RuleBook, now: datetime, dialect: str, rule: FlagRule, reasons: Mapping[str, str]
) -> tuple[Select[Any], Any, ColumnElement[Any]]:
    """Records joined to the transition that put them in their current stage (``move``).

    The flag's stage is the stage they left, its ``since`` when they had entered that one, and its
    days the time they spent there.
    """
    move = stage_history.alias("move")
    earlier = stage_history.alias("earlier")
    since = (
        select(func.max(earlier.c.at))
        .where(earlier.c.record_id == records.c.id, earlier.c.at < move.c.at)
        .scalar_subquery()
    )
    query = select(
        *_columns(
            rule=rule,
            reason=_by_stage(move.c.from_stage, reasons),
            stage=move.c.from_stage,
            since=since,
            days=_days(dialect, since, move.c.at),
            book=book,
            now=now,
        )
    ).select_from(
        records.join(
            move,
            and_(
                move.c.record_id == records.c.id,
                move.c.at == records.c.stage_entered_at,
                move.c.to_stage == records.c.stage,
            ),
        )
    )
    return query, move, since


def _regressed(book: RuleBook, now: datetime, dialect: str) -> list[Branch]:
    if not book.regressions:
        return []
    reasons = {k: f"moved back from {book.label(k)} to an earlier stage" for k in book.open_stages}
    query, move, since = _entered_from(book, now, dialect, "regressed", reasons)
    pairs = or_(*(and_(move.c.from_stage == a, move.c.to_stage == b) for a, b in book.regressions))
    return [Branch(query.where(_open_deal(), is_deal_head(records), pairs), move.c.from_stage, since)]


def _dropped(
    book: RuleBook, now: datetime, dialect: str, full_pull_started: Mapping[str, datetime]
) -> list[Branch]:
    live = (*book.open_stages, *book.hold_stages)
    branches: list[Branch] = []
    if book.lost_stages and live:
        reasons = {k: f"lost while in {book.label(k)}" for k in live}
        query, move, since = _entered_from(book, now, dialect, "dropped", reasons)
        branches.append(
            Branch(
                query.where(
                    records.c.kind == "deal",
                    is_deal_head(records),
                    records.c.stage.in_(book.lost_stages),
                    move.c.from_stage.in_(live),
                ),
                move.c.from_stage,
                since,
            )
        )
    if not live:
        return branches
    held = leak_flags.alias("held")
    # A vanished deal stays dropped until it is seen again, even on scans that got no full-pull time.
    still_missing = (
        select(held.c.id)
        .where(
            held.c.record_id == records.c.id,
            held.c.rule == "dropped",
            held.c.cleared_at.is_(None),
            records.c.last_seen_at <= held.c.raised_at,
        )
        .exists()
    )
    missed = [
        and_(records.c.source == source, records.c.last_seen_at < started)
        for source, started in full_pull_started.items()
    ]
    vanished = and_(records.c.status == "open", records.c.deleted.is_(false()), or_(still_missing, *missed))
    deleted = or_(records.c.deleted.is_(true()), records.c.status == "deleted")
    lost = records.c.status == "lost"
    reason = case(
        *(
            (and_(condition, records.c.stage == key), _text(f"{what} while in {book.label(key)}"))
            for condition, what in (
                (deleted, "deleted in the source"),
                (lost, "lost"),
                (true(), "no longer returned by a full pull"),
            )
            for key in live
        ),
        else_=_text(""),
    )
    since = records.c.stage_entered_at
    query = select(
        *_columns(
            rule="dropped",
            reason=reason,
            stage=records.c.stage,
            since=since,
            days=_days(dialect, since, _when(now)),
            book=book,
            now=now,
        )
    ).where(
        records.c.kind == "deal",
        is_deal_head(records),
        records.c.stage.in_(live),
        or_(deleted, lost, vanished),
    )
    branches.append(Branch(query, records.c.stage, since))
    return branches


def _unanswered(book: RuleBook, now: datetime, dialect: str) -> list[Branch]:
    mine, theirs = link_members.alias("mine"), link_members.alias("theirs")
    deal, step = records.alias("deal"), stage_history.alias("step")
    moved = (
        select(step.c.id)
        .select_from(
            mine.join(theirs, theirs.c.group_id == mine.c.group_id)
            .join(deal, deal.c.id == theirs.c.record_id)
            .join(step, step.c.record_id == deal.c.id)
        )
        .where(
            mine.c.record_id == records.c.id,
            deal.c.kind == "deal",
            step.c.at > records.c.replied_at,
            # A move, by a person: not the deal's first sighting (a backfill sees every deal "now"),
            # not the service's own write (a deal it created or advanced because of the reply).
            step.c.from_stage.is_not(None),
            step.c.written_by_worker.is_(false()),
            step.c.origin != records.c.source,
        )
        .exists()
    )
    since = records.c.replied_at
    reason = f"replied more than {book.reply_sla_days} days ago and no linked deal moved since"
    query = select(
        *_columns(
            rule="unanswered",
            reason=_text(reason),
            stage=records.c.stage,
            since=since,
            days=_days(dialect, since, _when(now)),
            book=book,
            now=now,
        )
    ).where(
        records.c.kind == "lead",
        records.c.deleted.is_(false()),
        records.c.status != "deleted",
        since.is_not(None),
        since < book.reply_cutoff(now),
        ~moved,
    )
    # A lead's stage may move on in the outreach tool while the reply stays unanswered.
    return [Branch(query, None, since, deal=False)]


def _diverged(book: RuleBook, now: datetime, dialect: str) -> list[Branch]:
    """Heads whose live copies disagree on stage or status since longer than the grace period.

    The divergence started at the copies' latest stage entry (the move the others did not follow).
    The reason names the head's value and that of the first disagreeing copy, with their systems.
    """
    me, them = link_members.alias("div_me"), link_members.alias("div_them")
    other = records.alias("div_other")
    live = and_(other.c.deleted.is_(false()), other.c.status != "deleted")

    def disagrees(copy: Any) -> ColumnElement[bool]:
        return or_(copy.c.stage != records.c.stage, copy.c.status != records.c.status)

    lower = records.alias("div_lower")
    me2, them2 = link_members.alias("div_me2"), link_members.alias("div_them2")
    first_other = ~(
        select(lower.c.id)
        .select_from(
            me2.join(them2, them2.c.group_id == me2.c.group_id).join(lower, lower.c.id == them2.c.record_id)
        )
        .where(
            me2.c.record_id == records.c.id,
            lower.c.kind == "deal",
            lower.c.id != records.c.id,
            lower.c.id < other.c.id,
            lower.c.deleted.is_(false()),
            lower.c.status != "deleted",
            disagrees(lower),
        )
        .exists()
    )
    copy = records.alias("div_copy")
    me3, them3 = link_members.alias("div_me3"), link_members.alias("div_them3")
    since = (
        select(func.max(copy.c.stage_entered_at))
        .select_from(
            me3.join(them3, them3.c.group_id == me3.c.group_id).join(copy, copy.c.id == them3.c.record_id)
        )
        .where(me3.c.record_id == records.c.id, copy.c.kind == "deal", copy.c.deleted.is_(false()))
        .scalar_subquery()
    )

    def shown(rec: Any) -> ColumnElement[Any]:
        label = _by_stage(rec.c.stage, book.labels)
        text: ColumnElement[Any] = (
            rec.c.source + _text(": ") + label + _text(" (") + rec.c.status + _text(")")
        )
        return text

    reason = _text("copies disagree: ") + shown(records) + _text(" vs ") + shown(other)
    query = (
        select(
            *_columns(
                rule="diverged",
                reason=reason,
                stage=records.c.stage,
                since=since,
                days=_days(dialect, since, _when(now)),
                book=book,
                now=now,
            )
        )
        .select_from(
            records.join(me, me.c.record_id == records.c.id)
            .join(them, them.c.group_id == me.c.group_id)
            .join(other, other.c.id == them.c.record_id)
        )
        .where(
            records.c.kind == "deal",
            records.c.deleted.is_(false()),
            records.c.status != "deleted",
            records.c.stage.is_not(None),
            is_deal_head(records),
            other.c.kind == "deal",
            other.c.id != records.c.id,
            other.c.stage.is_not(None),
            live,
            disagrees(other),
            first_other,
            since < book.diverged_cutoff(now),
        )
    )
    # A diverged flag stays while the copies disagree, whatever the values they move through.
    return [Branch(query, None, None)]


def branches_for(
    rule: FlagRule,
    book: RuleBook,
    *,
    now: datetime,
    dialect: str,
    full_pull_started: Mapping[str, datetime],
) -> list[Branch]:
    """The selects that find the records ``rule`` flags at ``now``."""
    if rule == "stalled":
        return _stalled(book, now, dialect)
    if rule == "regressed":
        return _regressed(book, now, dialect)
    if rule == "dropped":
        return _dropped(book, now, dialect, full_pull_started)
    if rule == "diverged":
        return _diverged(book, now, dialect)
    return _unanswered(book, now, dialect)


# -- raising and clearing --------------------------------------------------------------------------


def _persists(branch: Branch) -> ColumnElement[bool]:
    """The flag (correlated ``leak_flags`` row) still matches ``branch``: its deal leaks the same way."""
    same: list[ColumnElement[bool]] = []
    if branch.stage is not None:
        same.append(branch.stage.is_not_distinct_from(leak_flags.c.stage))
    if not branch.deal:
        same.append(records.c.id == leak_flags.c.record_id)
        if branch.since is not None:
            same.append(branch.since.is_not_distinct_from(leak_flags.c.since))
        return branch.query.where(*same).exists()
    same.append(same_deal(records.c.id, leak_flags.c.record_id))
    if branch.since is not None:
        # Another copy became the head: same deal, same stage is the same leak.
        same.append(
            or_(records.c.id != leak_flags.c.record_id, branch.since.is_not_distinct_from(leak_flags.c.since))
        )
    return branch.query.where(*same).exists()


def clear_rule(
    conn: Connection,
    rule: FlagRule,
    branches: Sequence[Branch],
    *,
    now: datetime,
    of_records: Sequence[int] | None = None,
) -> list[int]:
    """Close the open ``rule`` flags whose deal (or lead) no longer leaks the same way; their ids.

    ``of_records``: only the flags of these records' deals (a deal that just moved).
    """
    persists = [_persists(branch) for branch in branches]
    stmt = update(leak_flags).where(leak_flags.c.rule == rule, leak_flags.c.cleared_at.is_(None))
    if of_records is not None:
        stmt = stmt.where(_of_deals(of_records))
    if persists:
        stmt = stmt.where(~or_(*persists))
    ids = conn.execute(stmt.values(cleared_at=now).returning(leak_flags.c.id)).scalars().all()
    return sorted(ids)


def _of_deals(record_ids: Sequence[int]) -> ColumnElement[bool]:
    """The (correlated) flag belongs to the deal of one of ``record_ids``."""
    moved = select(records.c.id.label("moved_id")).where(records.c.id.in_(list(record_ids))).subquery("moved")
    return select(moved.c.moved_id).where(same_deal(moved.c.moved_id, leak_flags.c.record_id)).exists()


def open_flags_of_deals(conn: Connection, record_ids: Sequence[int]) -> bool:
    """Whether the deal of any of ``record_ids`` holds an open flag (one indexed probe)."""
    query = select(leak_flags.c.id).where(leak_flags.c.cleared_at.is_(None), _of_deals(record_ids)).limit(1)
    return conn.execute(query).first() is not None


def raise_rule(conn: Connection, branches: Sequence[Branch], rule: FlagRule | None = None) -> list[int]:
    """Open a flag for every match whose deal has no open flag of that rule yet; the new ids.

    ``rule`` (the branches' rule) lets a deal-scoped branch skip deals flagged on another copy.
    """
    new: list[int] = []
    for branch in branches:
        query = branch.query
        if branch.deal and rule is not None:
            held = leak_flags.alias("deal_held")
            query = query.where(
                ~select(held.c.id)
                .where(
                    held.c.rule == rule,
                    held.c.cleared_at.is_(None),
                    same_deal(records.c.id, held.c.record_id),
                )
                .exists()
            )
        stmt = (
            dialect_insert(conn, leak_flags)
            .from_select(list(_FLAG_COLUMNS), query)
            .on_conflict_do_nothing(
                index_elements=["record_id", "rule"], index_where=leak_flags.c.cleared_at.is_(None)
            )
            .returning(leak_flags.c.id)
        )
        new.extend(conn.execute(stmt).scalars().all())
    return sorted(new)


# -- write-back bookkeeping ------------------------------------------------------------------------


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _flagged_query() -> Select[Any]:
    return select(
        leak_flags,
        records.c.source,
        records.c.kind,
        records.c.external_id,
        records.c.title,
        records.c.currency,
        records.c.owner_id,
    ).join(records, records.c.id == leak_flags.c.record_id)


def _flagged(row: Row[Any]) -> FlaggedRecord:
    m = row._mapping
    flag = flag_from_row(row)
    return FlaggedRecord(
        flag, m["source"], m["kind"], m["external_id"], m["title"], m["currency"], m["owner_id"]
    )


def flagged_records(conn: Connection, ids: Sequence[int]) -> list[FlaggedRecord]:
    """The flags with these ids and their records, by flag id."""
    found: list[FlaggedRecord] = []
    for chunk in _chunks(sorted(ids)):
        rows = conn.execute(_flagged_query().where(leak_flags.c.id.in_(chunk)))
        found.extend(_flagged(row) for row in rows)
    return sorted(found, key=lambda item: item.flag.id)


def pending_flags(conn: Connection, column: str) -> list[FlaggedRecord]:
    """Open flags whose ``column`` (``written_to_crm_at`` or ``alerted_at``) is not set, by id."""
    rows = conn.execute(
        _flagged_query()
        .where(leak_flags.c.cleared_at.is_(None), leak_flags.c[column].is_(None))
        .order_by(leak_flags.c.id)
    )
    return [_flagged(row) for row in rows]


def mark_flags(conn: Connection, ids: Iterable[int], column: str, *, at: datetime) -> None:
    """Stamp ``column`` on the flags with these ids."""
    for chunk in _chunks(sorted(ids)):
        conn.execute(update(leak_flags).where(leak_flags.c.id.in_(chunk)).values({column: at}))


def enqueue_outbox_rows(conn: Connection, rows: Sequence[Mapping[str, Any]], *, now: datetime) -> None:
    """Queue many pushes at once (``target``, ``idempotency_key``, ``kind``, ``payload`` JSON text each).

    An idempotency key already queued is skipped (``ON CONFLICT DO NOTHING``).
    """
    if not rows:
        return
    stmt = dialect_insert(conn, outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
    values = [
        {
            "kind": "mirror",
            **row,
            "status": "pending",
            "next_attempt_at": now,
            "created_at": now,
            "attempts": 0,
        }
        for row in rows
    ]
    for start in range(0, len(values), _CHUNK):
        conn.execute(stmt, values[start : start + _CHUNK])


# -- metrics ---------------------------------------------------------------------------------------


def open_flag_totals(conn: Connection) -> list[FlagTotal]:
    """Open flags grouped by rule, stage and the flagged record's currency, with summed amounts.

    One open flag per deal and rule, so counts are deals. Missing amounts count as 0; amounts of
    different currencies (or none) are never summed together.
    """
    currency = records.c.currency
    rows = conn.execute(
        select(
            leak_flags.c.rule,
            leak_flags.c.stage,
            currency,
            func.count(),
            func.sum(leak_flags.c.amount),
            func.sum(leak_flags.c.weighted_amount),
        )
        .join(records, records.c.id == leak_flags.c.record_id)
        .where(leak_flags.c.cleared_at.is_(None))
        .group_by(leak_flags.c.rule, leak_flags.c.stage, currency)
        .order_by(leak_flags.c.rule, leak_flags.c.stage, currency)
    )
    return [
        FlagTotal(
            rule=rule,
            stage=StageKey(stage) if stage is not None else None,
            count=int(count),
            amount=_decimal(amount),
            weighted_amount=_decimal(weighted),
            currency=code,
        )
        for rule, stage, code, count, amount, weighted in rows
    ]


def record_scan(conn: Connection, *, now: datetime) -> None:
    """Remember ``now`` as the time of the last finished scan (a ``cursors`` row)."""
    source, stream = SCAN_CURSOR
    stmt = dialect_insert(conn, cursors).values(
        source=source, stream=stream, value=now.isoformat(), updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["source", "stream"], set_={"value": now.isoformat(), "updated_at": now}
        )
    )


def last_scan_at(conn: Connection) -> datetime | None:
    """When the last scan finished, or None before the first."""
    source, stream = SCAN_CURSOR
    value = conn.execute(
        select(cursors.c.value).where(cursors.c.source == source, cursors.c.stream == stream)
    ).scalar_one_or_none()
    return as_utc(datetime.fromisoformat(value)) if value is not None else None


def _decimal(value: object) -> Decimal:
    if value is None:
        return Decimal("0.00")
    return Decimal(str(value)).quantize(Decimal("0.01"))
