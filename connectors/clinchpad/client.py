"""The ClinchPad connector: pipelines, stages and leads (the deals) over API v1.

Calls (all through :class:`~sync_worker.http.ApiClient`, which maps statuses to errors and retries
429/5xx with backoff, honouring ``Retry-After`` when one is sent):

- ``GET /pipelines?page=&size=``, ``GET /pipelines/:id/stages?page=&size=``: bare JSON arrays,
  an empty array past the end (https://clinchpad.com/api/docs/pipelines,
  https://clinchpad.com/api/docs/stages).
- ``GET /leads?pipeline_id=&page=&size=`` (``pipeline_id`` required, default size 25, no
  envelope, no total): paged from page 1 until a short or empty page, as the Pipedream source
  does (``components/clinchpad/sources/new-lead-created``). ``GET /leads/:id``; ``PUT
  /leads/:id`` with ``stage_id``/``size``/``name``; ``POST /leads`` with ``name`` and
  ``pipeline_id`` (https://clinchpad.com/api/docs/leads). ``POST /leads/:id/notes``
  (``content``) for leak flags, as ``pyclinchpad`` uses it.
- Auth: HTTP Basic, user ``api-key``, the API key as the password (https://clinchpad.com/api/docs).
- Limit: 1,200 calls an hour, 429 beyond (same page); budgeted by the core's shared limiter.

Streams (ClinchPad has no timestamps and no deleted feed, so both are full listings):

- ``leads`` (polled): every lead of every pipeline is listed and compared with the previous
  listing, carried in the opaque cursor (:mod:`connectors.clinchpad.snapshot`); only new and
  changed leads are yielded, stamped with the time the listing started (the change happened
  between the two listings). The digest rides on the last page, so it is persisted only once the
  whole listing is stored.
- ``leads_snapshot`` (the core's periodic full pull, ``full=True``): every lead, stamped with a
  lower bound of its last change (its ObjectId's creation second), so stored copies are only
  marked seen and never re-stamped; it persists no cursor. A lead missing from a complete
  snapshot is flagged ``dropped`` by the core's leak scan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.clinchpad import inbox, snapshot
from connectors.clinchpad.convert import (
    SOURCE,
    fingerprint,
    object_id,
    object_id_time,
    stage_from_payload,
    to_canonical,
)
from connectors.clinchpad.push import flag_note, lead_body, resolve_stage, wanted_stage
from connectors.clinchpad.settings import ClinchPadSettings
from connectors.clinchpad.webhooks import parse_body, verify_handshake
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import ConfigError, PermanentError, SyncWorkerError, TransientError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.mappings import Mappings, MappingsSource, mappings_source
from sync_worker.ratelimit import Limit, LocalRateLimiter
from sync_worker.store.models import InboxEvent

__all__ = ["STREAM_LEADS", "STREAM_SNAPSHOT", "ClinchPadConnector", "from_section"]

STREAM_LEADS = "leads"
STREAM_SNAPSHOT = "leads_snapshot"
_MAX_PAGES = 10_000
_log = logging.getLogger(__name__)


def _array(data: Any, where: str) -> list[Mapping[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise PermanentError(f"clinchpad {where}: the answer is not an array of objects")
    return data


def _name(item: Mapping[str, Any], fallback: str) -> str:
    name = item.get("name")
    return name if isinstance(name, str) and name else fallback


class ClinchPadConnector:
    """ClinchPad leads as canonical deal records, lead writes, leak-flag notes and webhooks."""

    name = SOURCE

    def __init__(
        self,
        api: ApiClient,
        mappings: Mappings | MappingsSource,
        settings: ClinchPadSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._current_mappings = mappings_source(mappings)
        self._settings = settings
        self._clock = clock
        self._stages: list[SourceStage] | None = None

    @property
    def _mappings(self) -> Mappings:
        return self._current_mappings()

    def __repr__(self) -> str:
        return f"ClinchPadConnector({self._api!r})"

    def close(self) -> None:
        self._api.close()

    # -- listing --------------------------------------------------------------------------

    def _pages(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[list[Mapping[str, Any]]]:
        """Pages of a bare-array list, from page 1 until a short or empty page.

        A page that adds no item not seen before also ends it (a server that ignores ``page``
        would otherwise be paged forever).
        """
        size = self._settings.page_size
        seen: set[str] = set()
        for page in range(1, _MAX_PAGES + 1):
            query = {**(params or {}), "page": page, "size": size}
            items = _array(self._api.request("GET", path, params=query).data, f"GET {path}")
            fresh = [i for i in items if str(i.get("_id")) not in seen]
            seen.update(str(i.get("_id")) for i in fresh)
            if fresh:
                yield fresh
            if len(items) < size or not fresh:
                return
        raise PermanentError(f"clinchpad GET {path}: more than {_MAX_PAGES} pages")

    def _pipelines(self) -> list[tuple[str, str]]:
        pipelines: list[tuple[str, str]] = []
        for page in self._pages("/pipelines"):
            for item in page:
                pipeline_id = object_id(item.get("_id"), "pipeline _id")
                pipelines.append((pipeline_id, _name(item, pipeline_id)))
        return pipelines

    def _stage_index(self, *, refresh: bool = False) -> list[SourceStage]:
        if self._stages is None or refresh:
            stages: list[SourceStage] = []
            for pipeline_id, pipeline_name in self._pipelines():
                path = f"/pipelines/{pipeline_id}/stages"
                items = [item for page in self._pages(path) for item in page]
                stages.extend(
                    stage_from_payload(s, pipeline_id=pipeline_id, pipeline_name=pipeline_name, order=n)
                    for n, s in enumerate(items)
                )
            self._stages = stages
        return self._stages

    def list_stages(self) -> list[SourceStage]:
        """Every stage of every pipeline, in the order the API lists them (refetched)."""
        return list(self._stage_index(refresh=True))

    def _listing(self) -> Iterator[tuple[str, str, list[Mapping[str, Any]]]]:
        for pipeline_id, pipeline_name in self._pipelines():
            for page in self._pages("/leads", {"pipeline_id": pipeline_id}):
                yield pipeline_id, pipeline_name, page

    def _record(
        self,
        lead: Mapping[str, Any],
        *,
        updated_at: datetime,
        pipeline_id: str | None,
        pipeline_name: str | None,
        change_source: str | None = None,
    ) -> CanonicalRecord:
        return to_canonical(
            lead,
            self._mappings,
            updated_at=updated_at,
            pipeline_id=pipeline_id,
            pipeline_name=pipeline_name,
            currency=self._settings.currency,
            change_source=change_source,
        )

    # -- pulls ----------------------------------------------------------------------------

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """``leads``: new and changed leads since the listing in ``cursor``; ``leads_snapshot``:
        every lead, marking stored copies seen (see the module docstring)."""
        if stream == STREAM_LEADS:
            return self._pull_changed(cursor)
        if stream == STREAM_SNAPSHOT:
            return self._pull_snapshot()
        raise ConfigError(
            f"clinchpad: unknown stream {stream!r}; expected {STREAM_LEADS} or {STREAM_SNAPSHOT}"
        )

    def _pull_changed(self, cursor: str | None) -> Iterator[PullPage]:
        started = self._clock()
        previous = snapshot.decode(cursor)
        seen: dict[str, str] = {}
        for pipeline_id, pipeline_name, leads in self._listing():
            records: list[CanonicalRecord] = []
            for lead in leads:
                record = self._record(
                    lead, updated_at=started, pipeline_id=pipeline_id, pipeline_name=pipeline_name
                )
                if record.external_id in seen:
                    continue  # listed twice: it moved to another pipeline while we paged
                seen[record.external_id] = mark = fingerprint(record)
                if previous is None or previous.changed(record.external_id, mark):
                    records.append(record)
            yield PullPage(STREAM_LEADS, tuple(records), cursor=None, done=False)
        if previous is not None:
            gone = previous.vanished(seen)
            if gone:
                _log.info("clinchpad: %d lead(s) vanished since the last listing", len(gone))
        digest = snapshot.encode(snapshot.Snapshot(at=started, leads=seen))
        yield PullPage(STREAM_LEADS, (), cursor=digest, done=True)

    def _pull_snapshot(self) -> Iterator[PullPage]:
        for pipeline_id, pipeline_name, leads in self._listing():
            records = tuple(
                self._record(
                    lead,
                    updated_at=object_id_time(object_id(lead.get("_id"), "lead _id")),
                    pipeline_id=pipeline_id,
                    pipeline_name=pipeline_name,
                )
                for lead in leads
            )
            yield PullPage(STREAM_SNAPSHOT, records, cursor=None, done=False)
        yield PullPage(STREAM_SNAPSHOT, (), cursor=None, done=True)

    # -- pushes ---------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """One lead write (plus a flag note) per update; a failure never hides the others."""
        results: list[UpdateResult] = []
        for update in updates:
            try:
                results.append(self._apply(update))
            except SyncWorkerError as exc:
                results.append(
                    UpdateResult(
                        idempotency_key=update.idempotency_key,
                        ok=False,
                        external_id=update.external_id,
                        error=str(exc),
                        retryable=isinstance(exc, TransientError),
                    )
                )
        return results

    def _stage_for(self, update: CanonicalUpdate, pipeline_id: str | None) -> SourceStage | None:
        key = wanted_stage(update)
        if key is None:
            return None
        try:
            return resolve_stage(self._mappings, key, self._stage_index(), pipeline_id=pipeline_id)
        except PermanentError:
            # a stage added or renamed since the index was read: read it once more
            return resolve_stage(
                self._mappings, key, self._stage_index(refresh=True), pipeline_id=pipeline_id
            )

    def _apply(self, update: CanonicalUpdate) -> UpdateResult:
        if update.kind != "deal":
            raise PermanentError(f"clinchpad: {update.kind} records are not written")
        lead_id = update.external_id
        if lead_id is None:
            lead_id = self._create(update)
        else:
            stage = None
            if wanted_stage(update) is not None:
                stage = self._stage_for(update, self._pipeline_of(self._get_lead(lead_id)))
            body = lead_body(update, stage)
            if body:
                self._api.request("PUT", f"/leads/{_path_id(lead_id)}", json_body=body)
        flag = update.flag
        if flag is not None and flag.rule is not None and self._settings.flag_notes:
            path = f"/leads/{_path_id(lead_id)}/notes"
            self._api.request("POST", path, json_body={"content": flag_note(flag)})
        return UpdateResult(idempotency_key=update.idempotency_key, ok=True, external_id=lead_id)

    def _create(self, update: CanonicalUpdate) -> str:
        if not update.title:
            raise PermanentError("clinchpad: a new lead needs a name")
        stage = self._stage_for(update, None)
        if stage is not None:
            pipeline_id = stage.pipeline_id
        else:
            pipelines = self._pipelines()
            if not pipelines:
                raise PermanentError("clinchpad: the account has no pipeline to add a lead to")
            pipeline_id = pipelines[0][0]
        body = {**lead_body(update, None), "pipeline_id": pipeline_id}
        created = self._api.request("POST", "/leads", json_body=body).data
        if not isinstance(created, dict):
            raise PermanentError("clinchpad POST /leads: the answer is not a lead object")
        lead_id = object_id(created.get("_id"), "created lead _id")
        if stage is not None:
            self._api.request("PUT", f"/leads/{_path_id(lead_id)}", json_body={"stage_id": stage.stage_id})
        return lead_id

    def _get_lead(self, lead_id: str) -> Mapping[str, Any]:
        lead = self.read_lead(lead_id)
        if lead is None:
            raise PermanentError(f"clinchpad: lead {lead_id[:40]!r} no longer exists", status=404)
        return lead

    def _pipeline_of(self, lead: Mapping[str, Any]) -> str | None:
        """The lead's pipeline: a pipeline field if the API sends one, else its stage's pipeline."""
        for key in ("pipeline_id", "pipeline", "pipe"):
            value = lead.get(key)
            value = value.get("_id") if isinstance(value, Mapping) else value
            if isinstance(value, str) and value:
                return value
        stage = lead.get("stage")
        stage_id = stage.get("_id") if isinstance(stage, Mapping) else None
        if not isinstance(stage_id, str):
            return None
        for refresh in (False, True):
            owners = {s.pipeline_id for s in self._stage_index(refresh=refresh) if s.stage_id == stage_id}
            if len(owners) == 1:
                return owners.pop()
        return None

    def read_lead(self, lead_id: str) -> Mapping[str, Any] | None:
        """``GET /leads/:id``; None when ClinchPad answers 404 (the lead is gone)."""
        try:
            data = self._api.request("GET", f"/leads/{_path_id(lead_id)}").data
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict):
            raise PermanentError("clinchpad GET /leads/{id}: the answer is not a lead object")
        return data

    # -- webhooks -------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_handshake(request, self._settings.handshake_key)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_body(body, now=self._clock)

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Inbox events -> records, reading each named lead once (:mod:`.inbox`)."""
        return inbox.normalise_events(events, ctx, read_lead=self.read_lead, to_record=self._record)

    def prepare(self) -> list[str]:
        """Nothing to create: leak flags are notes."""
        return []


def _path_id(lead_id: str) -> str:
    if not lead_id or not all(c.isalnum() or c in "-_" for c in lead_id):
        raise PermanentError(f"clinchpad: lead id {lead_id[:40]!r} is not an id")
    return lead_id


def limits(section: ClinchPadSettings) -> dict[str, Limit]:
    """1,200 calls an hour (https://clinchpad.com/api/docs); the window type is not documented, and
    a sliding window of an hour is safe under either a fixed or a rolling one."""
    return {"default": Limit(section.rate_limit_per_hour, 3600.0)}


def from_section(
    section: ClinchPadSettings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ClinchPadConnector:
    """A connector from its settings section; :class:`ConfigError` when no API key is set."""
    if not section.enabled or section.api_key is None:
        raise ConfigError("clinchpad: set SYNC_CLINCHPAD__API_KEY")
    api = ApiClient(
        SOURCE,
        str(section.base_url),
        auth=httpx.BasicAuth("api-key", section.api_key.get_secret_value()),
        limiter=limiter or LocalRateLimiter(limits(section), sleep=sleep),
        transport=transport,
        sleep=sleep,
        max_attempts=max_attempts,
    )
    return ClinchPadConnector(api, mappings, section, clock=clock)
