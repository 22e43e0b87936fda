"""The HubSpot connector: CRM v3 deals, pipelines, properties and webhooks.

HubSpot documentation followed:

* Search (``POST /crm/v3/objects/deals/search``): filters, sorts, ``limit`` up to 200, ``after``
  paging, at most 10,000 results per query (HubSpot answers 400 past it), and its own rate limit
  of 5 requests/s per account: https://developers.hubspot.com/docs/api/crm/search
* Objects (``GET /crm/v3/objects/deals?archived=true``, ``batch/read``, ``batch/create``,
  ``batch/update`` with up to 100 inputs, 207 multi-status with per-input ``errors`` carrying
  ``context.ids``, ``objectWriteTraceId`` echoed on results):
  https://developers.hubspot.com/docs/api/crm/deals and
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/deals/batch/update-deals
* Archiving deals (``POST /crm/v3/objects/deals/batch/archive``, ``DELETE
  /crm/v3/objects/deals/{dealId}``) for a route's ``on_delete``: see :mod:`connectors.hubspot.removal`,
  https://developers.hubspot.com/docs/api/crm/deals
* Pipelines (``GET /crm/v3/pipelines/deals``): https://developers.hubspot.com/docs/api/crm/pipelines
* Properties and groups (``/crm/v3/properties/deals`` and ``.../groups``; 409 when the name
  exists): https://developers.hubspot.com/docs/api/crm/properties
* Rate limits (per 10 s for the API, per second for search):
  https://developers.hubspot.com/docs/api/usage-details
* Deal identity (contact e-mail through v4 associations and a contacts batch read, the
  ``sync_worker_pipedrive_id`` property): see :mod:`connectors.hubspot.identity` for the pages.
  Every page of ``deals`` and every ``read_deals`` batch costs one associations call and one
  contacts call per 100 distinct contacts, never a call per deal.

Pulls never write state: each :class:`~sync_worker.canonical.PullPage` carries the cursor to
persist once it is accepted. ``deals`` cursors are ``{"ts": <hs_lastmodifieddate ms>, "ids":
[ids already seen at ts]}`` (a bare ms string is accepted too); ``deals_archived`` cursors are
``{"since": <archivedAt ms>}`` plus the listing position while a scan is under way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.hubspot import identity, inbox, push, removal
from connectors.hubspot.auth import BearerAuth, TokenSource
from connectors.hubspot.convert import (
    SOURCE,
    deal_properties,
    parse_hubspot_datetime,
    stages_from_pipelines,
    to_canonical,
)
from connectors.hubspot.limits import read_limits
from connectors.hubspot.settings import HubSpotSettings
from connectors.hubspot.webhooks import parse_events, verify_signature
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    RecordRemoval,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import AuthError, ConfigError, PermanentError
from sync_worker.http import ApiClient, ApiResponse, RateLimiter
from sync_worker.mappings import Mappings, MappingsSource, mappings_source
from sync_worker.ratelimit import Limit, LocalRateLimiter
from sync_worker.settings import Settings
from sync_worker.store.models import InboxEvent

__all__ = [
    "DEFAULT_BASE_URL",
    "SEARCH_LIMIT",
    "SEARCH_MAX_RESULTS",
    "HubSpotConnector",
    "from_section",
    "from_settings",
]

DEFAULT_BASE_URL = "https://api.hubapi.com"
SEARCH_LIMIT = 200
SEARCH_MAX_RESULTS = 10_000
LIST_LIMIT = 100
SEARCH_PATH = "/crm/v3/objects/deals/search"
DEALS_PATH = "/crm/v3/objects/deals"
STREAMS = ("deals", "deals_archived")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class _SearchCursor:
    ts: int
    ids: frozenset[str]

    def encode(self) -> str:
        return json.dumps({"ts": self.ts, "ids": sorted(self.ids)}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | None) -> _SearchCursor:
        if raw is None or raw == "":
            return cls(0, frozenset())
        if raw.strip().isdigit():
            return cls(int(raw), frozenset())
        try:
            data = json.loads(raw)
            return cls(int(data["ts"]), frozenset(str(i) for i in data.get("ids", [])))
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentError("hubspot: the deals cursor is not a valid cursor") from exc


def _results(response: ApiResponse, what: str) -> list[dict[str, Any]]:
    data = response.data
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise PermanentError(f"hubspot: {what} answer has no results array")
    return [item for item in data["results"] if isinstance(item, dict)]


def _next_after(response: ApiResponse) -> str | None:
    data = response.data
    after = ((data.get("paging") or {}).get("next") or {}).get("after") if isinstance(data, dict) else None
    return None if after in (None, "") else str(after)


class HubSpotConnector:
    """HubSpot CRM v3 behind the :class:`~sync_worker.connector.Connector` protocol."""

    name = SOURCE

    def __init__(
        self,
        mappings: Mappings | MappingsSource,
        *,
        token: SecretStr | None = None,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
        refresh_token: SecretStr | None = None,
        base_url: str = DEFAULT_BASE_URL,
        accept_signature_v1: bool = False,
        link_systems: Sequence[str] = (),
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        max_attempts: int = 4,
        refresh_margin: float = 60.0,
    ) -> None:
        if token is None and refresh_token is None:
            raise ConfigError("hubspot: set SYNC_HUBSPOT__TOKEN or SYNC_HUBSPOT__REFRESH_TOKEN")
        if refresh_token is not None and (client_id is None or client_secret is None):
            raise ConfigError(
                "hubspot: OAuth refresh needs SYNC_HUBSPOT__CLIENT_ID and SYNC_HUBSPOT__CLIENT_SECRET"
            )
        self._current_mappings = mappings_source(mappings)
        self._clock = clock
        self._client_secret = client_secret
        self._accept_v1 = accept_signature_v1
        self._oauth_api = (
            ApiClient(
                f"{SOURCE}-oauth", base_url, transport=transport, sleep=sleep, max_attempts=max_attempts
            )
            if refresh_token is not None
            else None
        )
        self._tokens = TokenSource(
            token=token,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            oauth_api=self._oauth_api,
            clock=clock,
            margin=refresh_margin,
        )
        self._api = ApiClient(
            SOURCE,
            base_url,
            auth=BearerAuth(self._tokens),
            limiter=limiter,
            transport=transport,
            sleep=sleep,
            max_attempts=max_attempts,
        )
        self._stages: list[SourceStage] | None = None
        self._link_systems = tuple(link_systems)
        self._properties = deal_properties(self._link_systems)
        self._has_identity: dict[str, bool] = {}

    @property
    def _mappings(self) -> Mappings:
        """The mappings in force now (a hot reload takes effect from the next translation on)."""
        return self._current_mappings()

    def __repr__(self) -> str:
        return f"HubSpotConnector({self._api!r})"

    def close(self) -> None:
        self._api.close()
        if self._oauth_api is not None:
            self._oauth_api.close()

    # -- HTTP -------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        bucket: str = "default",
    ) -> ApiResponse:
        """One API call; after a 401 an OAuth token is refreshed and the call made once more."""
        try:
            return self._api.request(method, path, params=params, json_body=json_body, bucket=bucket)
        except AuthError:
            if not self._tokens.invalidate():
                raise
        return self._api.request(method, path, params=params, json_body=json_body, bucket=bucket)

    # -- Pipelines --------------------------------------------------------------------------------

    def list_stages(self) -> list[SourceStage]:
        """Every stage of every deal pipeline (``GET /crm/v3/pipelines/deals``)."""
        response = self._request("GET", "/crm/v3/pipelines/deals")
        if not isinstance(response.data, dict):
            raise PermanentError("hubspot: pipelines answer is not an object")
        self._stages = stages_from_pipelines(response.data)
        return list(self._stages)

    def _known_stages(self) -> list[SourceStage]:
        if self._stages is None:
            return self.list_stages()
        return self._stages

    # -- Pull -------------------------------------------------------------------------------------

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Pages of ``deals`` modified since the cursor, or of ``deals_archived`` (status deleted)."""
        if stream == "deals":
            return self._pull_modified(cursor)
        if stream == "deals_archived":
            return self._pull_archived(cursor)
        raise PermanentError(f"hubspot: unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")

    def _search_body(self, since_ms: int, after: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(since_ms)}
                    ]
                }
            ],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": list(self._properties),
            "limit": SEARCH_LIMIT,
        }
        if after is not None:
            body["after"] = after
        return body

    def _pull_modified(self, raw_cursor: str | None) -> Iterator[PullPage]:
        position = _SearchCursor.decode(raw_cursor)
        window_start = position.ts
        after: str | None = None
        while True:
            body = self._search_body(window_start, after)
            try:
                response = self._request("POST", SEARCH_PATH, json_body=body, bucket="search")
            except PermanentError as exc:
                # Past 10,000 results HubSpot answers 400: re-slice from the last seen instant.
                if exc.status != 400 or after is None or position.ts <= window_start:
                    raise
                window_start, after = position.ts, None
                continue
            records: list[CanonicalRecord] = []
            ts, ids = position.ts, set(position.ids)
            for item in _results(response, "search"):
                record = to_canonical(item, self._mappings)
                modified = parse_hubspot_datetime((item.get("properties") or {}).get("hs_lastmodifieddate"))
                stamp = _ms(modified or record.updated_at)
                if stamp < ts or (stamp == ts and record.external_id in ids):
                    continue  # already delivered (same instant as the cursor) or stale
                if stamp > ts:
                    ts, ids = stamp, set()
                ids.add(record.external_id)
                records.append(record)
            records = self._with_contact_emails(records)
            position = _SearchCursor(ts, frozenset(ids))
            next_after = _next_after(response)
            if next_after is None:
                yield PullPage("deals", tuple(records), position.encode(), done=True)
                return
            if next_after.isdigit() and int(next_after) >= SEARCH_MAX_RESULTS:
                if position.ts <= window_start:
                    raise PermanentError(
                        "hubspot: more than 10,000 deals share one hs_lastmodifieddate; cannot page past them"
                    )
                window_start, after = position.ts, None
            else:
                after = next_after
            yield PullPage("deals", tuple(records), position.encode(), done=False)

    def _pull_archived(self, raw_cursor: str | None) -> Iterator[PullPage]:
        try:
            state = json.loads(raw_cursor) if raw_cursor else {}
            since = int(state.get("since", 0))
            newest = int(state.get("max", since))
            after = state.get("after")
        except (ValueError, TypeError, AttributeError) as exc:
            raise PermanentError("hubspot: the deals_archived cursor is not a valid cursor") from exc
        while True:
            params: dict[str, Any] = {
                "archived": "true",
                "limit": LIST_LIMIT,
                "properties": ",".join(self._properties),
            }
            if after:
                params["after"] = str(after)
            response = self._request("GET", DEALS_PATH, params=params)
            records: list[CanonicalRecord] = []
            for item in _results(response, "archived deals"):
                record = to_canonical({**item, "archived": True}, self._mappings)
                stamp = _ms(record.updated_at)
                # >= rather than >: a deal archived in the same ms as the cursor is sent twice, never missed.
                if stamp >= since:
                    records.append(record)
                    newest = max(newest, stamp)
            after = _next_after(response)
            if after is None:
                cursor = json.dumps({"since": newest}, separators=(",", ":"))
                yield PullPage("deals_archived", tuple(records), cursor, done=True)
                return
            cursor = json.dumps({"since": since, "max": newest, "after": after}, separators=(",", ":"))
            yield PullPage("deals_archived", tuple(records), cursor, done=False)

    def read_deals(self, ids: Sequence[str]) -> list[CanonicalRecord]:
        """Look deals up by id (``batch/read``, 100 at a time); ids HubSpot does not know are left out."""
        out: list[CanonicalRecord] = []
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            body = {"properties": list(self._properties), "inputs": [{"id": str(i)} for i in chunk]}
            response = self._request("POST", f"{DEALS_PATH}/batch/read", json_body=body)
            records = [to_canonical(item, self._mappings) for item in _results(response, "batch read")]
            out.extend(self._with_contact_emails(records))
        return out

    def _with_contact_emails(self, records: list[CanonicalRecord]) -> list[CanonicalRecord]:
        """``records`` with ``contact_email`` from each deal's associated contact (batched lookups)."""
        emails = identity.deal_contact_emails(self._request, [r.external_id for r in records])
        return identity.with_contact_emails(records, emails)

    # -- Push -------------------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Batched ``batch/update`` and ``batch/create`` calls; one result per update, in order."""
        return push.apply_updates(
            self._request,
            updates,
            self._mappings,
            self._known_stages,
            identity_property=self._identity_property,
            find_contacts=self._find_contacts,
        )

    def remove_records(self, removals: Sequence[RecordRemoval]) -> list[UpdateResult]:
        """Archive deals (``batch/archive``; HubSpot's delete is an archive); see :mod:`.removal`."""
        return removal.remove_records(self._request, removals)

    def _identity_property(self, system: str) -> bool:
        """Whether ``system``'s link-id property exists (False for a system not linked); asked once."""
        if system not in self._link_systems:
            return False
        if system not in self._has_identity:
            self._has_identity[system] = identity.identity_property_exists(self._request, system)
        return self._has_identity[system]

    def _find_contacts(self, emails: Sequence[str]) -> Mapping[str, str]:
        return identity.contacts_by_email(self._request, emails)

    def ensure_flag_properties(self) -> list[str]:
        """Create the leak-flag property group and properties that are missing; names created."""
        return push.ensure_flag_properties(self._request)

    def ensure_identity_properties(self) -> list[str]:
        """Create the link-id deal property of each linked system (and their group) when missing."""
        created = identity.ensure_identity_properties(self._request, self._link_systems)
        self._has_identity.update(dict.fromkeys(self._link_systems, True))
        return created

    # -- Webhooks ---------------------------------------------------------------------------------

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Inbox events -> records, the deals of the batch read together (:mod:`.inbox`)."""
        return inbox.normalise_events(events, ctx, self.read_deals)

    def prepare(self) -> list[str]:
        """Create the leak-flag and link-id deal properties the service writes, when missing."""
        return [*self.ensure_flag_properties(), *self.ensure_identity_properties()]

    def verify_webhook(self, request: WebhookRequest) -> None:
        """Check the v3 signature (or v1 when accepted); :class:`SignatureError` otherwise."""
        secret = self._client_secret.get_secret_value() if self._client_secret is not None else None
        verify_signature(request, secret, now=self._clock(), accept_v1=self._accept_v1)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        """The events of one delivery; :class:`PayloadError` when malformed."""
        return parse_events(body)


def from_section(
    hub: HubSpotSettings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = _utcnow,
) -> HubSpotConnector:
    """Build the connector from its settings section; :class:`ConfigError` when it is not configured."""
    limits = {
        "default": Limit(hub.rate_limit_per_10s, 10.0),
        "search": Limit(hub.search_rate_limit_per_s, 1.0),
    }
    return HubSpotConnector(
        mappings,
        token=hub.token,
        client_id=hub.client_id,
        client_secret=hub.client_secret,
        refresh_token=hub.refresh_token,
        base_url=str(hub.base_url),
        accept_signature_v1=hub.accept_signature_v1,
        link_systems=hub.link_systems,
        transport=transport,
        limiter=limiter or LocalRateLimiter(limits, sleep=sleep, reader=read_limits),
        sleep=sleep,
        clock=clock,
    )


def from_settings(
    settings: Settings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = _utcnow,
) -> HubSpotConnector:
    """:func:`from_section` with the service settings' ``hubspot`` section."""
    return from_section(
        settings.section(SOURCE, HubSpotSettings),
        mappings,
        transport=transport,
        limiter=limiter,
        sleep=sleep,
        clock=clock,
    )
