"""Record upserts, stage history and cross-system links, as functions on an open transaction.

:class:`~sync_worker.store.records.RecordsMixin` runs each in one transaction. Row locks
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers anyway)
keep two workers from interleaving on the same record. Inserts race-proof themselves with
``INSERT ... ON CONFLICT DO NOTHING``: https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
and https://www.sqlite.org/lang_upsert.html
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.dml import Insert

from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.store.base import built_once, dialect_insert
from sync_worker.store.models import RecordChange, StageTransition, StoredRecord, stage_reentered
from sync_worker.store.schema import link_groups, link_members, records, stage_history
from sync_worker.store.types import as_utc

__all__ = [
    "DealCopy",
    "deal_copies",
    "deal_key",
    "find_by_email",
    "is_deal_head",
    "link",
    "linked",
    "load_history",
    "load_record",
    "normalise_email",
    "record_from_row",
    "same_deal",
    "stage_since_across_copies",
    "upsert",
]

_UPDATABLE = (
    "pipeline_id",
    "source_stage",
    "status",
    "title",
    "amount",
    "currency",
    "owner_id",
    "contact_email",
    "linkedin_url",
    "company",
    "close_date",
    "lost_reason",
    "change_source",
    "source_updated_at",
    "deleted",
)


def normalise_email(email: str | None) -> str | None:
    """Emails are matched case-insensitively: stored and looked up stripped and lower-cased."""
    if email is None:
        return None
    cleaned = email.strip().lower()
    return cleaned or None


def record_from_row(row: Row[Any]) -> StoredRecord:
    m = row._mapping
    return StoredRecord(
        id=m["id"],
        source=m["source"],
        kind=m["kind"],
        external_id=m["external_id"],
        status=m["status"],
        source_updated_at=m["source_updated_at"],
        first_seen_at=m["first_seen_at"],
        last_seen_at=m["last_seen_at"],
        stage=StageKey(m["stage"]) if m["stage"] is not None else None,
        pipeline_id=m["pipeline_id"],
        source_stage=m["source_stage"],
        title=m["title"],
        amount=m["amount"],
        currency=m["currency"],
        owner_id=m["owner_id"],
        contact_email=m["contact_email"],
        linkedin_url=m["linkedin_url"],
        company=m["company"],
        close_date=m["close_date"],
        lost_reason=m["lost_reason"],
        change_source=m["change_source"],
        source_created_at=m["source_created_at"],
        stage_entered_at=m["stage_entered_at"],
        replied_at=m["replied_at"],
        deleted=bool(m["deleted"]),
    )


def _values(record: CanonicalRecord) -> dict[str, Any]:
    return {
        "pipeline_id": record.pipeline_id,
        "source_stage": record.source_stage,
        "status": record.status,
        "title": record.title,
        "amount": record.amount,
        "currency": record.currency,
        "owner_id": record.owner_id,
        "contact_email": normalise_email(record.contact_email),
        "linkedin_url": record.linkedin_url,
        "company": record.company,
        "close_date": record.close_date,
        "lost_reason": record.lost_reason,
        "change_source": record.change_source,
        "source_updated_at": record.updated_at,
        "deleted": record.status == "deleted",
    }


def _add_history(
    conn: Connection,
    record_id: int,
    *,
    before: StageKey | None,
    after: StageKey,
    source_stage: str | None,
    at: datetime,
    origin: str,
    written_by_worker: bool,
) -> None:
    conn.execute(
        _HISTORY_INSERT,
        {
            "record_id": record_id,
            "from_stage": before.value if before is not None else None,
            "to_stage": after.value,
            "source_stage": source_stage,
            "at": at,
            "origin": origin,
            "written_by_worker": written_by_worker,
        },
    )


# The statements of the per-record write path, built once (see store.base.built_once).
_HISTORY_INSERT = insert(stage_history)
_RECORD_BY_KEY = select(records).where(
    records.c.source == bindparam("source"),
    records.c.kind == bindparam("kind"),
    records.c.external_id == bindparam("external_id"),
)
# FOR UPDATE is rendered on PostgreSQL only; SQLite's BEGIN IMMEDIATE already holds the write lock.
_RECORD_BY_KEY_FOR_UPDATE = _RECORD_BY_KEY.with_for_update()
_RECORD_UPDATE = update(records).where(records.c.id == bindparam("record_id_")).returning(*records.c)


def _build_record_insert(conn: Connection) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING *`` for the connection's backend."""
    return (
        dialect_insert(conn, records)
        .on_conflict_do_nothing(index_elements=["source", "kind", "external_id"])
        .returning(*records.c)
    )


