"""The Zoho CRM connector: Deals in and out over API v8 (calls in :mod:`connectors.zoho.api`).

Streams: ``deals`` (every live deal; incremental on ``Modified_Time``) and ``deals_deleted``
(``GET /Deals/deleted``). Cursors are ``<Modified_Time>|<id>:<digest>,...``: the newest
modification time seen (second precision, UTC offset) and the records seen at that second, each
with a digest of the fields pulled (deleted entries and cursors of earlier versions carry bare
ids). A pull asks ``If-Modified-Since`` one second before the cursor, since whether Zoho compares
with ``>`` or ``>=`` is not documented, and drops what it saw already: the record at the cursor is
not counted again, while another record modified in the cursor's second, or the same record
changed again within it (same ``Modified_Time``, other field values), is pulled.

Pushes are ``PUT /crm/v8/Deals`` batches of up to 100 (creates ``POST``), one result per update in
input order. When Zoho refuses a whole batch of several records (an HTTP 4xx whose per-record
answers the HTTP boundary does not keep), each record is sent alone so that only the bad one fails.
The service's own writes are the changes whose ``Modified_By.id`` is the integration user
(``SYNC_ZOHO__USER_ID``). https://www.zoho.com/crm/developer/docs/api/v8/update-records.html
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from connectors.zoho.api import BATCH_SIZE, ZohoApi
from connectors.zoho.convert import (
    FIELDS,
    SOURCE,
    ZohoStage,
    deleted_to_canonical,
    format_time,
    from_canonical,
    parse_time,
    source_stages,
    stages_from_pipelines,
    to_canonical,
)
from connectors.zoho.settings import ZohoSettings
from connectors.zoho.watch import WatchChannel
from connectors.zoho.webhooks import parse_callback, verify_callback
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest, deleted_record
from sync_worker.errors import AuthError, ConfigError, PermanentError, SyncWorkerError, TransientError
from sync_worker.mappings import Mappings

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["STREAMS", "ZohoConnector", "parse_cursor"]

STREAMS = ("deals", "deals_deleted")
_RETRYABLE_CODES = frozenset({"RECORD_LOCKED", "INTERNAL_ERROR", "TOO_MANY_REQUESTS", "CANNOT_PROCESS"})
_log = logging.getLogger(__name__)


def parse_cursor(cursor: str | None) -> tuple[datetime | None, dict[str, str | None]]:
    """``(time, {id: digest or None} seen at that second)`` of a cursor (None: from the beginning)."""
    if not cursor:
        return None, {}
    moment, _, ids = cursor.partition("|")
    try:
        parsed = parse_time(moment, "cursor")
    except PermanentError as exc:
        raise ConfigError(f"zoho: cursor {cursor[:40]!r} is not <ISO time>[|ids]") from exc
    seen: dict[str, str | None] = {}
    for entry in ids.split(","):
        record_id, _, digest = entry.partition(":")
        if record_id:
            seen[record_id] = digest or None
    return parsed, seen


def digest(deal: Mapping[str, Any]) -> str:
    """A short digest of the pulled fields of ``deal``: tells two versions within one second apart."""
    values = {field: deal.get(field) for field in ("id", *FIELDS)}
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


class _Window:
    """The newest second seen and the records seen in it; filters what was seen before."""

    def __init__(self, cursor: str | None) -> None:
        self.start, self.seen = parse_cursor(cursor)
        self.newest, self.at_newest = self.start, dict(self.seen)

    def since(self) -> str | None:
        return format_time(self.start - timedelta(seconds=1)) if self.start else None

    def is_new(self, moment: datetime, record_id: str, version: str | None = None) -> bool:
        if self.start is None or moment > self.start:
            return True
        if moment < self.start:
            return False
        if record_id not in self.seen:
            return True
        before = self.seen[record_id]
        return before is not None and version is not None and before != version

    def add(self, moment: datetime, record_id: str, version: str | None = None) -> None:
        if self.newest is None or moment > self.newest:
            self.newest, self.at_newest = moment, {record_id: version}
        elif moment == self.newest:
            self.at_newest[record_id] = version

    def cursor(self) -> str | None:
        if self.newest is None:
            return None
        seen = (f"{i}:{v}" if v else i for i, v in sorted(self.at_newest.items()))
        return f"{format_time(self.newest)}|{','.join(seen)}"


class ZohoConnector:
    """Zoho Deals as canonical records, pushes, leak flags and notifications."""

    name = SOURCE

    def __init__(
        self,
        api: ZohoApi,
        mappings: Callable[[], Mappings],
        section: ZohoSettings,
        *,
        notify_url: str | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._api = api
        self._mappings = mappings
        self._section = section
        self._clock = clock
        self._stages: list[ZohoStage] | None = None
        self.watch = WatchChannel(api, section, notify_url=notify_url, clock=clock)

    def __repr__(self) -> str:
        return f"ZohoConnector({self._api!r})"

    @property
    def credits_remaining(self) -> int | None:
        """``X-API-CREDITS-REMAINING`` of the last answer that carried it (Zoho sends it past 50 %)."""
        return self._api.credits_remaining

    def close(self) -> None:
        self._api.close()

    # -- stages ---------------------------------------------------------------------------

    def _stage_list(self, *, refresh: bool = False) -> list[ZohoStage]:
        if self._stages is None or refresh:
            layouts = [self._section.layout_id] if self._section.layout_id else self._api.layout_ids()
            found: dict[tuple[str, str], ZohoStage] = {}
            for layout in layouts:
                for stage in stages_from_pipelines(self._api.pipelines(layout)):
                    found.setdefault((stage.pipeline_id, stage.stage_id), stage)
            self._stages = list(found.values())
        return self._stages

    def list_stages(self) -> list[SourceStage]:
        return source_stages(self._stage_list(refresh=True))

    # -- pulls ----------------------------------------------------------------------------

    def _records(self, deals: Sequence[Mapping[str, Any]]) -> list[CanonicalRecord]:
        stages = self._stage_list()
        known = {s.actual for s in stages} | {s.display for s in stages}
        if any(isinstance(d.get("Stage"), str) and d["Stage"] not in known for d in deals):
            stages = self._stage_list(refresh=True)
        contacts = sorted(
            {str(d["Contact_Name"]["id"]) for d in deals if isinstance(d.get("Contact_Name"), dict)}
        )
        emails = self._api.contact_emails(contacts) if contacts else {}
        mappings = self._mappings()
        return [to_canonical(d, mappings, stages, emails=emails) for d in deals]

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Deals changed since ``cursor`` (oldest first), or deals deleted since it."""
        if stream not in STREAMS:
            raise ConfigError(f"zoho: unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")
        if stream == "deals_deleted":
            yield from self._pull_deleted(cursor)
            return
        self.watch.renew_if_due()
        window = _Window(cursor)
        pages = self._api.deal_pages(window.since())
        for deals in pages:
            fresh, versions = [], []
            for deal in deals:
                moment = parse_time(deal.get("Modified_Time"), "Modified_Time")
                if moment is None:
                    _log.warning("zoho: deal %s has no Modified_Time; skipped", str(deal.get("id"))[:40])
                    continue
                version = digest(deal)
                if window.is_new(moment, str(deal.get("id")), version):
                    fresh.append(deal)
                    versions.append(version)
            records = self._records(fresh)
            for record, version in zip(records, versions, strict=True):
                window.add(record.updated_at, record.external_id, version)
            yield PullPage(
                stream=stream, records=tuple(records), cursor=window.cursor() or cursor, done=False
            )
        yield PullPage(stream=stream, records=(), cursor=window.cursor() or cursor, done=True)

    def _pull_deleted(self, cursor: str | None) -> Iterator[PullPage]:
        # The deleted list has no documented order, so the cursor moves only on the last page.
        window = _Window(cursor)
        for items in self._api.deleted_pages(window.since()):
            records = [deleted_to_canonical(item) for item in items]
            fresh = tuple(r for r in records if window.is_new(r.updated_at, r.external_id))
            for record in fresh:
                window.add(record.updated_at, record.external_id)
            yield PullPage(stream="deals_deleted", records=fresh, cursor=cursor, done=False)
        yield PullPage(stream="deals_deleted", records=(), cursor=window.cursor() or cursor, done=True)

    # -- pushes ---------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Batches of up to 100 per method; a record Zoho refuses fails alone (see the module doc)."""
        results: dict[int, UpdateResult] = {}
        pending: dict[str, list[tuple[int, CanonicalUpdate, dict[str, Any]]]] = {"PUT": [], "POST": []}
        needs_stage = any(u.stage is not None or u.status in ("won", "lost") for u in updates)
        stages = self._stage_list() if needs_stage else []
        pipelines = {s.pipeline for s in stages}
        only = next(iter(pipelines)) if len(pipelines) == 1 else None
        mappings = self._mappings()
        for index, update in enumerate(updates):
            try:
                if update.kind != "deal":
                    raise PermanentError(f"zoho: {update.kind} records are not written")
                item = from_canonical(
                    update, mappings, stages, pipeline=only, flag_field=self._section.flag_field
                )
            except PermanentError as exc:
                results[index] = _failed(update, exc)
                continue
            pending["PUT" if update.external_id else "POST"].append((index, update, item))
        for method, queued in pending.items():
            for start in range(0, len(queued), BATCH_SIZE):
                results.update(self._send(method, queued[start : start + BATCH_SIZE]))
        return [results[index] for index in range(len(updates))]

    def _send(
        self, method: str, batch: Sequence[tuple[int, CanonicalUpdate, dict[str, Any]]]
    ) -> dict[int, UpdateResult]:
        try:
            answers = self._api.write(method, [item for _, _, item in batch])
        except AuthError as exc:
            return {index: _failed(update, exc) for index, update, _ in batch}
        except PermanentError as exc:
            if len(batch) == 1:
                return {batch[0][0]: _failed(batch[0][1], exc)}
            _log.info("zoho %s /Deals: batch of %d refused (%s); sending one by one", method, len(batch), exc)
            alone: dict[int, UpdateResult] = {}
            for entry in batch:
                alone.update(self._send(method, [entry]))
            return alone
        except TransientError as exc:
            return {index: _failed(update, exc) for index, update, _ in batch}
        return {
            index: _answer(update, answer) for (index, update, _), answer in zip(batch, answers, strict=True)
        }

    # -- webhooks -------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_callback(request, self._section.webhook_token, self._section.channel_id)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_callback(body, now=self._clock())

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Deletions from the stored copy; every other id read back in one ``GET /Deals?ids=``."""
        result = Normalised()
        wanted: dict[str, list[InboxEvent]] = {}
        for event in events:
            if event.action == "delete":
                record = deleted_record(event, "deal", ctx)
                if record is None:
                    result.skip(event, "deleted deal was never stored")
                else:
                    result.records.append((record, (event.id,)))
            else:
                wanted.setdefault(event.object_id, []).append(event)
        if not wanted:
            return result
        before = self._api.calls
        deals = self._api.deals_by_id(sorted(wanted))
        by_id = {str(d.get("id")): d for d in deals}
        records = {r.external_id: r for r in self._records([by_id[i] for i in sorted(by_id) if i in wanted])}
        result.reads += self._api.calls - before
        for record_id, group in wanted.items():
            ids = tuple(e.id for e in group)
            record = records.get(record_id)
            if record is None:
                for event in group:
                    result.skip(event, "deal not returned by Zoho (deleted since?)")
            elif ctx.is_own(record.change_source):
                result.echo_ids.extend(ids)
            else:
                result.records.append((record, ids))
        return result

    def prepare(self) -> list[str]:
        """Enable (or renew) the Deals notification channel; the names created."""
        return self.watch.ensure()


def _failed(update: CanonicalUpdate, exc: SyncWorkerError) -> UpdateResult:
    return UpdateResult(
        idempotency_key=update.idempotency_key,
        ok=False,
        external_id=update.external_id,
        error=str(exc),
        retryable=isinstance(exc, TransientError),
    )


def _answer(update: CanonicalUpdate, answer: Mapping[str, Any]) -> UpdateResult:
    details = answer.get("details") if isinstance(answer.get("details"), dict) else {}
    assert isinstance(details, dict)
    if answer.get("status") == "success" or answer.get("code") == "SUCCESS":
        return UpdateResult(
            idempotency_key=update.idempotency_key,
            ok=True,
            external_id=str(details.get("id") or update.external_id),
            updated_at=parse_time(details.get("Modified_Time"), "Modified_Time"),
        )
    code = str(answer.get("code") or "ERROR")
    where = details.get("api_name") or details.get("json_path")
    message = f"zoho: {code}: {str(answer.get('message') or '')[:200]}" + (f" ({where})" if where else "")
    return UpdateResult(
        idempotency_key=update.idempotency_key,
        ok=False,
        external_id=update.external_id,
        error=message,
        retryable=code in _RETRYABLE_CODES,
    )
