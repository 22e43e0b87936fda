"""Verifying and parsing LaGrowthMachine inbox webhook deliveries.

Registration (facts): an inbox webhook is created with ``POST /inboxWebhooks`` (``url``, ``name``,
``description``, ``campaigns``: ids, empty for all) and removed with ``DELETE /inboxWebhooks/{id}``
(``LaGrowthMachine/n8n-nodes-lagrowthmachine``,
``nodes/LaGrowthMachineTrigger/LaGrowthMachineTrigger.node.ts``); it "fires on every LinkedIn and
Email message (sent or received)". LaGrowthMachine documents neither a signature nor the body, and
disables a webhook after repeated failed deliveries.

Authentication: the service registers a URL that carries a shared secret, and accepts a delivery
only when the secret arrives as the ``token`` query parameter or an ``X-Sync-Token`` header. The
comparison is constant-time (:func:`hmac.compare_digest`); the secret never appears in a message.

Bodies read (one JSON object, or a list of them):

- the published ``INBOX_MESSAGE`` shape (as parsed by the only published receiver, quoted in issue
  14): ``{"type": "INBOX_MESSAGE", "messageChannel": "LINKEDIN" | "EMAIL", "lead": {"id",
  "linkedinUrl", "email"}, "messages": [{"id", "content", "direction": "INCOMING" | "OUTGOING",
  "createdAt"}]}``. There is no top-level message id: each entry of ``messages[]`` is one event,
  keyed by its ``id``, its ``raw`` the body narrowed to that one entry. ``INCOMING`` is a reply;
- the flat shape read before it: ``messageId``, ``leadId`` (or ``lead.id``), ``createdAt`` (Unix
  ms or ISO 8601), ``received`` / ``sent`` or ``direction``, ``conversationId``, ``campaignId``,
  ``lead``.

Since the body is undocumented, an authenticated delivery is never refused for its shape (a refusal
would get the webhook disabled): whatever is not recognised (not JSON, an empty list, an entry with
no id, lead or date) becomes one event with ``handled=False``, ``action="unrecognised"``, a
``reason`` naming the problem and the body in ``raw`` (the object itself, or ``{"body": text}``), for
the core to keep as a dead letter and answer 2xx. An outgoing message is ``handled=False`` too
(``action="message_sent"``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from connectors.lagrowthmachine.convert import SOURCE, is_incoming, parse_id, parse_timestamp
from sync_worker.canonical import UNRECOGNISED_ACTION, WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.payloads import decode_json

__all__ = [
    "ACTION_MESSAGE_SENT",
    "ACTION_REPLY",
    "ACTION_UNRECOGNISED",
    "TOKEN_HEADER",
    "TOKEN_PARAM",
    "parse_body",
    "verify_token",
]

TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret
TOKEN_HEADER = "x-sync-token"  # noqa: S105 - a header name, not a secret
ACTION_REPLY = "reply_received"
ACTION_MESSAGE_SENT = "message_sent"
ACTION_UNRECOGNISED = UNRECOGNISED_ACTION
_INBOX_MESSAGE = "INBOX_MESSAGE"
_BODY_TEXT_LIMIT = 64_000


def verify_token(request: WebhookRequest, secret: SecretStr | None) -> None:
    """Raise :class:`SignatureError` unless the request carries ``secret`` (query or header)."""
    if secret is None or not secret.get_secret_value():
        raise SignatureError("lagrowthmachine: webhook secret is not configured")
    presented = request.query.get(TOKEN_PARAM)
    if presented is None:
        presented = next((v for k, v in request.headers.items() if k.lower() == TOKEN_HEADER), None)
    if not presented:
        raise SignatureError("lagrowthmachine: missing webhook token")
    expected = secret.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(presented.encode("utf-8"), expected):
        raise SignatureError("lagrowthmachine: webhook token does not match")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _unrecognised(raw: Mapping[str, Any], data: bytes, reason: str, received_at: datetime) -> WebhookEvent:
    digest = _digest(data)
    return WebhookEvent(
        source=SOURCE,
        dedupe_key=f"{SOURCE}:unrecognised:{digest}",
        object_type="delivery",
        object_id=digest,
        action=ACTION_UNRECOGNISED,
        occurred_at=received_at,
        raw=dict(raw),
        handled=False,
        reason=f"{SOURCE}: {reason}",
    )


def _message_event(
    message_id: object,
    lead_id: object,
    created_at: object,
    incoming: bool,
    where: str,
    raw: Mapping[str, Any],
) -> WebhookEvent:
    """One event for one message; :class:`PayloadError` naming the field that is missing or bad."""
    if message_id is None:
        raise PayloadError(f"{where}: no message id")
    if lead_id is None:
        raise PayloadError(f"{where}: no lead id")
    if created_at is None:
        raise PayloadError(f"{where}: no createdAt")
    key = parse_id(message_id, f"{where}.id")
    return WebhookEvent(
        source=SOURCE,
        dedupe_key=f"{SOURCE}:message:{key}",
        object_type="lead",
        object_id=parse_id(lead_id, f"{where}.lead"),
        action=ACTION_REPLY if incoming else ACTION_MESSAGE_SENT,
        occurred_at=parse_timestamp(created_at, f"{where}.createdAt"),
        raw=dict(raw),
        handled=incoming,
        reason=None if incoming else f"{SOURCE}: an outgoing message is not a reply",
    )


def _inbox_message(body: Mapping[str, Any], messages: list[Any], where: str) -> list[WebhookEvent]:
    lead = body.get("lead")
    lead_id = lead.get("id") if isinstance(lead, Mapping) else None
    if not messages:
        raise PayloadError(f"{where}: messages[] is empty")
    events = []
    for index, message in enumerate(messages):
        at = f"{where}.messages[{index}]"
        if not isinstance(message, Mapping):
            raise PayloadError(f"{at}: expected a JSON object")
        narrowed = {**body, "messages": [dict(message)]}
        events.append(
            _message_event(
                message.get("id"), lead_id, message.get("createdAt"), is_incoming(message), at, narrowed
            )
        )
    return events


def _flat(message: Mapping[str, Any], where: str) -> list[WebhookEvent]:
    lead = message.get("lead")
    lead_id = message.get("leadId")
    if lead_id is None and isinstance(lead, Mapping):
        lead_id = lead.get("id")
    return [
        _message_event(
            message.get("messageId"), lead_id, message.get("createdAt"), is_incoming(message), where, message
        )
    ]


def _item_events(item: object, index: int, received_at: datetime) -> list[WebhookEvent]:
    where = f"event[{index}]"
    data = json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
    if not isinstance(item, Mapping):
        return [_unrecognised({"body": data.decode()}, data, f"{where}: expected a JSON object", received_at)]
    messages = item.get("messages")
    try:
        if isinstance(messages, list):
            return _inbox_message(item, messages, where)
        if "messageId" in item:
            return _flat(item, where)
    except PayloadError as exc:
        return [_unrecognised(item, data, str(exc), received_at)]
    kind = item.get("type")
    what = f"type {kind!r}" if isinstance(kind, str) and kind != _INBOX_MESSAGE else "shape"
    reason = f"{where}: unrecognised {what} (no messages[] and no messageId)"
    return [_unrecognised(item, data, reason, received_at)]


def parse_body(body: bytes, *, received_at: datetime) -> list[WebhookEvent]:
    """The events of one authenticated delivery; never raises for the body's shape.

    ``received_at`` dates the events of an unrecognised body (it carries no date of its own).
    """
    try:
        data = decode_json(body, SOURCE)
    except PayloadError as exc:
        text = body[:_BODY_TEXT_LIMIT].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        return [_unrecognised({"body": text}, body, str(exc), received_at)]
    items = data if isinstance(data, list) else [data]
    if not items:
        text = body.decode("utf-8", "replace")
        return [_unrecognised({"body": text}, body, "body is an empty list", received_at)]
    return [event for index, item in enumerate(items) for event in _item_events(item, index, received_at)]
