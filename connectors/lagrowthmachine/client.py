"""The LaGrowthMachine connector: pulls lead statuses and replies, pushes lead statuses.

See the package docstring for the API pages followed and for what is documented versus assumed.

Streams (``pull_changes``):

- ``lead_statuses``: a sweep over every campaign (``GET /campaigns``, ``skip``/``limit``), sorted by
  campaign id, reading ``GET /campaigns/:campaignId/statsleads`` page by page with the
  ``getLeadsAfter`` lead-id cursor. The persisted cursor is ``{"campaign": id, "after": lead_id}``
  (JSON); the last page of a sweep carries ``None`` so the next pull starts a fresh sweep (lead
  statuses carry no modification time, so there is no "changed since").
- ``replies``: the inbox conversation search, paged with its opaque ``searchAfter`` token. The
  cursor is the last token the API returned; an incoming message becomes an "a lead replied" record.

The API key goes into the ``apikey`` query parameter inside an :class:`httpx.Auth`, at request
time. It never reaches a message: :class:`ApiClient` messages omit query strings, the response's
request (used by httpx error messages chained as ``__cause__``) is rewritten with the key masked,
and a log filter masks it in httpx's own request log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.lagrowthmachine import inbox
from connectors.lagrowthmachine.convert import (
    SOURCE,
    from_canonical,
    is_deleted,
    is_incoming,
    lead_to_canonical,
    parse_id,
    reply_to_canonical,
)
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from connectors.lagrowthmachine.webhooks import parse_body, verify_token
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import AuthError, ConfigError, PermanentError, TransientError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.mappings import Mappings, MappingsSource, mappings_source
from sync_worker.ratelimit import Limit, LocalRateLimiter
from sync_worker.settings import Settings
from sync_worker.store.models import InboxEvent

__all__ = [
    "API_KEY_PARAM",
    "LEAD_STATUSES",
    "RATE_LIMIT_BUCKET",
    "STREAM_LEAD_STATUSES",
    "STREAM_REPLIES",
    "LaGrowthMachineConnector",
    "from_settings",
]

API_KEY_PARAM = "apikey"
RATE_LIMIT_BUCKET = "lagrowthmachine"
RATE_LIMIT_WINDOW_SECONDS = 10.0
STREAM_LEAD_STATUSES = "lead_statuses"
STREAM_REPLIES = "replies"
_STATUS_PIPELINE = "lead_status"
_MASK = "REDACTED"

LEAD_STATUSES: tuple[str, ...] = (
    "CONTACTED",
    "TO_QUALIFY",
    "INTERESTED",
    "CALL_BOOKED",
    "NEGOTIATING",
    "READY_TO_BUY",
    "CONVERTED",
    "NOT_INTERESTED",
    "WRONG_TARGET",
    "WRONG_TIMING",
    "OUT_OF_OFFICE",
    "COMPLETED_WITHOUT_REPLY",
)
"""Lead statuses LaGrowthMachine offers (listed by ``list_stages``; mapped only in the YAML)."""


def _mask_url(url: httpx.URL) -> httpx.URL:
    if API_KEY_PARAM not in url.params:
        return url
    return url.copy_set_param(API_KEY_PARAM, _MASK)


class _ApiKeyAuth(httpx.Auth):
    """Adds ``apikey`` to the query at send time; masks it on the request the response keeps."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_ApiKeyAuth(apikey=********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_set_param(API_KEY_PARAM, self._key.get_secret_value())
        response = yield request
        response.request = httpx.Request(
            request.method, _mask_url(request.url), headers=request.headers, extensions=request.extensions
        )


