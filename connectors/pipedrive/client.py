"""The Pipedrive connector: API v2 for deals, pipelines, stages and persons; v1 for notes and labels.

Calls (all through :class:`~sync_worker.http.ApiClient`, which maps statuses to errors and retries
429/5xx honouring ``Retry-After`` / ``x-ratelimit-reset``):

- ``GET /api/v2/pipelines``, ``GET /api/v2/stages``: cursor paging (``limit``, ``cursor`` until
  ``additional_data.next_cursor`` is null). https://developers.pipedrive.com/docs/api/v1/Pipelines,
  https://developers.pipedrive.com/docs/api/v1/Stages (v2 sections)
- ``GET /api/v2/deals`` with ``updated_since`` (RFC 3339, inclusive), ``sort_by=update_time``,
  ``sort_direction=asc``, ``limit=500``; ``status=deleted`` returns deals deleted in the last 30
  days; ``GET /api/v2/deals/archived`` takes the same filters.
  https://developers.pipedrive.com/docs/api/v1/Deals (v2 section),
  https://pipedrive.readme.io/docs/core-api-concepts-pagination
- ``GET /api/v2/persons?ids=`` (up to 100 ids per call) for contact emails.
  https://developers.pipedrive.com/docs/api/v1/Persons (v2 section)
- ``PATCH /api/v2/deals/{id}``, ``POST /api/v2/deals``.
- Removing a deal for a route's ``on_delete``: ``delete`` is ``DELETE /api/v2/deals/{id}`` ("marks a
  deal as deleted. After 30 days, the deal will be permanently deleted"; 200 ``{"success": true,
  "data": {"id": ...}}``), ``archive`` is ``PATCH /api/v2/deals/{id}`` with ``is_archived: true``;
  a 404 means the deal is gone already (removed).
  https://developers.pipedrive.com/docs/api/v1/Deals#deleteDeal and the v2 section of that page
- ``POST /api/v1/notes`` (``deal_id``, ``content``); ``GET /api/v1/dealFields`` and
  ``PUT /api/v1/dealFields/{id}`` (all options sent back with their ids, new ones by label) to
  create a missing deal label. https://developers.pipedrive.com/docs/api/v1/Notes,
  https://developers.pipedrive.com/docs/api/v1/DealFields
- Auth: ``x-api-token`` header (API token) or ``Authorization: Bearer`` (OAuth).
  https://pipedrive.readme.io/docs/core-api-concepts-authentication
- Rate limits: a budget per 2-second window per token; every response carries
  ``x-ratelimit-limit``/``-remaining``/``-reset``; 429 carries ``Retry-After``.
  https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting

The persisted cursor is the ``update_time`` of the newest deal seen, floored to the second:
resuming re-reads a few deals and never skips one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from connectors.pipedrive import inbox
from connectors.pipedrive.access import TokenAuth
from connectors.pipedrive.convert import (
    SOURCE,
    format_cursor,
    from_canonical,
    parse_time,
    primary_email,
    stage_from_payload,
    to_canonical,
)
from connectors.pipedrive.settings import PipedriveSettings
from connectors.pipedrive.webhooks import parse_webhook, verify_basic_auth
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    LeakFlag,
    PullPage,
    RecordRemoval,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import AuthError, ConfigError, PermanentError, SyncWorkerError, TransientError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.mappings import Mappings, MappingsSource, mappings_source
from sync_worker.ratelimit import Limit, LocalRateLimiter
from sync_worker.settings import Settings
from sync_worker.store.models import InboxEvent

__all__ = [
    "STREAMS",
    "PipedriveConnector",
    "from_section",
    "from_settings",
]

STREAMS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "deals": ("/api/v2/deals", {}),
    "deals_deleted": ("/api/v2/deals", {"status": "deleted"}),
    "deals_archived": ("/api/v2/deals/archived", {}),
}
"""Stream name -> (path, extra query). ``deals`` is every open, won and lost deal."""

_PAGE_LIMIT = 500
_PERSON_IDS_PER_CALL = 100
FlagMode = Literal["note", "label", "both"]


def _items(data: Any, where: str) -> tuple[list[Mapping[str, Any]], str | None]:
    """``data`` (a list of objects, or null) and ``additional_data.next_cursor`` of a v2 list."""
    if not isinstance(data, dict):
        raise PermanentError(f"pipedrive {where}: response is not a JSON object")
    items = data.get("data")
    if items is None:
        items = []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PermanentError(f"pipedrive {where}: data is not a list of objects")
    extra = data.get("additional_data") or {}
    cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
    return items, cursor if isinstance(cursor, str) and cursor else None


def _object_data(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise PermanentError(f"pipedrive {where}: data is not an object")
    result: Mapping[str, Any] = data["data"]
    return result


class PipedriveConnector:
    """Pipedrive deals as canonical records, pushes, leak flags and webhooks.

    ``mappings`` resolves stages (``sync_worker.mappings.Mappings``). ``flag_with`` chooses how a
    :class:`LeakFlag` is written: a note, a deal label named ``label_prefix + rule`` (created in
    the deal ``label`` field when missing), or both. ``clock`` stamps webhook events that carry
    no time (basic auth itself is not time-bound).
    """

    name = SOURCE

    def __init__(
        self,
        api: ApiClient,
        mappings: Mappings | MappingsSource,
        *,
        webhook_user: str | None = None,
        webhook_password: SecretStr | None = None,
        flag_with: FlagMode = "both",
        label_prefix: str = "Leak: ",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._current_mappings = mappings_source(mappings)
        self._webhook_user = webhook_user
        self._webhook_password = webhook_password
        self._flag_with = flag_with
        self._label_prefix = label_prefix
        self._clock = clock
        self._stages: dict[str, SourceStage] | None = None
        self._deleted_stages: set[str] = set()
        self._label_field: tuple[int, dict[str, int]] | None = None

    @property
    def _mappings(self) -> Mappings:
        """The mappings in force now (a hot reload takes effect from the next translation on)."""
        return self._current_mappings()

    def __repr__(self) -> str:
        return f"PipedriveConnector({self._api!r})"

    def close(self) -> None:
        self._api.close()

    # -- pipelines and stages -------------------------------------------------------------

    def _list_all(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        cursor: str | None = None
        while True:
            query = {**(params or {}), "limit": _PAGE_LIMIT}
            if cursor:
                query["cursor"] = cursor
            response = self._api.request("GET", path, params=query)
            items, cursor = _items(response.data, f"GET {path}")
            yield from items
            if cursor is None:
                return

    def _stage_index(self, *, refresh: bool = False) -> dict[str, SourceStage]:
        """Stage id -> stage (deleted ones too: old deals still point at them); cached."""
        if self._stages is None or refresh:
            pipelines = list(self._list_all("/api/v2/pipelines"))
            names = {str(p.get("id")): str(p.get("name") or p.get("id")) for p in pipelines}
            gone = {str(p.get("id")) for p in pipelines if p.get("is_deleted") is True}
            index: dict[str, SourceStage] = {}
            deleted: set[str] = set()
            for raw in self._list_all("/api/v2/stages"):
                stage = stage_from_payload(raw, names)
                index[stage.stage_id] = stage
                if raw.get("is_deleted") is True or stage.pipeline_id in gone:
                    deleted.add(stage.stage_id)
            self._stages, self._deleted_stages = index, deleted
        return self._stages

    def list_stages(self) -> list[SourceStage]:
        """Every live stage, by pipeline then stage order (refetched on each call)."""
        index = self._stage_index(refresh=True)
        live = [s for s in index.values() if s.stage_id not in self._deleted_stages]
        return sorted(live, key=lambda s: (s.pipeline_id, s.order, s.stage_id))

    # -- pulls ----------------------------------------------------------------------------

    def _emails(self, deals: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Primary emails of the deals' persons: one ``GET /api/v2/persons?ids=`` per 100 persons."""
        ids = sorted({str(d["person_id"]) for d in deals if d.get("person_id") not in (None, "")})
        emails: dict[str, str] = {}
        for start in range(0, len(ids), _PERSON_IDS_PER_CALL):
            chunk = ids[start : start + _PERSON_IDS_PER_CALL]
            params = {"ids": ",".join(chunk), "limit": _PERSON_IDS_PER_CALL}
            response = self._api.request("GET", "/api/v2/persons", params=params)
            people, _ = _items(response.data, "GET /api/v2/persons")
            for person in people:
                email = primary_email(person)
                if email is not None and person.get("id") is not None:
                    emails[str(person["id"])] = email
        return emails

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Deals changed since ``cursor`` (an RFC 3339 ``update_time``), oldest first.

        Streams: ``deals`` (open, won, lost), ``deals_deleted``, ``deals_archived``. Each page's
        cursor is the newest ``update_time`` seen so far; the last page has ``done=True``.
        """
        if stream not in STREAMS:
            raise ConfigError(f"pipedrive: unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")
        path, extra = STREAMS[stream]
        base: dict[str, Any] = {**extra, "sort_by": "update_time", "sort_direction": "asc"}
        if cursor:
            base["updated_since"] = cursor
        newest = parse_time(cursor, "cursor") if cursor else None
        page_cursor: str | None = None
        refreshed = False
        while True:
            query = {**base, "limit": _PAGE_LIMIT}
            if page_cursor:
                query["cursor"] = page_cursor
            response = self._api.request("GET", path, params=query)
            deals, page_cursor = _items(response.data, f"GET {path}")
            stages = self._stage_index()
            unknown = any(
                str(d.get("stage_id")) not in stages for d in deals if d.get("stage_id") is not None
            )
            if unknown and not refreshed:
                stages, refreshed = self._stage_index(refresh=True), True
            emails = self._emails(deals)
            records = tuple(
                to_canonical(d, self._mappings, stages=stages, person_emails=emails) for d in deals
            )
            for record in records:
                if newest is None or record.updated_at > newest:
                    newest = record.updated_at
            yield PullPage(
                stream=stream,
                records=records,
                cursor=format_cursor(newest) if newest else cursor,
                done=page_cursor is None,
            )
            if page_cursor is None:
                return

    # -- pushes ---------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """One write (plus flag note/label) per update; a failure never hides the others."""
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

    def _apply(self, update: CanonicalUpdate) -> UpdateResult:
        if update.kind != "deal":
            raise PermanentError(f"pipedrive: {update.kind} records are not written")
        deal_id = update.external_id
        flag = update.flag
        labels_too = flag is not None and self._flag_with != "note"
        current: Mapping[str, Any] | None = None
        if deal_id is not None and (update.stage is not None or labels_too):
            current = self._get_deal(deal_id)
        stages: list[SourceStage] = []
        pipeline_id: str | None = None
        pipeline_name: str | None = None
        if update.stage is not None:
            stages = list(self._stage_index().values())
            if current is not None and current.get("pipeline_id") is not None:
                pipeline_id = str(current["pipeline_id"])
                names = {s.pipeline_label for s in stages if s.pipeline_id == pipeline_id}
                pipeline_name = names.pop() if len(names) == 1 else None
        body = from_canonical(
            update, self._mappings, stages=stages, pipeline_id=pipeline_id, pipeline_name=pipeline_name
        )
        deal: Mapping[str, Any] | None = None
        if flag is not None and current is not None and labels_too:
            body["label_ids"] = self._flagged_labels(flag, current.get("label_ids"))
        if deal_id is None:
            created = self._api.request("POST", "/api/v2/deals", json_body=body)
            deal = _object_data(created.data, "POST /api/v2/deals")
            deal_id = str(deal.get("id"))
            if flag is not None and labels_too:
                deal = self._patch(deal_id, {"label_ids": self._flagged_labels(flag, deal.get("label_ids"))})
        elif body:
            deal = self._patch(deal_id, body)
        if flag is not None and flag.rule is not None and self._flag_with != "label":
            self._note(deal_id, flag)
        return UpdateResult(
            idempotency_key=update.idempotency_key,
            ok=True,
            external_id=deal_id,
            updated_at=parse_time(deal.get("update_time"), "deal update_time") if deal else None,
        )

    def remove_records(self, removals: Sequence[RecordRemoval]) -> list[UpdateResult]:
        """Delete or archive each deal (one call each; see the module docstring). A failure never
        hides the others; :class:`~sync_worker.errors.AuthError` propagates."""
        results: list[UpdateResult] = []
        for removal in removals:
            try:
                self._remove(removal)
            except AuthError:
                raise
            except PermanentError as exc:
                gone = exc.status == 404
                results.append(_removal_result(removal, None if gone else exc))
            except SyncWorkerError as exc:
                results.append(_removal_result(removal, exc))
            else:
                results.append(_removal_result(removal, None))
        return results

    def _remove(self, removal: RecordRemoval) -> None:
        if removal.kind != "deal":
            raise PermanentError(f"pipedrive: {removal.kind} records are not removed")
        path = f"/api/v2/deals/{_path_id(removal.external_id)}"
        if removal.mode == "archive":
            self._patch(removal.external_id, {"is_archived": True})
        else:
            self._api.request("DELETE", path)

    def _get_deal(self, deal_id: str) -> Mapping[str, Any]:
        path = f"/api/v2/deals/{_path_id(deal_id)}"
        return _object_data(self._api.request("GET", path).data, f"GET {path}")

    def _patch(self, deal_id: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        path = f"/api/v2/deals/{_path_id(deal_id)}"
        return _object_data(self._api.request("PATCH", path, json_body=dict(body)).data, f"PATCH {path}")

    # -- leak flags -----------------------------------------------------------------------

    def _note(self, deal_id: str, flag: LeakFlag) -> None:
        lines = [f"<b>sync-worker: leak flag ({flag.rule})</b>"]
        if flag.reason:
            lines.append(_escape(flag.reason))
        if flag.stage is not None:
            lines.append(f"Stage: {flag.stage.value}")
        if flag.days_in_stage is not None:
            lines.append(f"Days in stage: {flag.days_in_stage}")
        if flag.since is not None:
            lines.append(f"Since: {flag.since.date().isoformat()}")
        body = {"deal_id": int(_path_id(deal_id)), "content": "<br>".join(lines)}
        self._api.request("POST", "/api/v1/notes", json_body=body)

    def _label_options(self, *, refresh: bool = False) -> tuple[int, dict[str, int]]:
        """The deal ``label`` field id and its options (label -> id), from ``GET /api/v1/dealFields``."""
        if self._label_field is None or refresh:
            start = 0
            while True:
                params = {"start": start, "limit": _PAGE_LIMIT}
                data = self._api.request("GET", "/api/v1/dealFields", params=params).data
                fields, _ = _items(data, "GET /api/v1/dealFields")
                for field in fields:
                    if field.get("key") == "label" and isinstance(field.get("id"), int):
                        self._label_field = (field["id"], _options(field.get("options")))
                        return self._label_field
                pagination = (data.get("additional_data") or {}).get("pagination") or {}
                if not pagination.get("more_items_in_collection"):
                    raise PermanentError("pipedrive: the deal label field was not found")
                start = int(pagination.get("next_start") or start + _PAGE_LIMIT)
        return self._label_field

    def _label_id(self, name: str) -> int:
        field_id, options = self._label_options()
        if name in options:
            return options[name]
        field_id, options = self._label_options(refresh=True)
        if name in options:
            return options[name]
        sent: list[dict[str, Any]] = [{"id": oid, "label": label} for label, oid in options.items()]
        sent.append({"label": name})
        path = f"/api/v1/dealFields/{field_id}"
        field = _object_data(self._api.request("PUT", path, json_body={"options": sent}).data, f"PUT {path}")
        options = _options(field.get("options"))
        self._label_field = (field_id, options)
        if name not in options:
            raise PermanentError(f"pipedrive: label {name!r} was not created")
        return options[name]

    def _flagged_labels(self, flag: LeakFlag, current: Any) -> list[int]:
        """The deal's label ids with this flag's label in and every other leak label out."""
        ids = [i for i in (current or []) if isinstance(i, int) and not isinstance(i, bool)]
        _, options = self._label_options()
        leak_ids = {oid for label, oid in options.items() if label.startswith(self._label_prefix)}
        kept = [i for i in ids if i not in leak_ids]
        if flag.rule is not None:
            kept.append(self._label_id(self._label_prefix + flag.rule))
        return kept

    # -- webhooks -------------------------------------------------------------------------

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Inbox events -> records; webhooks carry the whole deal (:mod:`.inbox`)."""
        return inbox.normalise_events(events, ctx, self.to_record)

    def prepare(self) -> list[str]:
        """Nothing to create: notes and deal labels need no custom fields."""
        return []

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_basic_auth(request, self._webhook_user, self._webhook_password)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_webhook(body, now=self._clock)

    def to_record(self, deal: Mapping[str, Any]) -> CanonicalRecord:
        """One deal object (API or webhook ``data``) as a record, with cached stage names."""
        return to_canonical(deal, self._mappings, stages=self._stage_index())


