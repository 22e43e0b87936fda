"""Verifying and parsing LaGrowthMachine inbox webhook deliveries.

LaGrowthMachine registers an inbox webhook with a ``name`` and a ``url`` (``POST /inboxWebhooks``,
https://documenter.getpostman.com/view/2071164/TVCmSkH2) and does not sign its deliveries. The
service therefore registers a URL that carries a shared secret, and accepts a delivery only when the
secret arrives as the ``token`` query parameter or an ``X-Sync-Token`` header. The comparison is
constant-time (:func:`hmac.compare_digest`); the secret never appears in a message.

Body: one inbox message event as JSON (an object, or a list of them). Fields used (the shape users
capture from real deliveries; LGM does not publish a schema): ``messageId``, ``leadId`` (or
``lead.id``), ``createdAt`` (Unix milliseconds or ISO 8601), ``received`` / ``sent`` (direction),
``conversationId``, ``campaignId``, ``messageChannel``, ``lead``. An incoming message is a reply
(handled); an outgoing one is returned with ``handled=False``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from connectors.lagrowthmachine.convert import SOURCE, is_incoming, parse_id, parse_timestamp
from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError

__all__ = ["ACTION_MESSAGE_SENT", "ACTION_REPLY", "TOKEN_HEADER", "TOKEN_PARAM", "parse_body", "verify_token"]

TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret
TOKEN_HEADER = "x-sync-token"  # noqa: S105 - a header name, not a secret
ACTION_REPLY = "reply_received"
ACTION_MESSAGE_SENT = "message_sent"


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


def _event(item: object, index: int) -> WebhookEvent:
    where = f"event[{index}]"
    if not isinstance(item, Mapping):
        raise PayloadError(f"lagrowthmachine: {where}: expected a JSON object")
    message: Mapping[str, Any] = item
    if "messageId" not in message:
        raise PayloadError(f"lagrowthmachine: {where}: missing messageId")
    message_id = parse_id(message["messageId"], f"{where}.messageId")
    lead = message.get("lead")
    lead_id_raw = message.get("leadId")
    if lead_id_raw is None and isinstance(lead, Mapping):
        lead_id_raw = lead.get("id")
    if lead_id_raw is None:
        raise PayloadError(f"lagrowthmachine: {where}: missing leadId")
    lead_id = parse_id(lead_id_raw, f"{where}.leadId")
    if "createdAt" not in message:
        raise PayloadError(f"lagrowthmachine: {where}: missing createdAt")
    occurred_at = parse_timestamp(message["createdAt"], f"{where}.createdAt")
    incoming = is_incoming(message)
    return WebhookEvent(
        source=SOURCE,
        dedupe_key=f"{SOURCE}:message:{message_id}",
        object_type="lead",
        object_id=lead_id,
        action=ACTION_REPLY if incoming else ACTION_MESSAGE_SENT,
        occurred_at=occurred_at,
        raw=dict(message),
        handled=incoming,
    )


def parse_body(body: bytes) -> list[WebhookEvent]:
    """The events of one delivery; :class:`PayloadError` naming the problem when malformed."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("lagrowthmachine: body is not valid JSON") from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PayloadError("lagrowthmachine: body is an empty list")
    try:
        return [_event(item, i) for i, item in enumerate(items)]
    except PayloadError as exc:
        if str(exc).startswith(f"{SOURCE}:"):
            raise
        raise PayloadError(f"{SOURCE}: {exc}") from exc
