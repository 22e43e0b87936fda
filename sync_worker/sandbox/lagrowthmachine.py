"""A local LaGrowthMachine (LGM): campaigns, lead stats, lead search and status, inbox and its webhooks.

State lives in memory in :class:`LaGrowthMachineSandbox` (thread-safe); :func:`create_app` serves it
under ``/flow`` like ``https://apiv2.lagrowthmachine.com/flow``.

Followed as the vendor's own clients speak the API (facts): ``LaGrowthMachine/n8n-nodes-lagrowthmachine``
(``credentials/LaGrowthMachineApi.credentials.ts``, ``nodes/LaGrowthMachine/GenericFunctions.ts``,
``nodes/LaGrowthMachine/LaGrowthMachine.node.ts``, ``descriptions/ConversationDescription.ts``,
``descriptions/LeadDescription.ts``, ``nodes/LaGrowthMachineTrigger/LaGrowthMachineTrigger.node.ts``)
and ``LaGrowthMachine/lgm-mcp-server`` (``src/callFlow.ts``, ``src/tools.ts``); the API reference
https://documenter.getpostman.com/view/2071164/TVCmSkH2 and the help centre https://help.lagrowthmachine.com/en/.

- base URL ``/flow``; the API key as ``Authorization: Bearer <key>``, an ``x-api-key`` header or the
  ``apikey`` query parameter, all equivalent;
- ``GET /members`` (``[{id, name, label}]``), ``GET /identities``;
- ``GET /campaigns?skip=&limit=`` answering ``{"campaigns": [...]}``; at most 25 a page, and a higher
  ``limit`` answers an empty list; ``GET /campaigns/{id}`` answering ``{"campaign": {...}}``;
- ``GET /campaigns/{id}/statsleads``: ``{"leads": [...], "hasMore"}``, 25 leads a page, paged forward
  with ``getLeadsAfter=<last lead id>``;
- ``GET /leads/search`` by ``email``, ``linkedinUrl`` or ``leadId``;
- ``POST /leads/status`` (form-encoded) with ``status``, ``campaign`` (a campaign name, repeated for
  several, or ``all``) and a lead identifier (``proEmail``, ``persoEmail``, ``linkedinUrl``, ...);
- ``GET /conversations/search`` with the node's filters (``leadReplied``, ``leadIds``,
  ``campaignIds``, ``lastMessageStatus``, ``sortField=lastMessageAt``, ``sortDirection`` -1/1,
  ``limit``) paged with ``searchAfter=<nextToken>`` (a Base64 token), answering ``{"data": [...],
  "hasMore", "nextToken"}``; ``GET /leads/{id}/conversations`` answering ``{"data": [...]}``;
  ``GET /conversations/{id}/messages?page=N`` answering ``{"data": [...], "total"}``;
- inbox webhooks: ``GET/POST /inboxWebhooks`` (``url``, ``name``, ``description``, ``campaigns``:
  ids, empty or ``["all"]`` for all) and ``DELETE /inboxWebhooks/{id}``; a delivery is the published
  ``INBOX_MESSAGE`` body ``{"type", "messageChannel", "lead": {"id", "linkedinUrl", "email"},
  "messages": [{"id", "content", "direction": "INCOMING" | "OUTGOING", "createdAt"}]}``;
- the rate limit: 50 calls per 10 seconds per API key (``src/tools.ts``), then 429 with ``Retry-After``.

Assumed (the vendor is silent; kept conservative and easy to change):

- error bodies ``{"error": "<message>"}``; a missing or wrong key answers 401;
- camelCase fields, ISO-8601 UTC times with milliseconds, 24-hex ids; a conversation search item
  carries the fields the node filters on (``leadId``, ``campaignId``, ``identityId``,
  ``lastMessageAt`` in epoch ms, ``lastMessageStatus`` ``RECEIVED``/``SENT``, ``lastMessageType``,
  ``leadReplied``, ``status``, ``read``) plus the ``lead``; ``nextToken`` comes with every non-empty
  page; ``POST /leads/status`` answers ``{"logs": [{campaign, campaignId, leadId, leadStatus,
  leadUpdated, reason}]}``, one log per campaign;
- the webhook's ``lead`` also carries ``firstname``, ``lastname`` and ``companyName`` (the published
  receiver reads only ``id``, ``linkedinUrl`` and ``email``; the connector copes without the rest);
- messages are stored with ``direction`` ``INBOUND``/``OUTBOUND`` and served as ``INCOMING``/``OUTGOING``;
- LGM documents no signature, so the receiving service authenticates deliveries with a ``token`` query
  parameter it put in the registered URL. No retry is documented, so by default none is made;
- a lead's status in a campaign starts as ``CONTACTED`` and turns ``TO_QUALIFY`` when the lead replies
  (help centre: https://help.lagrowthmachine.com/en/articles/7238523-how-to-qualify-my-leads-in-lgm).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_worker.sandbox.common import (
    CallCounter,
    FaultConfig,
    Faults,
    Handler,
    SandboxApiError,
    WebhookDeliverer,
    WindowRateLimiter,
    admin_routes,
    counted_route,
)

__all__ = ["LEAD_STATUSES", "LaGrowthMachineSandbox", "LgmApiError", "create_app"]

LEAD_STATUSES = frozenset(
    {
        "CONTACTED",
        "TO_QUALIFY",
        "INTERESTED",
        "CALL_BOOKED",
        "NEGOTIATING",
        "READY_TO_BUY",
        "CONVERTED",
        "NOT_INTERESTED",
        "NOTINTERESTED",
        "WRONG_TARGET",
        "WRONG_TIMING",
        "OUT_OF_OFFICE",
        "COMPLETED_WITHOUT_REPLY",
    }
)
"""Per-campaign lead statuses (tags). ``CONVERTED`` and ``NOTINTERESTED`` appear in the API reference's
examples; the others are the help centre's tag list; a reply sets ``TO_QUALIFY`` ("When a lead replies,
it is automatically assigned the To qualify tag")."""