def _options(raw: Any) -> dict[str, int]:
    if not isinstance(raw, list):
        return {}
    return {
        str(o["label"]): o["id"]
        for o in raw
        if isinstance(o, dict) and isinstance(o.get("id"), int) and isinstance(o.get("label"), str)
    }


def _removal_result(removal: RecordRemoval, error: SyncWorkerError | None) -> UpdateResult:
    return UpdateResult(
        idempotency_key=removal.idempotency_key,
        ok=error is None,
        external_id=removal.external_id,
        error=str(error) if error is not None else None,
        retryable=isinstance(error, TransientError),
    )


def _path_id(deal_id: str) -> str:
    if not deal_id.isdigit():
        raise PermanentError(f"pipedrive: deal id {deal_id[:40]!r} is not numeric")
    return deal_id


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def from_section(
    pd: PipedriveSettings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
    flag_with: FlagMode = "both",
) -> PipedriveConnector:
    """A connector from its settings section; :class:`ConfigError` when no credential is set.

    Without ``limiter`` an in-process 2-second-window limiter of ``rate_limit_per_2s`` is used.
    """
    if not pd.enabled:
        raise ConfigError("pipedrive: set SYNC_PIPEDRIVE__API_TOKEN or SYNC_PIPEDRIVE__OAUTH_TOKEN")
    api = ApiClient(
        SOURCE,
        str(pd.base_url),
        auth=TokenAuth(pd),
        limiter=limiter or LocalRateLimiter({"default": Limit(pd.rate_limit_per_2s, 2.0)}, sleep=sleep),
        transport=transport,
        sleep=sleep,
        max_attempts=max_attempts,
    )
    return PipedriveConnector(
        api,
        mappings,
        webhook_user=pd.webhook_user,
        webhook_password=pd.webhook_password,
        flag_with=flag_with,
    )


def from_settings(
    settings: Settings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
    flag_with: FlagMode = "both",
) -> PipedriveConnector:
    """:func:`from_section` with the service settings' ``pipedrive`` section."""
    return from_section(
        settings.section(SOURCE, PipedriveSettings),
        mappings,
        transport=transport,
        limiter=limiter,
        sleep=sleep,
        max_attempts=max_attempts,
        flag_with=flag_with,
    )
