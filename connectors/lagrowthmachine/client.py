"""The LaGrowthMachine connector: pulls lead statuses and replies, pushes lead statuses.

Followed as the vendor's own clients speak the API (facts, with the files that show them):

- ``LaGrowthMachine/n8n-nodes-lagrowthmachine``, ``credentials/LaGrowthMachineApi.credentials.ts``:
  the key is accepted as ``Authorization: Bearer``, ``x-api-key`` or ``?apikey=``, "equivalent";
  the node sends the Bearer header, and so does this connector (``LaGrowthMachine/lgm-mcp-server``,
  ``src/callFlow.ts``, does the same). A header keeps the key out of URLs and their logs.
- ``nodes/LaGrowthMachine/GenericFunctions.ts`` and ``LaGrowthMachine.node.ts``:
  ``GET /campaigns`` paged with ``skip``/``limit`` (at most 25; "higher values return empty"),
  answering ``{"campaigns": [...]}``; ``GET /campaigns/{id}/statsleads`` paged with
  ``getLeadsAfter=<last lead id>``, answering ``{"leads": [...], "hasMore"}``; ``GET
  /conversations/search`` paged with ``searchAfter=<nextToken>``, answering ``{"data": [...],
  "hasMore", "nextToken"}`` (more while ``hasMore`` and a token); ``GET
  /conversations/{id}/messages?page=N`` answering ``{"data": [...], "total"}``; ``POST
  /leads/status`` form-encoded with ``status``, ``campaign`` (a name, repeated, or ``all``) and a
  lead identifier.
- ``src/tools.ts`` (lgm-mcp-server): a budget of 50 calls per 10 seconds.

Streams (``pull_changes``):

- ``lead_statuses``: a sweep over every campaign sorted by id, reading each campaign's lead stats
  page by page. The persisted cursor is ``{"campaign": id, "after": lead_id}`` (JSON); the last page
  of a sweep carries ``None`` so the next pull starts a fresh sweep (lead statuses carry no
  modification time, so there is no "changed since").
- ``replies``: the conversation search filtered on ``leadReplied=true`` and sorted by
  ``lastMessageAt`` ascending (the node's own filter and sort options), so a conversation that
  changes moves past the saved token. The cursor is the last ``nextToken`` the API gave. A
  conversation whose last message is the lead's (``lastMessageStatus: RECEIVED``) is a reply at
  ``lastMessageAt``; one where the lead replied but someone answered since has its messages read to
  date the reply. Assumed (UNCONFIRMED): the items' field names, taken from the node's filters.

Status push: ``campaign=all`` (a won or lost deal stops every sequence). The outcome is judged from
the documented answer ``{"logs": [{"campaign", "leadStatus", "leadUpdated", "reason"}]}`` when the
body has it, and from the HTTP status alone otherwise; the result and the log line say which.
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
    parse_timestamp,
    reply_message,
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
    "LEAD_STATUSES",
    "RATE_LIMIT_BUCKET",
    "STREAM_LEAD_STATUSES",
    "STREAM_REPLIES",
    "LaGrowthMachineConnector",
    "from_settings",
]

RATE_LIMIT_BUCKET = "lagrowthmachine"
RATE_LIMIT_WINDOW_SECONDS = 10.0
STREAM_LEAD_STATUSES = "lead_statuses"
STREAM_REPLIES = "replies"
_STATUS_PIPELINE = "lead_status"
_CAMPAIGN_PAGE_MAX = 25
_SEARCH = "/conversations/search"
_log = logging.getLogger(__name__)

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


class _BearerAuth(httpx.Auth):
    """Sends the API key as ``Authorization: Bearer`` at request time; never shown in a repr."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_BearerAuth(key=********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request


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
        self._api = ApiClient(
            SOURCE,
            str(settings.base_url),
            auth=_BearerAuth(settings.api_key),
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
        limit = min(self._page_size, _CAMPAIGN_PAGE_MAX)
        while True:
            data = self._get("/campaigns", {"skip": skip, "limit": limit})
            items = data.get("campaigns") if isinstance(data, dict) else data
            if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
                raise _shape_error("GET /campaigns")
            campaigns.extend(items)
            if len(items) < limit:
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
            params: dict[str, Any] = {
                "limit": self._page_size,
                "leadReplied": "true",
                "sortField": "lastMessageAt",
                "sortDirection": 1,
            }
            if token:
                params["searchAfter"] = token
            data = self._get(_SEARCH, params)
            if not isinstance(data, dict):
                raise _shape_error(f"GET {_SEARCH}")
            items, has_more, next_token = data.get("data"), data.get("hasMore"), data.get("nextToken")
            if not isinstance(items, list) or not (next_token is None or isinstance(next_token, str)):
                raise _shape_error(f"GET {_SEARCH}")
            records = [self._reply(item) for item in items]
            replies = tuple(r for r in records if r is not None)
            done = has_more is not True or not next_token or next_token == token
            token = next_token or token
            yield PullPage(STREAM_REPLIES, replies, token, done)
            if done:
                return

    def _reply(self, item: object) -> CanonicalRecord | None:
        if not isinstance(item, dict):
            raise _shape_error(f"GET {_SEARCH}")
        message = reply_message(item)
        if message is None and item.get("leadReplied") is True and item.get("id") is not None:
            message = self._latest_reply(parse_id(item["id"], "conversation.id"), item)
        if message is None:
            return None
        return reply_to_canonical(message, self._mappings)

    def _latest_reply(self, conversation_id: str, conversation: Mapping[str, Any]) -> dict[str, Any] | None:
        """The lead's latest message in a conversation (``GET /conversations/{id}/messages``)."""
        path = f"/conversations/{conversation_id}/messages"
        seen: list[dict[str, Any]] = []
        page = 0
        while True:
            data = self._get(path, {"page": page})
            items = data.get("data") if isinstance(data, dict) else None
            if not isinstance(items, list) or not all(isinstance(m, dict) for m in items):
                raise _shape_error("GET /conversations/:id/messages")
            seen.extend(items)
            total = data.get("total") if isinstance(data, dict) else None
            if not items or not isinstance(total, int) or len(seen) >= total:
                break
            page += 1
        incoming = [m for m in seen if is_incoming(m) and m.get("createdAt") is not None]
        if not incoming:
            return None
        latest = max(incoming, key=lambda m: parse_timestamp(m["createdAt"], "message.createdAt"))
        found = {**latest, "conversationId": conversation_id, "received": True}
        for key in ("leadId", "campaignId", "lead"):
            if found.get(key) is None and conversation.get(key) is not None:
                found[key] = conversation[key]
        return found

    # -- writing -------------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Push each update as ``POST /leads/status`` with ``campaign=all``.

        :class:`AuthError` propagates (every update would fail the same way); other failures become
        results whose error says whether the documented answer or the HTTP status decided.
        """
        return [self._apply_one(update) for update in updates]

    def _apply_one(self, update: CanonicalUpdate) -> UpdateResult:
        key, external_id = update.idempotency_key, update.external_id
        try:
            form = from_canonical(update, self._mappings)
        except PermanentError as exc:
            return UpdateResult(key, False, external_id, str(exc), False)
        try:
            data = self._api.request("POST", "/leads/status", form=form, bucket=RATE_LIMIT_BUCKET).data
        except AuthError:
            raise
        except (TransientError, PermanentError) as exc:
            error = f"lagrowthmachine: status push failed (from the HTTP status alone): {exc}"
            return UpdateResult(key, False, external_id, error, isinstance(exc, TransientError))
        logs = data.get("logs") if isinstance(data, dict) else None
        if not isinstance(logs, list) or not all(isinstance(log, dict) for log in logs):
            _log.info(
                "lagrowthmachine: status push for %s judged from the HTTP status alone "
                "(2xx, answer without a logs list)",
                external_id,
            )
            return UpdateResult(key, True, external_id, updated_at=self._clock())
        wanted = form["status"]
        if any(log.get("leadUpdated") is True or log.get("leadStatus") == wanted for log in logs):
            return UpdateResult(key, True, external_id, updated_at=self._clock())
        reasons = sorted({str(log["reason"]) for log in logs if log.get("reason")})
        error = "lagrowthmachine: status push failed (from the documented answer): no campaign took it" + (
            f": {'; '.join(reasons)[:300]}" if reasons else ""
        )
        return UpdateResult(key, False, external_id, error, False)

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
        """Events of an authenticated delivery; an unrecognised shape is an unhandled event."""
        return parse_body(body, received_at=self._clock())


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