def upsert(
    conn: Connection,
    record: CanonicalRecord,
    *,
    origin: str,
    written_by_worker: bool,
    seen_at: datetime,
    exists: bool = False,
) -> RecordChange:
    """Insert or update ``record``; see :meth:`SyncStore.upsert_record` for the contract."""
    as_utc(record.updated_at)  # refuse naive timestamps before touching anything
    entered_at = record.stage_changed_at or seen_at
    values = _values(record)
    key = {"source": record.source, "kind": record.kind, "external_id": record.external_id}
    if exists:
        row = conn.execute(_RECORD_BY_KEY_FOR_UPDATE, key).one_or_none()
        if row is not None:
            return _update_current(
                conn, record, record_from_row(row), values, origin, written_by_worker, seen_at
            )
    inserted_row = conn.execute(
        built_once(conn, "record_insert", _build_record_insert),
        {
            **key,
            "stage": record.stage.value if record.stage is not None else None,
            "stage_entered_at": entered_at if record.stage is not None else None,
            "source_created_at": record.created_at,
            "replied_at": record.replied_at,
            "first_seen_at": seen_at,
            "last_seen_at": seen_at,
            **values,
        },
    ).one_or_none()
    if inserted_row is not None:
        stored = record_from_row(inserted_row)
        if record.stage is not None:
            _add_history(
                conn,
                stored.id,
                before=None,
                after=record.stage,
                source_stage=record.source_stage,
                at=entered_at,
                origin=origin,
                written_by_worker=written_by_worker,
            )
        return RecordChange(stored, created=True, applied=True, previous_stage=None, previous_status=None)

    current = record_from_row(conn.execute(_RECORD_BY_KEY_FOR_UPDATE, key).one())
    return _update_current(conn, record, current, values, origin, written_by_worker, seen_at)


def _update_current(
    conn: Connection,
    record: CanonicalRecord,
    current: StoredRecord,
    values: dict[str, Any],
    origin: str,
    written_by_worker: bool,
    seen_at: datetime,
) -> RecordChange:
    """Apply ``record`` over the locked stored row ``current`` (newest wins; history on a move)."""
    entered_at = record.stage_changed_at or seen_at
    changes: dict[str, Any] = {"last_seen_at": max(seen_at, current.last_seen_at)}
    applied = record.updated_at >= current.source_updated_at
    if applied:
        changes.update({name: values[name] for name in _UPDATABLE})
        if record.created_at is not None:
            changes["source_created_at"] = record.created_at
        if record.replied_at is not None:
            changes["replied_at"] = record.replied_at
        # An unmapped stage (None) keeps the last known canonical stage and its clock.
        if stage_reentered(current, record):
            # Re-entered the same stage after a move the service did not see: its clock restarts
            changes["stage_entered_at"] = record.stage_changed_at
        if record.stage is not None and record.stage != current.stage:
            changes["stage"] = record.stage.value
            changes["stage_entered_at"] = entered_at
            _add_history(
                conn,
                current.id,
                before=current.stage,
                after=record.stage,
                source_stage=record.source_stage,
                at=entered_at,
                origin=origin,
                written_by_worker=written_by_worker,
            )
    row = conn.execute(_RECORD_UPDATE, {"record_id_": current.id, **changes}).one()
    return RecordChange(
        record_from_row(row),
        created=False,
        applied=applied,
        previous_stage=current.stage,
        previous_status=current.status,
    )


def load_record(conn: Connection, source: str, kind: str, external_id: str) -> StoredRecord | None:
    row = conn.execute(
        _RECORD_BY_KEY, {"source": source, "kind": kind, "external_id": external_id}
    ).one_or_none()
    return record_from_row(row) if row is not None else None


def load_records(
    conn: Connection, source: str, kind: str, external_ids: Iterable[str]
) -> dict[str, StoredRecord]:
    """The stored records of ``source`` among ``external_ids``, by external id (reads of 500 ids)."""
    wanted = sorted(set(external_ids))
    found: dict[str, StoredRecord] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            _RECORDS_BY_KEYS, {"source": source, "kind": kind, "ids": wanted[start : start + 500]}
        )
        found.update((row.external_id, record_from_row(row)) for row in rows)
    return found


