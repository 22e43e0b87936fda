"""Incremental pulls: changed Opportunities by ``SystemModstamp``, deleted ones by ``getDeleted``.

- ``opportunities``: ``SELECT ... FROM Opportunity WHERE SystemModstamp >= <cursor> ORDER BY
  SystemModstamp, Id`` (``SystemModstamp`` also moves on system-driven changes), batches followed
  through ``nextRecordsUrl``. The cursor is the last ``SystemModstamp`` seen, cut to the second
  (the SOQL literal ``YYYY-MM-DDThh:mm:ssZ``), so the next pull re-reads that second: records are
  seen twice rather than missed, and the store absorbs repeats.
- ``opportunities_deleted``: ``GET /sobjects/Opportunity/deleted/?start=&end=`` answers
  ``deletedRecords[{id, deletedDate}]``, ``earliestDateAvailable`` and ``latestDateCovered``, the
  next ``start``; it reaches back at most 15 days and cuts seconds from both ends, so windows
  overlap (ids repeated across windows and pages are dropped). The deleted rows are then read
  with ``queryAll`` (``IsDeleted = true``) while they are in the recycle bin. When the cursor is
  older than the window, or older than ``earliestDateAvailable`` (the log was purged: "you must
  resync"), the recycle bin is scanned with ``queryAll ... WHERE IsDeleted = true`` first
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm,
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_get_deleted.htm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.salesforce.api import SalesforceApi
from connectors.salesforce.convert import PIPELINE_ID, SOURCE, check_id
from connectors.salesforce.wire import format_datetime, parse_datetime, truncate_to_minute
from sync_worker.canonical import CanonicalRecord, PullPage, UnmappedStage
from sync_worker.errors import PermanentError

__all__ = [
    "DELETED_STREAM",
    "DELETED_WINDOW",
    "ID_BATCH",
    "STREAM",
    "join_cursor",
    "pull_deleted",
    "pull_updated",
    "read_by_ids",
    "split_cursor",
]

_log = logging.getLogger(__name__)

STREAM = "opportunities"
DELETED_STREAM = "opportunities_deleted"
DELETED_WINDOW = timedelta(days=15) - timedelta(minutes=5)
"""How far back ``deleted/`` is asked: inside its 15 days, with a margin for clock skew."""
ID_BATCH = 200

ToRecord = Callable[[Mapping[str, Any]], CanonicalRecord]


def split_cursor(cursor: str | None, stream: str) -> tuple[datetime | None, frozenset[str]]:
    """``"<time>|<id>,<id>"`` -> the time and the ids already seen at it (a plain time reads too)."""
    if cursor is None or cursor == "":
        return None, frozenset()
    text, _, ids = cursor.partition("|")
    moment = parse_datetime(text)
    if moment is None:
        raise PermanentError(f"salesforce: the {stream} cursor {cursor[:40]!r} is not a datetime")
    return moment, frozenset(i for i in ids.split(",") if i)


def join_cursor(moment: datetime, ids: set[str]) -> str:
    """The cursor of ``moment`` (to the millisecond) and the ids seen at exactly that time."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return f"{text}|{','.join(sorted(ids))}" if ids else text


def _select(fields: Sequence[str]) -> str:
    return f"SELECT {', '.join(fields)} FROM Opportunity"  # noqa: S608 - SOQL of fixed field names


def pull_updated(
    api: SalesforceApi, fields: Sequence[str], cursor: str | None, to_record: ToRecord
) -> Iterator[PullPage]:
    """Pages of Opportunities changed since ``cursor`` (None: all of them), oldest first.

    The query starts at the cursor's second; what was already read up to the cursor's exact time
    (and the ids at that time) is dropped, so a resumed pull repeats nothing unchanged.
    """
    since, seen = split_cursor(cursor, STREAM)
    where = f" WHERE SystemModstamp >= {format_datetime(since)}" if since is not None else ""
    soql = f"{_select(fields)}{where} ORDER BY SystemModstamp, Id"
    newest, at_newest = since, set(seen)
    for records, done in api.query_pages(soql):
        converted = (to_record(r) for r in records)
        fresh = tuple(
            r
            for r in converted
            if since is None or r.updated_at > since or (r.updated_at == since and r.external_id not in seen)
        )
        for record in fresh:
            if newest is None or record.updated_at > newest:
                newest, at_newest = record.updated_at, {record.external_id}
            elif record.updated_at == newest:
                at_newest.add(record.external_id)
        position = join_cursor(newest, at_newest) if newest is not None else cursor or None
        yield PullPage(STREAM, fresh, position, done)


