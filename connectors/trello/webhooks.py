"""Verifying and parsing Trello webhook deliveries.

https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/:

- A webhook is created with ``POST /1/webhooks`` (``callbackURL``, ``idModel``, ``description``,
  ``active``); Trello first sends a ``HEAD`` to ``callbackURL`` and refuses to create it unless the
  answer is 200 (the spec's ``answers_head``).
- A delivery is a ``POST`` of JSON ``{"action": {…}, "model": {…}}``: the action (as in the actions
  feed) and the watched model as it is now.
- ``X-Trello-Webhook`` is base64(HMAC-SHA1(key = the application's OAuth secret, message = the full
  request body + the ``callbackURL`` exactly as registered)). Compared in constant time
  (``hmac.compare_digest``), as the reference ``verify-trello-webhook`` compares double HMACs.

The callback URL is the one the core passes in :attr:`WebhookRequest.url` (``SYNC_PUBLIC_URL`` +
path behind a proxy): register exactly that URL. One delivery carries one action; its id is the
dedupe key across retries; ``idMemberCreator`` says who made the change (the service's own writes
are recognised by its member id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime

from pydantic import SecretStr

from connectors.trello.convert import SOURCE, parse_time
from connectors.trello.feed import CARD_ACTIONS, card_id_of, is_stage_move, list_after
from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, PermanentError, SignatureError
from sync_worker.payloads import decode_json

__all__ = ["SIGNATURE_HEADER", "parse_webhook", "sign", "verify_signature"]

SIGNATURE_HEADER = "x-trello-webhook"


def sign(secret: str, body: bytes, callback_url: str) -> str:
    """The ``X-Trello-Webhook`` value for ``body`` delivered to ``callback_url``."""
    digest = hmac.new(secret.encode(), body + callback_url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(request: WebhookRequest, secret: SecretStr | None) -> None:
    """Raise :class:`SignatureError` unless ``X-Trello-Webhook`` signs body + ``request.url``."""
    if secret is None or not secret.get_secret_value():
        raise SignatureError("trello webhook: SYNC_TRELLO__APP_SECRET is not configured")
    given = request.headers.get(SIGNATURE_HEADER)
    if not given:
        raise SignatureError("trello webhook: X-Trello-Webhook header is missing")
    expected = sign(secret.get_secret_value(), request.body, request.url)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise SignatureError("trello webhook: X-Trello-Webhook does not match")


def parse_webhook(body: bytes, *, now: Callable[[], datetime]) -> list[WebhookEvent]:
    """The one event of a delivery; :class:`PayloadError` naming the problem when malformed.

    An action about no card, or of a type that changes no deal, is ``handled=False``.
    """
    decoded = decode_json(body, "trello webhook")
    if not isinstance(decoded, dict) or not isinstance(decoded.get("action"), dict):
        raise PayloadError("trello webhook: body has no action object")
    action = decoded["action"]
    action_id, kind = action.get("id"), action.get("type")
    if not isinstance(action_id, str) or not action_id:
        raise PayloadError("trello webhook: action.id is missing")
    if not isinstance(kind, str) or not kind:
        raise PayloadError("trello webhook: action.type is missing")
    try:
        occurred = parse_time(action.get("date"), "action.date")
    except PermanentError as exc:
        raise PayloadError("trello webhook: action.date is not an ISO 8601 time") from exc
    card_id = card_id_of(action)
    after = list_after(action) if is_stage_move(action) else None
    creator = action.get("idMemberCreator")
    handled = card_id is not None and kind in CARD_ACTIONS
    return [
        WebhookEvent(
            source=SOURCE,
            dedupe_key=action_id,
            object_type="card" if card_id is not None else "other",
            object_id=card_id or action_id,
            action=kind,
            occurred_at=occurred or now(),
            raw=action,
            property_name="idList" if after is not None else None,
            property_value=str(after.get("id")) if after is not None and after.get("id") else None,
            change_source=creator if isinstance(creator, str) and creator else None,
            handled=handled,
            reason=None if handled else f"trello action {kind[:40]} changes no card",
        )
    ]