_PAGE = 25


class LgmApiError(SandboxApiError):
    """An API request refused with ``status`` and a message."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class LaGrowthMachineSandbox:
    """One LGM workspace in memory. :meth:`simulate_reply` makes a lead answer and fires inbox webhooks."""

    def __init__(
        self,
        *,
        api_key: str,
        rate_limit: int = 50,
        rate_window_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        faults: FaultConfig | Faults | None = None,
        time_scale: float = 1.0,
        retry_delays: Iterable[float] = (),
    ) -> None:
        self._api_key = api_key
        self._now = now
        self._lock = threading.RLock()
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.limiter = WindowRateLimiter(rate_limit, rate_window_seconds, clock)
        self.calls = CallCounter()
        self.deliverer = WebhookDeliverer(
            retry_delays=tuple(retry_delays), time_scale=time_scale, faults=self.faults
        )
        self._counter = 0
        self.members = [{"id": self._oid(), "name": "Sandbox M.", "label": "Sandbox M."}]
        self.identities = [{"id": self._oid(), "name": "Sandbox Sender", "type": "EMAIL"}]
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.leads: dict[str, dict[str, Any]] = {}
        self.memberships: dict[tuple[str, str], dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self.inbox_webhooks: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"LaGrowthMachineSandbox(leads={len(self.leads)}, campaigns={len(self.campaigns)})"

    def accepts_key(self, key: str | None) -> bool:
        return key is not None and key == self._api_key

    def _oid(self) -> str:
        self._counter += 1
        return f"64b0{self._counter:020x}"

    def close(self) -> None:
        self.deliverer.close()

    # ----- building state ------------------------------------------------------------------

    def add_campaign(self, name: str, *, status: str = "RUNNING") -> dict[str, Any]:
        with self._lock:
            campaign: dict[str, Any] = {
                "id": self._oid(),
                "name": name,
                "status": status,
                "identityId": self.identities[0]["id"],
                "createdAt": _iso(self._now()),
            }
            self.campaigns[campaign["id"]] = campaign
            return dict(campaign)

    def add_lead(
        self,
        *,
        firstname: str,
        lastname: str,
        email: str | None = None,
        linkedin_url: str | None = None,
        company: str | None = None,
        job_title: str | None = None,
        campaign_id: str | None = None,
        status: str = "CONTACTED",
    ) -> dict[str, Any]:
        with self._lock:
            stamp = _iso(self._now())
            lead: dict[str, Any] = {
                "id": self._oid(),
                "firstname": firstname,
                "lastname": lastname,
                "proEmail": email,
                "persoEmail": None,
                "linkedinUrl": linkedin_url,
                "companyName": company,
                "jobTitle": job_title,
                "crm_id": None,
                "createdAt": stamp,
                "updatedAt": stamp,
            }
            self.leads[lead["id"]] = lead
            if campaign_id is not None:
                self.add_to_campaign(lead["id"], campaign_id, status=status)
            return dict(lead)

    def add_to_campaign(self, lead_id: str, campaign_id: str, *, status: str = "CONTACTED") -> None:
        with self._lock:
            if campaign_id not in self.campaigns or lead_id not in self.leads:
                raise KeyError((campaign_id, lead_id))
            self.memberships[(campaign_id, lead_id)] = {
                "status": status,
                "replied": False,
                "lastReplyAt": None,
                "updatedAt": _iso(self._now()),
            }

    def _conversation(self, lead_id: str, campaign_id: str | None, channel: str) -> dict[str, Any]:
        for conversation in self.conversations.values():
            if (conversation["leadId"], conversation["campaignId"], conversation["channel"]) == (
                lead_id,
                campaign_id,
                channel,
            ):
                return conversation
        conversation = {
            "id": self._oid(),
            "leadId": lead_id,
            "campaignId": campaign_id,
            "identityId": self.identities[0]["id"],
            "channel": channel,
            "createdAt": _iso(self._now()),
            "lastMessageAt": None,
            "replied": False,
        }
        self.conversations[conversation["id"]] = conversation
        return conversation

    def add_message(
        self,
        lead_id: str,
        text: str,
        *,
        campaign_id: str | None = None,
        channel: str = "EMAIL",
        direction: str = "OUTBOUND",
        at: datetime | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            if lead_id not in self.leads:
                raise KeyError(lead_id)
            conversation = self._conversation(lead_id, campaign_id, channel)
            stamp = _iso(at or self._now())
            message_id = self._oid()
            message: dict[str, Any] = {
                "id": message_id,
                "messageId": message_id,
                "conversationId": conversation["id"],
                "leadId": lead_id,
                "campaignId": campaign_id,
                "identityId": conversation["identityId"],
                "channel": channel,
                "messageChannel": channel,
                "direction": direction,
                "received": direction == "INBOUND",
                "sent": direction == "OUTBOUND",
                "text": text,
                "content": text,
                "createdAt": stamp,
            }
            self.messages.append(message)
            conversation["lastMessageAt"] = stamp
            if direction == "INBOUND":
                conversation["replied"] = True
                membership = self.memberships.get((campaign_id, lead_id)) if campaign_id else None
                if membership is not None:
                    membership.update(replied=True, lastReplyAt=stamp, updatedAt=stamp)
                    if membership["status"] == "CONTACTED":
                        membership["status"] = "TO_QUALIFY"
            return dict(message)

    def simulate_reply(
        self,
        lead_id: str,
        text: str = "Thanks, let's talk next week.",
        *,
        campaign_id: str | None = None,
        channel: str = "EMAIL",
        at: datetime | None = None,
        notify: bool = True,
    ) -> dict[str, Any]:
        """The lead answers in the inbox; registered inbox webhooks are called (unless ``notify=False``)."""
        with self._lock:
            if campaign_id is None:
                campaign_id = next((c for c, lead in self.memberships if lead == lead_id), None)
            message = self.add_message(
                lead_id, text, campaign_id=campaign_id, channel=channel, direction="INBOUND", at=at
            )
            if notify:
                self._emit(message)
            return message

    # ----- API operations ------------------------------------------------------------------

    def find_lead(self, query: dict[str, str]) -> dict[str, Any] | None:
        """The lead matching every given identifier, as ``/leads/search`` and ``/leads/status`` do."""
        with self._lock:
            return next((lead for lead in self.leads.values() if _matches(lead, query)), None)

    def lead_view(self, lead: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            campaigns = [
                {"campaignId": c, "campaignName": self.campaigns[c]["name"], **m}
                for (c, lead_id), m in self.memberships.items()
                if lead_id == lead["id"]
            ]
            return {**copy.deepcopy(lead), "campaigns": campaigns}

    def set_status(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Set a lead's status in the named campaigns; one log per campaign (``leadUpdated`` False where
        the lead is not in that campaign). 404 when no lead matches the identifiers."""
        status = body.get("status")
        if not isinstance(status, str) or status.upper() not in LEAD_STATUSES:
            raise LgmApiError(400, f"status must be one of {sorted(LEAD_STATUSES)}")
        campaign = body.get("campaign")
        if campaign is None or campaign == "" or campaign == []:
            raise LgmApiError(400, "campaign is required (an id, a name, a list of them, or 'all')")
        with self._lock:
            lead = self.find_lead({k: str(v) for k, v in body.items() if isinstance(v, str)})
            if lead is None:
                raise LgmApiError(404, "Lead not found")
            wanted = [str(w) for w in campaign] if isinstance(campaign, list) else [str(campaign)]
            targets: list[str]
            if "all" in wanted:
                targets = [c for (c, lead_id) in self.memberships if lead_id == lead["id"]]
            else:
                by_name: dict[str, str] = {c["name"]: c["id"] for c in self.campaigns.values()}
                targets = [by_name.get(w, w) for w in wanted]
            stamp = _iso(self._now())
            logs = []
            for campaign_id in targets:
                membership = self.memberships.get((campaign_id, lead["id"]))
                known = self.campaigns.get(campaign_id)
                if membership is not None:
                    membership.update(status=status.upper(), updatedAt=stamp)
                reason = (
                    None
                    if membership is not None
                    else "lead not in campaign"
                    if known
                    else "unknown campaign"
                )
                logs.append(
                    {
                        "campaign": known["name"] if known else campaign_id,
                        "campaignId": campaign_id if known else None,
                        "leadId": lead["id"],
                        "leadStatus": status.upper(),
                        "leadUpdated": membership is not None,
                        "reason": reason,
                    }
                )
            return logs

    def lead_stats(self, campaign_id: str, after: str | None) -> dict[str, Any]:
        """One page (25 rows) of per-lead stats after lead id ``after``: ``{"leads", "hasMore"}``."""
        with self._lock:
            if campaign_id not in self.campaigns:
                raise LgmApiError(404, "Campaign not found")
            members = [
                (lead_id, membership)
                for (c, lead_id), membership in sorted(self.memberships.items())
                if c == campaign_id and (after is None or lead_id > after)
            ]
            rows = []
            for lead_id, membership in members[:_PAGE]:
                lead = self.leads[lead_id]
                rows.append(
                    {
                        "id": lead_id,
                        "leadId": lead_id,
                        "firstname": lead["firstname"],
                        "lastname": lead["lastname"],
                        "email": lead["proEmail"] or lead["persoEmail"],
                        "proEmail": lead["proEmail"],
                        "linkedinUrl": lead["linkedinUrl"],
                        "companyName": lead["companyName"],
                        **membership,
                    }
                )
            return {"leads": rows, "hasMore": len(members) > _PAGE}

    def message_view(self, message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as the API shows it (``direction`` ``INCOMING``/``OUTGOING``)."""
        inbound = message["direction"] == "INBOUND"
        return {
            **message,
            "direction": "INCOMING" if inbound else "OUTGOING",
            "status": "RECEIVED" if inbound else "SENT",
        }

    def conversation_view(self, conversation: dict[str, Any]) -> dict[str, Any]:
        """A conversation as the search shows it: the fields the vendor's node filters on."""
        with self._lock:
            mine = [m for m in self.messages if m["conversationId"] == conversation["id"]]
            last = max(mine, key=lambda m: (m["createdAt"], m["id"]), default=None)
            return {
                "id": conversation["id"],
                "leadId": conversation["leadId"],
                "campaignId": conversation["campaignId"],
                "identityId": conversation["identityId"],
                "status": "OPEN",
                "read": False,
                "favourite": False,
                "unsubscribed": False,
                "leadReplied": conversation["replied"],
                "lastMessageAt": _epoch_ms(last["createdAt"]) if last else None,
                "lastMessageStatus": (
                    None if last is None else "RECEIVED" if last["direction"] == "INBOUND" else "SENT"
                ),
                "lastMessageType": conversation["channel"],
                "lead": self.lead_summary(conversation["leadId"]),
            }

    def search_conversations(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /conversations/search``: filtered, sorted by ``lastMessageAt``, paged by token."""
        limit = _bounded(query.get("limit"), "limit", 50, 100) or 50
        if query.get("sortField", "lastMessageAt") != "lastMessageAt":
            raise LgmApiError(400, "this sandbox sorts by lastMessageAt only")
        direction = query.get("sortDirection", "-1")
        if direction not in ("1", "-1"):
            raise LgmApiError(400, "sortDirection must be 1 or -1")
        with self._lock:
            views = [self.conversation_view(c) for c in self.conversations.values()]
        views = [v for v in views if v["lastMessageAt"] is not None and _keep(v, query)]
        views.sort(key=_sort_key, reverse=direction == "-1")
        token = query.get("searchAfter") or None
        if token is not None:
            after = _decode_token(token)
            ascending = direction == "1"
            views = [v for v in views if (_sort_key(v) > after if ascending else _sort_key(v) < after)]
        page = views[:limit]
        next_token = _encode_token(_sort_key(page[-1])) if page else None
        return {"data": page, "hasMore": len(views) > limit, "nextToken": next_token}

    def add_inbox_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise LgmApiError(400, "url must be a full http(s) URL")
        campaigns = body.get("campaigns") or ["all"]
        if not isinstance(campaigns, list) or not all(isinstance(c, str) for c in campaigns):
            raise LgmApiError(400, "campaigns must be a list of campaign ids, empty or ['all'] for all")
        with self._lock:
            hook: dict[str, Any] = {
                "id": self._oid(),
                "url": url,
                "name": body.get("name") or "webhook",
                "type": body.get("type", "INBOX_EVENT"),
                "campaigns": campaigns,
                "createdAt": _iso(self._now()),
            }
            self.inbox_webhooks[hook["id"]] = hook
            return dict(hook)

    def lead_summary(self, lead_id: str) -> dict[str, Any]:
        lead = self.leads[lead_id]
        keys = (
            "id",
            "firstname",
            "lastname",
            "proEmail",
            "persoEmail",
            "linkedinUrl",
            "companyName",
            "jobTitle",
        )
        return {k: lead[k] for k in keys}

    def _emit(self, message: dict[str, Any]) -> None:
        lead = self.leads[message["leadId"]]
        view = self.message_view(message)
        body = {
            "type": "INBOX_MESSAGE",
            "messageChannel": message["channel"],
            "lead": {
                "id": lead["id"],
                "linkedinUrl": lead["linkedinUrl"],
                "email": lead["proEmail"] or lead["persoEmail"],
                # beyond the three fields the published receiver reads (assumed: the lead's names)
                "firstname": lead["firstname"],
                "lastname": lead["lastname"],
                "companyName": lead["companyName"],
            },
            "messages": [{k: view[k] for k in ("id", "content", "direction", "createdAt")}],
        }
        for hook in self.inbox_webhooks.values():
            if "all" not in hook["campaigns"] and message["campaignId"] not in hook["campaigns"]:
                continue
            self.deliverer.submit(
                hook["url"], json.dumps(body).encode(), {"content-type": "application/json"}
            )


def _epoch_ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _sort_key(view: dict[str, Any]) -> tuple[int, str]:
    return (int(view["lastMessageAt"]), str(view["id"]))


def _encode_token(key: tuple[int, str]) -> str:
    return base64.b64encode(json.dumps(list(key)).encode()).decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        stamp, conversation_id = json.loads(base64.b64decode(token, validate=True))
        return (int(stamp), str(conversation_id))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise LgmApiError(400, "invalid searchAfter token") from exc


def _keep(view: dict[str, Any], query: dict[str, str]) -> bool:
    replied = query.get("leadReplied")
    if replied in ("true", "false") and view["leadReplied"] != (replied == "true"):
        return False
    for name, field in (("leadIds", "leadId"), ("campaignIds", "campaignId")):
        wanted = {w.strip() for w in query.get(name, "").split(",") if w.strip()}
        if wanted and view[field] not in wanted:
            return False
    status = query.get("lastMessageStatus")
    return not status or view["lastMessageStatus"] == status


def _bounded(raw: str | None, name: str, default: int, maximum: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise LgmApiError(400, f"{name} must be an integer") from exc
    if value < 0 or value > maximum:
        raise LgmApiError(400, f"{name} must be between 0 and {maximum}")
    return value


def _matches(lead: dict[str, Any], query: dict[str, str]) -> bool:
    emails = {e.lower() for e in (lead["proEmail"], lead["persoEmail"]) if e}
    given = False
    for name in ("leadId", "email", "proEmail", "persoEmail", "linkedinUrl", "crm_id"):
        value = query.get(name)
        if not value:
            continue
        given = True
        if name == "leadId":
            ok = value == lead["id"]
        elif name in ("linkedinUrl", "crm_id"):
            ok = value == lead[name]
        else:
            ok = value.lower() in emails
        if not ok:
            return False
    if given:
        return True
    names = (query.get("firstname"), query.get("lastname"))
    return all(names) and names == (lead["firstname"], lead["lastname"])


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _body(request: Request) -> dict[str, Any]:
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        # parsed here rather than with request.form(), which needs python-multipart
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        return {
            key.removesuffix("[]"): items if len(items) > 1 or key.endswith("[]") else items[0]
            for key, items in form.items()
        }
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise LgmApiError(400, "body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise LgmApiError(400, "body must be a JSON object")
    return body


def _int(request: Request, name: str, default: int, maximum: int) -> int:
    return _bounded(request.query_params.get(name), name, default, maximum)


def _api_key(request: Request) -> str | None:
    """The key as ``Authorization: Bearer``, ``x-api-key`` or ``?apikey=`` (equivalent)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or request.query_params.get("apikey")


def create_app(sandbox: LaGrowthMachineSandbox) -> Starlette:
    """The Starlette app serving ``sandbox`` under ``/flow`` (admin routes under ``/_sandbox``)."""

    def api(path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        return counted_route(sandbox.calls, path, _serve, handler, methods)

    async def _serve(request: Request, handler: Handler) -> Response:
        key = _api_key(request)
        if not sandbox.accepts_key(key):
            return _error(401, "Unauthorized: missing or invalid API key")
        assert key is not None
        decision = sandbox.limiter.hit(key)
        retry_after = {"retry-after": str(max(1, int(decision.reset_seconds + 0.999)))}
        if not decision.allowed:
            return _error(429, "Too many requests", retry_after)
        outcome = await sandbox.faults.apply(request)
        if outcome == "429":
            return _error(429, "Too many requests", retry_after)
        if outcome == "error":
            return _error(sandbox.faults.pick((500, 502, 503)), "Internal server error")
        try:
            return await handler(request)
        except LgmApiError as exc:
            return _error(exc.status, exc.message)

    async def members(request: Request) -> Response:
        return JSONResponse(sandbox.members)

    async def identities(request: Request) -> Response:
        return JSONResponse(sandbox.identities)

    async def campaigns(request: Request) -> Response:
        skip = _int(request, "skip", 0, 1_000_000)
        limit = _int(request, "limit", _PAGE, 1_000_000)
        with sandbox._lock:
            ordered = sorted(sandbox.campaigns.values(), key=lambda c: c["id"])
            items = ordered[skip : skip + limit] if limit <= _PAGE else []  # the API's own quirk
            return JSONResponse({"campaigns": [dict(c) for c in items]})

    async def campaign(request: Request) -> Response:
        found = sandbox.campaigns.get(request.path_params["id"])
        if found is None:
            raise LgmApiError(404, "Campaign not found")
        return JSONResponse({"campaign": dict(found)})

    async def stats_leads(request: Request) -> Response:
        after = request.query_params.get("getLeadsAfter") or None
        return JSONResponse(sandbox.lead_stats(request.path_params["id"], after))

    async def search(request: Request) -> Response:
        query = {k: v for k, v in request.query_params.items() if k != "apikey"}
        if not any(query.get(k) for k in ("email", "linkedinUrl", "leadId", "crm_id")):
            raise LgmApiError(400, "give email, linkedinUrl or leadId")
        lead = sandbox.find_lead(query)
        if lead is None:
            raise LgmApiError(404, "Lead not found")
        return JSONResponse(sandbox.lead_view(lead))

    async def status(request: Request) -> Response:
        return JSONResponse({"logs": sandbox.set_status(await _body(request))})

    async def lead_conversations(request: Request) -> Response:
        lead_id = request.path_params["id"]
        if lead_id not in sandbox.leads:
            raise LgmApiError(404, "Lead not found")
        with sandbox._lock:
            mine = [c for c in sandbox.conversations.values() if c["leadId"] == lead_id]
            return JSONResponse({"data": [sandbox.conversation_view(c) for c in mine]})

    async def conversation_messages(request: Request) -> Response:
        conversation_id = request.path_params["id"]
        if conversation_id not in sandbox.conversations:
            raise LgmApiError(404, "Conversation not found")
        page = _int(request, "page", 0, 1_000_000)
        with sandbox._lock:
            mine = [
                sandbox.message_view(m) for m in sandbox.messages if m["conversationId"] == conversation_id
            ]
        size = 50
        return JSONResponse({"data": mine[page * size : (page + 1) * size], "total": len(mine)})

    async def conversation_search(request: Request) -> Response:
        query = {k: v for k, v in request.query_params.items() if k != "apikey"}
        return JSONResponse(sandbox.search_conversations(query))

    async def webhooks(request: Request) -> Response:
        if request.method == "POST":
            return JSONResponse(sandbox.add_inbox_webhook(await _body(request)), status_code=201)
        if request.method == "DELETE":
            if sandbox.inbox_webhooks.pop(request.path_params["id"], None) is None:
                raise LgmApiError(404, "Webhook not found")
            return JSONResponse({"success": True})
        return JSONResponse([dict(h) for h in sandbox.inbox_webhooks.values()])

    async def admin_reply(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        lead_id = request.path_params["id"]
        if lead_id not in sandbox.leads:
            return _error(404, "Lead not found")
        message = sandbox.simulate_reply(
            lead_id,
            body.get("text", "Thanks, let's talk next week."),
            campaign_id=body.get("campaignId"),
            channel=body.get("channel", "EMAIL"),
        )
        return JSONResponse(message)

    routes = [
        api("/flow/members", members),
        api("/flow/identities", identities),
        api("/flow/campaigns", campaigns),
        api("/flow/campaigns/{id}", campaign),
        api("/flow/campaigns/{id}/statsleads", stats_leads),
        api("/flow/leads/search", search),
        api("/flow/leads/status", status, ["POST"]),
        api("/flow/leads/{id}/conversations", lead_conversations),
        api("/flow/conversations/{id}/messages", conversation_messages),
        api("/flow/conversations/search", conversation_search),
        api("/flow/inboxWebhooks", webhooks, ["GET", "POST"]),
        api("/flow/inboxWebhooks/{id}", webhooks, ["DELETE"]),
        Route("/_sandbox/leads/{id}/reply", admin_reply, methods=["POST"]),
        *admin_routes(sandbox.calls, sandbox.faults),
    ]
    return Starlette(routes=routes)