_RECORDS_BY_KEYS = select(records).where(
    records.c.source == bindparam("source"),
    records.c.kind == bindparam("kind"),
    records.c.external_id.in_(bindparam("ids", expanding=True)),
)


def find_by_email(conn: Connection, email: str) -> list[StoredRecord]:
    wanted = normalise_email(email)
    if wanted is None:
        return []
    rows = conn.execute(_RECORDS_BY_EMAIL, {"email": wanted})
    return [record_from_row(row) for row in rows]


_RECORDS_BY_EMAIL = (
    select(records).where(records.c.contact_email == bindparam("email")).order_by(records.c.id)
)


def load_history(conn: Connection, record_id: int) -> list[StageTransition]:
    rows = conn.execute(
        select(stage_history)
        .where(stage_history.c.record_id == record_id)
        .order_by(stage_history.c.at, stage_history.c.id)
    )
    return [
        StageTransition(
            id=m["id"],
            record_id=m["record_id"],
            to_stage=StageKey(m["to_stage"]),
            at=m["at"],
            origin=m["origin"],
            written_by_worker=bool(m["written_by_worker"]),
            from_stage=StageKey(m["from_stage"]) if m["from_stage"] is not None else None,
            source_stage=m["source_stage"],
        )
        for m in (row._mapping for row in rows)
    ]


def link(conn: Connection, record_ids: Iterable[int], *, now: datetime) -> int:
    """Put the records in one link group, merging groups they already belong to; the group id."""
    ids = sorted(set(record_ids))
    if not ids:
        raise ValueError("link_records needs at least one record id")
    # Locking the records serialises concurrent links touching any of them (PostgreSQL).
    found = conn.execute(select(records.c.id).where(records.c.id.in_(ids)).with_for_update()).scalars().all()
    missing = sorted(set(ids) - set(found))
    if missing:
        raise ValueError(f"unknown record ids: {missing}")
    groups = sorted(
        set(
            conn.execute(select(link_members.c.group_id).where(link_members.c.record_id.in_(ids)))
            .scalars()
            .all()
        )
    )
    if groups:
        target, others = groups[0], groups[1:]
        if others:
            conn.execute(
                update(link_members).where(link_members.c.group_id.in_(others)).values(group_id=target)
            )
            conn.execute(delete(link_groups).where(link_groups.c.id.in_(others)))
    else:
        target = conn.execute(
            insert(link_groups).values(created_at=now).returning(link_groups.c.id)
        ).scalar_one()
    members = set(
        conn.execute(select(link_members.c.record_id).where(link_members.c.group_id == target)).scalars()
    )
    for record_id in ids:
        if record_id not in members:
            conn.execute(insert(link_members).values(record_id=record_id, group_id=target, linked_at=now))
    return int(target)


def linked(conn: Connection, record_id: int) -> tuple[int | None, list[StoredRecord]]:
    """The record's group id and the OTHER records in it (``(None, [])`` when it is not linked)."""
    group = conn.execute(_GROUP_OF, {"record_id": record_id}).scalar_one_or_none()
    if group is None:
        return None, []
    rows = conn.execute(_GROUP_OTHERS, {"group_id": group, "record_id": record_id})
    return group, [record_from_row(row) for row in rows]


_GROUP_OF = select(link_members.c.group_id).where(link_members.c.record_id == bindparam("record_id"))
_GROUP_OTHERS = (
    select(records)
    .join(link_members, link_members.c.record_id == records.c.id)
    .where(link_members.c.group_id == bindparam("group_id"), records.c.id != bindparam("record_id"))
    .order_by(records.c.id)
)


# -- deals: the linked deal records of one opportunity ---------------------------------------------
#
# A deal is a link group's deal records, or a deal record in no group. Its HEAD is the copy with the
# newest state (latest ``source_updated_at``, then highest id): rules judge a deal by its head.


def _members() -> tuple[FromClause, FromClause]:
    return link_members.alias("deal_me"), link_members.alias("deal_them")


