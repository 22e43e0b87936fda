"""Verifying and parsing HubSpot webhook deliveries.

Signature, v3 (the default): ``X-HubSpot-Signature-v3`` is
``base64(HMAC-SHA256(client_secret, method + uri + body + timestamp))`` where ``timestamp`` is the
``X-HubSpot-Request-Timestamp`` header (epoch ms, refused when more than 5 minutes away from our
clock) and ``uri`` is the full request URI with these percent-escapes decoded, and only these:
``%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 ( %29 ) %2A * %2C , %3B ;``.
v1 (``X-HubSpot-Signature-Version: v1``): ``X-HubSpot-Signature`` is hex
``SHA-256(client_secret + body)``; accepted only when ``accept_v1`` is set, since it signs neither
the URI nor a time and so allows replays.
https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests
https://developers.hubspot.com/docs/faq/v1-request-validation

Body: a JSON array of up to 100 events, each with ``subscriptionType`` (older payloads:
``eventType``), ``objectId``, ``occurredAt`` (epoch ms), ``attemptNumber``, ``changeSource``,
``sourceId``, and for property changes ``propertyName``/``propertyValue``; merges carry
``primaryObjectId``/``mergedObjectIds``; the generic ``object.*`` types carry ``objectTypeId``
(``0-1`` contact, ``0-3`` deal). ``eventId`` is not unique and retries repeat an event with a
higher ``attemptNumber``, so the dedupe key is built from what identifies the change itself.
https://developers.hubspot.com/docs/api/webhooks
https://developers.hubspot.com/docs/apps/legacy-apps/public-apps/create-generic-webhook-subscriptions
https://developers.hubspot.com/changelog/new-subscription-types-for-webhooks
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.payloads import decode_json, epoch_time

__all__ = [
    "MAX_EVENTS",
    "MAX_SKEW_MS",
    "parse_events",
    "signed_uri",
    "v3_signature",
    "verify_signature",
]

MAX_SKEW_MS = 5 * 60 * 1000
MAX_EVENTS = 100

# The escapes HubSpot decodes in the URI before signing (its documented table; nothing else).
_DECODED = {
    "3A": ":",
    "2F": "/",
    "3F": "?",
    "40": "@",
    "21": "!",
    "24": "$",
    "27": "'",
    "28": "(",
    "29": ")",
    "2A": "*",
    "2C": ",",
    "3B": ";",
}
_ESCAPE = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)

_OBJECT_TYPE_IDS = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}
_HANDLED_OBJECTS = frozenset({"deal", "contact"})
_HANDLED_ACTIONS = frozenset({"creation", "deletion", "propertyChange", "merge", "restore"})


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts ``²``, which ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def signed_uri(url: str) -> str:
    """The URI as HubSpot signs it: the documented escapes decoded, every other one kept."""
    return _ESCAPE.sub(lambda m: _DECODED[m.group(1).upper()], url)


def v3_signature(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """``base64(HMAC-SHA256(secret, method + signed_uri(url) + body + timestamp))``."""
    message = method.upper().encode() + signed_uri(url).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(
    request: WebhookRequest, client_secret: str | None, *, now: datetime, accept_v1: bool = False
) -> None:
    """Raise :class:`SignatureError` unless ``request`` carries a valid HubSpot signature.

    Header names are matched case-insensitively. Comparisons are constant-time.
    """
    if not client_secret:
        raise SignatureError("hubspot: no client secret is configured to verify webhooks")
    headers = {name.lower(): value for name, value in request.headers.items()}
    given_v3 = headers.get("x-hubspot-signature-v3")
    if given_v3:
        timestamp = headers.get("x-hubspot-request-timestamp", "").strip()
        if not (_is_digits(timestamp) and len(timestamp) <= 16):
            raise SignatureError("hubspot: missing or malformed X-HubSpot-Request-Timestamp")
        now_ms = int(now.timestamp() * 1000)
        if abs(now_ms - int(timestamp)) > MAX_SKEW_MS:
            raise SignatureError("hubspot: request timestamp is more than 5 minutes off")
        expected = v3_signature(client_secret, request.method, request.url, request.body, timestamp)
        if not hmac.compare_digest(expected.encode(), given_v3.strip().encode()):
            raise SignatureError("hubspot: X-HubSpot-Signature-v3 does not match")
        return
    version = headers.get("x-hubspot-signature-version", "").strip().lower()
    given_v1 = headers.get("x-hubspot-signature")
    if version == "v1" and given_v1:
        if not accept_v1:
            raise SignatureError("hubspot: v1 signatures are not accepted (set accept_signature_v1)")
        expected_v1 = hashlib.sha256(client_secret.encode() + request.body).hexdigest()
        if not hmac.compare_digest(expected_v1.encode(), given_v1.strip().lower().encode()):
            raise SignatureError("hubspot: X-HubSpot-Signature (v1) does not match")
        return
    raise SignatureError("hubspot: missing X-HubSpot-Signature-v3 header")


def _object_id(value: object, where: str, field: str) -> str:
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{where}: {field} is missing")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _is_digits(value.strip()):
        return value.strip()
    raise PayloadError(f"{where}: {field} must be a numeric id")


def _millis(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: occurredAt must be epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _is_digits(value.strip()) and len(value.strip()) <= 20:
        return int(value)
    if value is None:
        raise PayloadError(f"{where}: occurredAt is missing")
    raise PayloadError(f"{where}: occurredAt must be epoch milliseconds")


def _dedupe_key(event: Mapping[str, Any], kind: str, object_id: str, occurred_ms: int) -> str:
    identity = [
        kind,
        str(event.get("portalId", "")),
        str(event.get("objectTypeId", "")),
        object_id,
        event.get("propertyName"),
        None if event.get("propertyValue") is None else str(event.get("propertyValue")),
        occurred_ms,
        event.get("primaryObjectId"),
        event.get("mergedObjectIds"),
        event.get("newObjectId"),
    ]
    blob = json.dumps(identity, separators=(",", ":"), sort_keys=True, default=str)
    return "hubspot:" + hashlib.sha256(blob.encode()).hexdigest()[:40]


def _event(index: int, item: object) -> WebhookEvent:
    where = f"event {index}"
    if not isinstance(item, dict):
        raise PayloadError(f"{where}: expected an object")
    kind = item.get("subscriptionType") or item.get("eventType")
    if not isinstance(kind, str) or "." not in kind:
        raise PayloadError(f"{where}: subscriptionType is missing or not '<object>.<action>'")
    prefix, _, action = kind.partition(".")
    object_id = _object_id(item.get("objectId"), where, "objectId")
    occurred_ms = _millis(item.get("occurredAt"), where)
    if prefix == "object":
        type_id = item.get("objectTypeId")
        if not isinstance(type_id, str) or not type_id:
            raise PayloadError(f"{where}: object.* event without objectTypeId")
        object_type = _OBJECT_TYPE_IDS.get(type_id, type_id)
    else:
        object_type = prefix
    attempt = item.get("attemptNumber", 0)
    text = str(attempt) if isinstance(attempt, int | str) and not isinstance(attempt, bool) else ""
    if not _is_digits(text) or len(text) > 9:
        raise PayloadError(f"{where}: attemptNumber must be a non-negative integer")
    source = item.get("changeSource")
    source_id = item.get("sourceId")
    change_source = str(source) if source else None
    if change_source and source_id:
        change_source = f"{change_source}:{source_id}"
    name = item.get("propertyName")
    value = item.get("propertyValue")
    return WebhookEvent(
        source="hubspot",
        dedupe_key=_dedupe_key(item, kind, object_id, occurred_ms),
        object_type=object_type,
        object_id=object_id,
        action=action,
        occurred_at=epoch_time(occurred_ms, per_second=1000, what=f"{where}: occurredAt"),
        raw=item,
        property_name=str(name) if name is not None else None,
        property_value=None if value is None else str(value),
        change_source=change_source,
        attempt=int(attempt),
        handled=object_type in _HANDLED_OBJECTS and action in _HANDLED_ACTIONS,
    )


def parse_events(body: bytes) -> list[WebhookEvent]:
    """The events of one delivery; :class:`PayloadError` naming the problem when malformed."""
    data = decode_json(body, "hubspot")
    if not isinstance(data, list):
        raise PayloadError("hubspot: body must be a JSON array of events")
    if len(data) > MAX_EVENTS:
        raise PayloadError(f"hubspot: {len(data)} events in one body, at most {MAX_EVENTS} allowed")
    return [_event(index, item) for index, item in enumerate(data)]