def read_by_ids(
    api: SalesforceApi, fields: Sequence[str], ids: Sequence[str], *, include_deleted: bool
) -> dict[str, dict[str, Any]]:
    """The Opportunities with these ids, by id (``queryAll`` also finds recycled ones)."""
    found: dict[str, dict[str, Any]] = {}
    unique = list(dict.fromkeys(check_id(i) for i in ids))
    for start in range(0, len(unique), ID_BATCH):
        quoted = ", ".join(f"'{i}'" for i in unique[start : start + ID_BATCH])
        soql = f"{_select(fields)} WHERE Id IN ({quoted})"
        for row in api.query_all(soql, include_deleted=include_deleted):
            if isinstance(row.get("Id"), str):
                found[row["Id"]] = row
    return found


def _gone(record_id: str, deleted_at: datetime) -> CanonicalRecord:
    """A deletion whose row left the recycle bin: only the id and the time are known."""
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=record_id,
        updated_at=deleted_at,
        status="deleted",
        pipeline_id=PIPELINE_ID,
        unmapped=UnmappedStage(SOURCE, PIPELINE_ID, None),
    )


def pull_deleted(
    api: SalesforceApi,
    fields: Sequence[str],
    cursor: str | None,
    to_record: ToRecord,
    now: datetime,
) -> Iterator[PullPage]:
    """Pages of Opportunities deleted since ``cursor`` (None: what the recycle bin holds)."""
    start, seen_at_start = split_cursor(cursor, DELETED_STREAM)
    earliest_asked = now - DELETED_WINDOW
    window_start = truncate_to_minute(
        start if start is not None and start > earliest_asked else earliest_asked
    )
    window_end = truncate_to_minute(now)
    seen: set[str] = set()
    answer: Mapping[str, Any] = {}
    if window_end > window_start:
        params = {
            "start": window_start.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "end": window_end.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        }
        data = api.request("GET", "/sobjects/Opportunity/deleted/", params=params).data
        if not isinstance(data, dict) or not isinstance(data.get("deletedRecords"), list):
            raise PermanentError("salesforce: the deleted/ answer has no deletedRecords")
        answer = data
    earliest = parse_datetime(answer.get("earliestDateAvailable"))
    if start is None or start < earliest_asked or (earliest is not None and earliest > start):
        if start is not None:
            _log.warning(
                "salesforce: deletions since %s are past the delete log; scanning the recycle bin", cursor
            )
        where = " AND SystemModstamp >= " + format_datetime(start) if start is not None else ""
        soql = f"{_select(fields)} WHERE IsDeleted = true{where} ORDER BY SystemModstamp, Id"
        for batch, _ in api.query_pages(soql, include_deleted=True):
            fresh = tuple(to_record(r) for r in batch if r.get("Id") not in seen)
            seen.update(r.external_id for r in fresh)
            yield PullPage(DELETED_STREAM, fresh, cursor or None, False)
    deleted: dict[str, datetime] = {}
    for item in answer.get("deletedRecords") or []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or item["id"] in seen:
            continue
        at = parse_datetime(item.get("deletedDate")) or window_end
        if item["id"] in seen_at_start and at >= window_start:
            continue  # reported by the previous, overlapping window
        deleted.setdefault(item["id"], at)
    rows = read_by_ids(api, fields, list(deleted), include_deleted=True) if deleted else {}
    records: list[CanonicalRecord] = []
    for record_id, deleted_at in deleted.items():
        row = rows.get(record_id)
        if row is None:
            records.append(_gone(record_id, deleted_at))
            continue
        record = to_record(row)
        records.append(replace(record, status="deleted", updated_at=max(record.updated_at, deleted_at)))
    latest = parse_datetime(answer.get("latestDateCovered")) or (start if start is not None else window_start)
    # The next window starts at latest's minute and may list again what was deleted since then.
    again = {r.external_id for r in records if r.updated_at >= truncate_to_minute(latest)}
    again |= {i for i in seen_at_start if latest == start}
    yield PullPage(DELETED_STREAM, tuple(records), join_cursor(latest, again), True)