class _MaskApiKeyFilter(logging.Filter):
    """Masks ``apikey`` in the URL httpx logs for every request ("HTTP Request: GET <url> ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_mask_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskApiKeyFilter) for f in logger.filters):
        logger.addFilter(_MaskApiKeyFilter())


def _decode_cursor(cursor: str | None) -> tuple[str | None, str | None]:
    if cursor is None:
        return None, None
    try:
        data = json.loads(cursor)
        campaign, after = data["campaign"], data.get("after")
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"lagrowthmachine: cursor for {STREAM_LEAD_STATUSES} is not valid") from exc
    if not isinstance(campaign, str) or not (after is None or isinstance(after, str)):
        raise ConfigError(f"lagrowthmachine: cursor for {STREAM_LEAD_STATUSES} is not valid")
    return campaign, after


def _encode_cursor(campaign: str, after: str | None) -> str:
    return json.dumps({"campaign": campaign, "after": after}, separators=(",", ":"), sort_keys=True)


def _shape_error(what: str) -> PermanentError:
    return PermanentError(f"lagrowthmachine: unexpected response shape for {what}")


class LaGrowthMachineConnector:
    """LaGrowthMachine as an outreach source (replies, lead statuses) and a status target."""

    name = SOURCE
    streams = (STREAM_LEAD_STATUSES, STREAM_REPLIES)

    def __init__(
        self,
        settings: LaGrowthMachineSettings,
        mappings: Mappings | MappingsSource,
        *,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        page_size: int = 25,
        max_attempts: int = 4,
    ) -> None:
        if settings.api_key is None or not settings.api_key.get_secret_value():
            raise ConfigError(
                "SYNC_LAGROWTHMACHINE__API_KEY is not set: the LaGrowthMachine connector is off"
            )
        self._settings = settings
        self._current_mappings = mappings_source(mappings)
        self._clock = clock
        self._page_size = page_size
        self.rate_limit = (settings.rate_limit_per_10s, RATE_LIMIT_WINDOW_SECONDS)
        """Budget for the shared limiter: (calls, per seconds); documented as 50 per 10 s."""
        _install_log_filter()
        self._api = ApiClient(
            SOURCE,
            str(settings.base_url),
            auth=_ApiKeyAuth(settings.api_key),
            limiter=limiter,
            transport=transport,
            sleep=sleep,
            max_attempts=max_attempts,
        )

    def __repr__(self) -> str:
        return f"LaGrowthMachineConnector({str(self._settings.base_url)!r})"

    @property
    def mappings(self) -> Mappings:
        return self._mappings

    @mappings.setter
    def mappings(self, value: Mappings) -> None:
        """Swap in fixed mappings; translation uses them from the next record on."""
        self._current_mappings = mappings_source(value)

    @property
    def _mappings(self) -> Mappings:
        """The mappings in force now (a hot reload takes effect from the next translation on)."""
        return self._current_mappings()

    def close(self) -> None:
        self._api.close()

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._api.request("GET", path, params=params, bucket=RATE_LIMIT_BUCKET).data

    # -- reading -------------------------------------------------------------------------------

    def list_campaigns(self) -> list[dict[str, Any]]:
        """Every campaign (``GET /campaigns`` paged with ``skip``/``limit``), sorted by id."""
        campaigns: list[dict[str, Any]] = []
        skip = 0
        while True:
            data = self._get("/campaigns", {"skip": skip, "limit": self._page_size})
            items = data.get("campaigns") if isinstance(data, dict) else data
            if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
                raise _shape_error("GET /campaigns")
            campaigns.extend(items)
            if len(items) < self._page_size:
                break
            skip += len(items)
        for campaign in campaigns:
            campaign["id"] = parse_id(campaign.get("id"), "campaign.id")
        return sorted(campaigns, key=lambda c: str(c["id"]))

    def list_stages(self) -> list[SourceStage]:
        return [
            SourceStage(SOURCE, _STATUS_PIPELINE, "Lead status", status, status, order)
            for order, status in enumerate(LEAD_STATUSES)
        ]

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        if stream == STREAM_LEAD_STATUSES:
            return self._pull_lead_statuses(cursor)
        if stream == STREAM_REPLIES:
            return self._pull_replies(cursor)
        raise ConfigError(f"lagrowthmachine: unknown stream {stream!r} (known: {', '.join(self.streams)})")

    def _lead_page(self, campaign_id: str, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        params = {"getLeadsAfter": after} if after else None
        data = self._get(f"/campaigns/{campaign_id}/statsleads", params)
        if isinstance(data, dict):
            leads, has_more = data.get("leads"), data.get("hasMore")
        else:
            leads = data
            has_more = bool(data) and isinstance(data, list) and isinstance(data[-1], dict)
            has_more = has_more and data[-1].get("hasMore") is True
        if not isinstance(leads, list) or not all(isinstance(lead, dict) for lead in leads):
            raise _shape_error("GET /campaigns/:campaignId/statsleads")
        return leads, has_more is True and bool(leads)

    def _pull_lead_statuses(self, cursor: str | None) -> Iterator[PullPage]:
        start_campaign, after = _decode_cursor(cursor)
        campaigns = [c["id"] for c in self.list_campaigns()]
        if start_campaign is not None:
            campaigns = [c for c in campaigns if c >= start_campaign]
            if not campaigns or campaigns[0] != start_campaign:
                after = None
        if not campaigns:
            yield PullPage(STREAM_LEAD_STATUSES, (), None, True)
            return
        for index, campaign_id in enumerate(campaigns):
            is_last_campaign = index == len(campaigns) - 1
            while True:
                leads, has_more = self._lead_page(campaign_id, after)
                observed_at = self._clock()
                records: list[CanonicalRecord] = []
                for lead in leads:
                    if lead.get("status") is None and not is_deleted(lead):
                        continue  # in the sequence but not qualified yet: no status to carry
                    records.append(
                        lead_to_canonical(
                            lead, self._mappings, observed_at=observed_at, campaign_id=campaign_id
                        )
                    )
                if has_more:
                    after = parse_id(leads[-1].get("id"), "lead.id")
                    yield PullPage(
                        STREAM_LEAD_STATUSES, tuple(records), _encode_cursor(campaign_id, after), False
                    )
                    continue
                after = None
                if is_last_campaign:
                    yield PullPage(STREAM_LEAD_STATUSES, tuple(records), None, True)
                else:
                    next_cursor = _encode_cursor(campaigns[index + 1], None)
                    yield PullPage(STREAM_LEAD_STATUSES, tuple(records), next_cursor, False)
                break

    def _pull_replies(self, cursor: str | None) -> Iterator[PullPage]:
        token = cursor
        while True:
            params: dict[str, Any] = {"limit": self._page_size}
            if token:
                params["searchAfter"] = token
            data = self._get("/inbox/conversations/search", params)
            if not isinstance(data, dict):
                raise _shape_error("GET /inbox/conversations/search")
            items = data.get("conversations")
            next_token = data.get("searchAfter")
            if not isinstance(items, list) or not (next_token is None or isinstance(next_token, str)):
                raise _shape_error("GET /inbox/conversations/search")
            records = [self._reply(item) for item in items]
            replies = tuple(r for r in records if r is not None)
            done = not next_token or next_token == token or len(items) < self._page_size
            token = next_token or token
            yield PullPage(STREAM_REPLIES, replies, token, done)
            if done:
                return

    def _reply(self, item: object) -> CanonicalRecord | None:
        if not isinstance(item, dict):
            raise _shape_error("GET /inbox/conversations/search")
        last = item.get("lastMessage")
        message: dict[str, Any] = dict(last) if isinstance(last, dict) else dict(item)
        for key in ("leadId", "campaignId", "lead"):
            if key not in message and key in item:
                message[key] = item[key]
        if not is_incoming(message):
            return None
        return reply_to_canonical(message, self._mappings)

    # -- writing -------------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Push each update as ``POST /leads/status`` over every campaign (by name).

        The API answers with one log per campaign (``leadUpdated``, ``leadStatus``, ``reason``);
        an update succeeds when a campaign took the status or already had it. :class:`AuthError`
        propagates (every update would fail the same way); other failures become results.
        """
        if not updates:
            return []
        try:
            names = [str(c["name"]) for c in self.list_campaigns() if c.get("name")]
        except AuthError:
            raise
        except (TransientError, PermanentError) as exc:
            retryable = isinstance(exc, TransientError)
            return [
                UpdateResult(u.idempotency_key, False, u.external_id, str(exc), retryable) for u in updates
            ]
        return [self._apply_one(update, names) for update in updates]

    def _apply_one(self, update: CanonicalUpdate, campaigns: list[str]) -> UpdateResult:
        try:
            form = from_canonical(update, self._mappings, campaigns=campaigns)
        except PermanentError as exc:
            return UpdateResult(update.idempotency_key, False, update.external_id, str(exc), False)
        try:
            data = self._api.request("POST", "/leads/status", form=form, bucket=RATE_LIMIT_BUCKET).data
        except AuthError:
            raise
        except TransientError as exc:
            return UpdateResult(update.idempotency_key, False, update.external_id, str(exc), True)
        except PermanentError as exc:
            return UpdateResult(update.idempotency_key, False, update.external_id, str(exc), False)
        logs = data.get("logs") if isinstance(data, dict) else None
        if not isinstance(logs, list):
            return UpdateResult(update.idempotency_key, True, update.external_id, updated_at=self._clock())
        wanted = form["status"]
        if any(
            isinstance(log, dict) and (log.get("leadUpdated") is True or log.get("leadStatus") == wanted)
            for log in logs
        ):
            return UpdateResult(update.idempotency_key, True, update.external_id, updated_at=self._clock())
        reasons = sorted(
            {str(log.get("reason")) for log in logs if isinstance(log, dict) and log.get("reason")}
        )
        error = "lagrowthmachine: no campaign took the status" + (
            f": {'; '.join(reasons)[:300]}" if reasons else ""
        )
        return UpdateResult(update.idempotency_key, False, update.external_id, error, False)

    # -- webhooks ------------------------------------------------------------------------------

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Inbox events -> lead records; a received message is a reply (:mod:`.inbox`)."""
        return inbox.normalise_events(events, ctx)

    def prepare(self) -> list[str]:
        """Nothing to create in LaGrowthMachine."""
        return []

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_token(request, self._settings.webhook_secret)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_body(body)


def from_section(
    section: LaGrowthMachineSettings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LaGrowthMachineConnector:
    """Build the connector from its settings section; :class:`ConfigError` when the key is unset."""
    return LaGrowthMachineConnector(
        section,
        mappings,
        transport=transport,
        limiter=limiter
        or LocalRateLimiter({"default": Limit(section.rate_limit_per_10s, 10.0)}, sleep=sleep),
        sleep=sleep,
    )


def from_settings(
    settings: Settings,
    mappings: Mappings | MappingsSource,
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LaGrowthMachineConnector:
    """:func:`from_section` with the service settings' ``lagrowthmachine`` section."""
    return from_section(
        settings.section(SOURCE, LaGrowthMachineSettings),
        mappings,
        transport=transport,
        limiter=limiter,
        sleep=sleep,
    )
