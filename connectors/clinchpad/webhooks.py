"""Verifying and parsing ClinchPad webhook deliveries.

Webhooks are set up in ClinchPad's UI only (Settings, Integrations, Webhooks): a URL and an
optional Handshake Key, which ClinchPad sends back inside the JSON body as ``handshake_key``
("present only when a handshake key has been specified"). There is no signature
(https://clinchpad.com/api/docs/webhooks). So a delivery is accepted only when its
``handshake_key`` equals the configured ``SYNC_CLINCHPAD__HANDSHAKE_KEY``, compared in constant
time (:func:`hmac.compare_digest`); without a configured key nothing is accepted. The key never
appears in a message.

Body: ``{"activity": {_id, created_at, type, user: {_id, ...}, ...}, "lead": {_id, name, stage,
pipe: {_id, name}}, "handshake_key": ...}``. The docs show ``lead:created`` and
``note:created`` and say there are 33 activity types whose fields vary; the other names are not
published. So any activity that names a lead is handled (the lead is read again), except those of
families that cannot change a lead's synced fields (notes, tasks, e-mails, calls, comments,
files); a type containing ``delete`` stands for the lead's deletion. No retry policy is documented.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from connectors.clinchpad.convert import SOURCE
from sync_worker.canonical import UNRECOGNISED_ACTION, WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.payloads import decode_json

__all__ = ["ACTION_DELETED", "CONTENT_FAMILIES", "owner_marker", "parse_body", "verify_handshake"]

ACTION_DELETED = "lead:deleted"
CONTENT_FAMILIES = frozenset({"note", "task", "email", "call", "comment", "file", "attachment"})
"""Activity families that add content to a lead without changing its synced fields."""


def owner_marker(user_id: str) -> str:
    """The ``change_source`` of an activity by ``user_id``."""
    return f"user:{user_id}"


def _object(body: bytes) -> Mapping[str, Any] | None:
    try:
        data = decode_json(body, SOURCE)
    except PayloadError:
        return None
    return data if isinstance(data, dict) else None


def verify_handshake(request: WebhookRequest, secret: SecretStr | None) -> None:
    """Raise :class:`SignatureError` unless the body's ``handshake_key`` equals ``secret``."""
    if secret is None or not secret.get_secret_value():
        raise SignatureError("clinchpad: no handshake key is configured (SYNC_CLINCHPAD__HANDSHAKE_KEY)")
    data = _object(request.body)
    presented = data.get("handshake_key") if data is not None else None
    if not isinstance(presented, str) or not presented:
        raise SignatureError("clinchpad: the delivery carries no handshake_key")
    if not hmac.compare_digest(presented.encode("utf-8"), secret.get_secret_value().encode("utf-8")):
        raise SignatureError("clinchpad: the handshake_key does not match")


def _time(value: Any, now: Callable[[], datetime]) -> datetime:
    if isinstance(value, str) and value.strip():
        text = value.strip()
        text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = datetime.fromisoformat(text)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved into UTC
            raise PayloadError("clinchpad: activity.created_at is not an ISO 8601 time") from None
    return now()


def _id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("_id")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_body(body: bytes, *, now: Callable[[], datetime]) -> list[WebhookEvent]:
    """The one event of a delivery; :class:`PayloadError` naming the problem when malformed."""
    data = _object(body)
    if data is None:
        raise PayloadError("clinchpad: body is not a JSON object")
    activity = data.get("activity")
    if not isinstance(activity, Mapping):
        raise PayloadError("clinchpad: body has no activity object")
    kind = activity.get("type")
    kind = kind.strip() if isinstance(kind, str) and kind.strip() else "unknown"
    occurred_at = _time(activity.get("created_at"), now)
    activity_id = _id(activity) or hashlib.sha256(body).hexdigest()[:32]
    user_id = _id(activity.get("user"))
    raw = {"activity": dict(activity), "lead": data.get("lead")}
    lead = data.get("lead")
    lead_id = _id(lead)
    common: dict[str, Any] = {
        "source": SOURCE,
        "dedupe_key": f"{SOURCE}:activity:{activity_id}",
        "occurred_at": occurred_at,
        "raw": raw,
        "change_source": owner_marker(user_id) if user_id else None,
    }
    if lead_id is None:
        return [
            WebhookEvent(
                object_type="activity",
                object_id=activity_id,
                action=UNRECOGNISED_ACTION,
                handled=False,
                reason=f"activity {kind!r} names no lead",
                **common,
            )
        ]
    family = kind.partition(":")[0].casefold()
    if family in CONTENT_FAMILIES:
        return [
            WebhookEvent(
                object_type="lead",
                object_id=lead_id,
                action=kind,
                handled=False,
                reason=f"{family} activities do not change a lead's synced fields",
                **common,
            )
        ]
    action = ACTION_DELETED if "delete" in kind.casefold() else kind
    return [WebhookEvent(object_type="lead", object_id=lead_id, action=action, **common)]