def is_deal_head(rec: FromClause) -> ColumnElement[bool]:
    """True for a deal record no other deal copy of its group is newer than (correlated on ``rec``)."""
    me, them = _members()
    other = records.alias("deal_newer")
    newer = (
        select(other.c.id)
        .select_from(
            me.join(them, them.c.group_id == me.c.group_id).join(other, other.c.id == them.c.record_id)
        )
        .where(
            me.c.record_id == rec.c.id,
            other.c.kind == "deal",
            other.c.id != rec.c.id,
            or_(
                other.c.source_updated_at > rec.c.source_updated_at,
                and_(other.c.source_updated_at == rec.c.source_updated_at, other.c.id > rec.c.id),
            ),
        )
        .exists()
    )
    return ~newer


def same_deal(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
    """True when the records with ids ``left`` and ``right`` are one record or in one link group."""
    me, them = _members()
    together = (
        select(me.c.record_id)
        .select_from(me.join(them, them.c.group_id == me.c.group_id))
        .where(me.c.record_id == left, them.c.record_id == right)
        .exists()
    )
    return or_(left == right, together)


def deal_key(rec: FromClause) -> ColumnElement[Any]:
    """A number naming ``rec``'s deal: the smallest deal record id of its group, else its own id."""
    me, them = _members()
    copy = records.alias("deal_first")
    first = (
        select(func.min(copy.c.id))
        .select_from(
            me.join(them, them.c.group_id == me.c.group_id).join(copy, copy.c.id == them.c.record_id)
        )
        .where(me.c.record_id == rec.c.id, copy.c.kind == "deal")
        .scalar_subquery()
    )
    return func.coalesce(first, rec.c.id)


def stage_since_across_copies(rec: FromClause) -> ColumnElement[Any]:
    """When the deal entered ``rec``'s stage: the earliest entry among its live copies in that stage.

    A copy created later by a mirror write enters the stage late; the deal was there since the first.
    """
    me, them = _members()
    copy = records.alias("deal_same_stage")
    earliest = (
        select(func.min(copy.c.stage_entered_at))
        .select_from(
            me.join(them, them.c.group_id == me.c.group_id).join(copy, copy.c.id == them.c.record_id)
        )
        .where(
            me.c.record_id == rec.c.id,
            copy.c.kind == "deal",
            copy.c.stage == rec.c.stage,
            copy.c.deleted.is_(false()),
        )
        .scalar_subquery()
    )
    return func.coalesce(earliest, rec.c.stage_entered_at)


@dataclass(frozen=True)
class DealCopy:
    """One record of a deal, for write-backs, links and the drill-down."""

    record_id: int
    source: str
    kind: str
    external_id: str
    title: str | None
    owner_id: str | None
    stage: str | None
    status: str
    amount: Any
    currency: str | None
    deleted: bool


def deal_copies(conn: Connection, record_ids: Sequence[int]) -> dict[int, list[DealCopy]]:
    """For each record id: every record of its deal (itself first, then the other DEAL records by id).

    A lead is its own only copy (leads are not deals; their links to deals are not copies).
    """
    wanted = sorted(set(record_ids))
    found: dict[int, list[DealCopy]] = {}
    for start in range(0, len(wanted), 2000):
        chunk = wanted[start : start + 2000]
        own = {row.id: _copy(row) for row in conn.execute(select(records).where(records.c.id.in_(chunk)))}
        me, them = _members()
        rows = conn.execute(
            select(me.c.record_id.label("asked"), records)
            .select_from(
                me.join(them, them.c.group_id == me.c.group_id).join(
                    records, records.c.id == them.c.record_id
                )
            )
            .where(me.c.record_id.in_(chunk), records.c.kind == "deal", records.c.id != me.c.record_id)
            .order_by(me.c.record_id, records.c.id)
        )
        others: dict[int, list[DealCopy]] = {}
        for row in rows:
            others.setdefault(row.asked, []).append(_copy(row))
        for record_id, copy in own.items():
            found[record_id] = [copy, *(others.get(record_id, []) if copy.kind == "deal" else [])]
    return found


def _copy(row: Row[Any]) -> DealCopy:
    m = row._mapping
    return DealCopy(
        record_id=m["id"],
        source=m["source"],
        kind=m["kind"],
        external_id=m["external_id"],
        title=m["title"],
        owner_id=m["owner_id"],
        stage=m["stage"],
        status=m["status"],
        amount=m["amount"],
        currency=m["currency"],
        deleted=bool(m["deleted"]),
    )
