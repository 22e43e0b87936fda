"""Zoho notifications (``/actions/watch``): the subscription body, callback checks and parsing.

- Subscribe: ``POST /crm/v8/actions/watch`` ``{"watch": [{channel_id, events: ["Deals.all"],
  channel_expiry, token, notify_url, return_affected_field_values}]}``; replace the details of a
  channel (a new expiry) with ``PUT``; list with ``GET ?channel_id=`` (204 when there is none).
  ``token`` is at most 50 characters and is echoed in every callback; ``channel_expiry`` is at
  most a week ahead, and an omitted or longer one makes the channel expire in one hour.
  https://www.zoho.com/crm/developer/docs/api/v8/notifications/enable.html,
  https://www.zoho.com/crm/developer/docs/api/v8/notifications/update-info.html,
  https://www.zoho.com/crm/developer/docs/api/v8/notifications/get-details.html
- Callback: a JSON ``POST`` ``{server_time (epoch ms), module, resource_uri, ids: [...],
  affected_fields: [{id: [field, ...]}], affected_values: [{record_id, values}], operation
  (insert|update; a delete value is not documented), channel_id, token, query_params}``. There is no
  signature: the callback is authentic when it carries our ``token`` for our ``channel_id``,
  compared in constant time. https://www.zoho.com/crm/developer/docs/api/v8/notifications/overview.html

Callbacks carry no user, so whether a change is the service's own write is known only once the
record is read (``Modified_By``). The token never reaches the stored events.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from connectors.zoho.convert import SOURCE, format_time
from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.payloads import decode_json, epoch_time

__all__ = ["WATCHED_EVENTS", "parse_callback", "verify_callback", "watch_body"]

WATCHED_EVENTS: tuple[str, ...] = ("Deals.all",)
_HANDLED = frozenset({"insert", "update", "delete"})
_WATCHED_FIELDS = ("Stage", "Pipeline", "Amount", "Closing_Date", "Deal_Name")


def watch_body(*, channel_id: str, notify_url: str, token: SecretStr, expiry: datetime) -> dict[str, Any]:
    """The ``{"watch": [...]}`` body that enables (POST) or renews (PUT) the Deals channel."""
    secret = token.get_secret_value()
    if not 1 <= len(secret) <= 50:
        raise PayloadError("zoho: the watch token must be 1 to 50 characters (SYNC_ZOHO__WEBHOOK_TOKEN)")
    return {
        "watch": [
            {
                "channel_id": channel_id,
                "events": list(WATCHED_EVENTS),
                "channel_expiry": format_time(expiry),
                "token": secret,
                "notify_url": notify_url,
                "return_affected_field_values": True,
                "notify_on_related_action": False,
            }
        ]
    }


def _decode(body: bytes) -> dict[str, Any]:
    decoded = decode_json(body, "zoho callback")
    if not isinstance(decoded, dict):
        raise PayloadError("zoho callback: body is not a JSON object")
    return decoded


def verify_callback(request: WebhookRequest, token: SecretStr | None, channel_id: str) -> None:
    """Raise :class:`SignatureError` unless the body carries our ``token`` and ``channel_id``."""
    if token is None:
        raise SignatureError("zoho callback: no watch token is configured (SYNC_ZOHO__WEBHOOK_TOKEN)")
    try:
        body = _decode(request.body)
    except PayloadError as exc:
        raise SignatureError("zoho callback: no token (the body is not a JSON object)") from exc
    got = body.get("token")
    if not isinstance(got, str):
        raise SignatureError("zoho callback: token is missing")
    token_ok = hmac.compare_digest(got.encode(), token.get_secret_value().encode())
    channel_ok = hmac.compare_digest(str(body.get("channel_id", "")).encode(), channel_id.encode())
    if not (token_ok and channel_ok):
        raise SignatureError("zoho callback: token or channel_id does not match")


def _fields_by_id(body: Mapping[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    entries = body.get("affected_fields")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            for record_id, names in entry.items():
                if isinstance(names, list):
                    found[str(record_id)] = [str(n) for n in names]
    return found


def _values_by_id(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    entries = body.get("affected_values")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("values"), dict):
            found[str(entry.get("record_id"))] = dict(entry["values"])
    return found


def _occurred(body: Mapping[str, Any], now: datetime) -> datetime:
    stamp = body.get("server_time")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return now
    return epoch_time(stamp, per_second=1000, what="zoho callback: server_time")


def parse_callback(body: bytes, *, now: datetime) -> list[WebhookEvent]:
    """One event per id of the callback (``ids`` may hold several records of one change)."""
    decoded = _decode(body)
    module = decoded.get("module")
    operation = decoded.get("operation")
    ids = decoded.get("ids")
    if not isinstance(module, str) or not module:
        raise PayloadError("zoho callback: module is missing")
    if not isinstance(operation, str) or not operation:
        raise PayloadError("zoho callback: operation is missing")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str | int) for i in ids):
        raise PayloadError("zoho callback: ids is not a non-empty list of record ids")
    occurred = _occurred(decoded, now)
    fields, values = _fields_by_id(decoded), _values_by_id(decoded)
    handled = module == "Deals" and operation in _HANDLED
    events: list[WebhookEvent] = []
    for raw_id in ids:
        record_id = str(raw_id)
        changed = fields.get(record_id, [])
        watched = next((name for name in _WATCHED_FIELDS if name in changed), None)
        value = values.get(record_id, {}).get(watched) if watched else None
        raw = {
            "module": module,
            "operation": operation,
            "id": record_id,
            "affected_fields": changed,
            "values": values.get(record_id, {}),
            "server_time": decoded.get("server_time"),
            "channel_id": str(decoded.get("channel_id", "")),
        }
        events.append(
            WebhookEvent(
                source=SOURCE,
                dedupe_key=f"{raw['channel_id']}:{decoded.get('server_time')}:{operation}:{record_id}",
                object_type=module,
                object_id=record_id,
                action=operation,
                occurred_at=occurred,
                raw=raw,
                property_name=watched,
                property_value=value if isinstance(value, str) else None,
                handled=handled,
                reason=None if handled else f"{module}.{operation} is not synced",
            )
        )
    return events
