"""Verifying and parsing Pipedrive webhook deliveries (v2 and v1).

Pipedrive does not sign webhooks; a subscription may carry HTTP basic auth credentials
(``http_auth_user`` / ``http_auth_password``) that Pipedrive sends as ``Authorization: Basic``.
:func:`verify_basic_auth` compares both in constant time and refuses when none are configured.

Payloads:

- v2: ``{"meta": {...}, "data": {...} | null, "previous": {...} | null}``; ``meta`` carries
  ``id`` (the delivery's unique id, our dedupe key), ``action`` (create/change/delete),
  ``entity``, ``entity_id`` (a string), ``timestamp`` (RFC 3339), ``attempt``, ``change_source``
  (``app`` or ``api``) and ``user_id``; ``previous`` holds only the changed fields.
  https://pipedrive.readme.io/docs/guide-for-webhooks-v2 and
  https://pipedrive.readme.io/docs/webhooks-v2-migration-guide
- v1: ``{"v": 1, "event": "updated.deal", "meta": {...}, "current": {...}, "previous": {...},
  "retry": 0}``; ``meta`` carries ``action`` (added/updated/deleted/merged), ``object``, ``id``
  (the object id), ``timestamp`` (epoch seconds), ``timestamp_micro``, ``change_source``, ``user_id``.
  https://pipedrive.readme.io/docs/guide-for-webhooks

Ids may be numbers or strings. Events the service does not act on come back with
``handled=False``; a malformed body, or a deal create/change the worker could not apply (no deal
object, no ``update_time``), raises :class:`PayloadError` naming the problem (the receiver's 400).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from connectors.pipedrive.convert import SOURCE, parse_time
from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, PermanentError, SignatureError
from sync_worker.payloads import decode_json, epoch_time

__all__ = ["HANDLED_OBJECTS", "parse_webhook", "verify_basic_auth"]

HANDLED_OBJECTS: frozenset[str] = frozenset({"deal"})
_V1_ACTIONS = {"added": "create", "updated": "change", "deleted": "delete", "merged": "merge"}
_HANDLED_ACTIONS = frozenset({"create", "change", "delete"})
_WATCHED_FIELDS = ("stage_id", "status", "pipeline_id")


def verify_basic_auth(request: WebhookRequest, user: str | None, password: SecretStr | None) -> None:
    """Raise :class:`SignatureError` unless ``Authorization: Basic`` carries ``user``/``password``."""
    if not user or password is None:
        raise SignatureError("pipedrive webhook: basic auth credentials are not configured")
    header = request.headers.get("authorization")
    if header is None:
        raise SignatureError("pipedrive webhook: Authorization header is missing")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise SignatureError("pipedrive webhook: Authorization is not Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("pipedrive webhook: Basic credentials are not base64") from exc
    got_user, sep, got_password = decoded.partition(b":")
    # Both compared every time, so timing says nothing about which half was wrong.
    user_ok = hmac.compare_digest(got_user, user.encode())
    password_ok = hmac.compare_digest(got_password, password.get_secret_value().encode())
    if not (sep and user_ok and password_ok):
        raise SignatureError("pipedrive webhook: Basic credentials do not match")


def _object(body: Mapping[str, Any], key: str, *, nullable: bool = True) -> Mapping[str, Any] | None:
    value = body.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise PayloadError(f"pipedrive webhook: {key} is not an object")
    return value


def _id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise PayloadError(f"pipedrive webhook: {field} is missing or not an id")
    return str(value).strip()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


def _change_source(meta: Mapping[str, Any]) -> str | None:
    """``app``/``api`` plus the acting user (``api:123``), so our own writes can be recognised."""
    source = _text(meta.get("change_source"))
    user = _text(meta.get("user_id"))
    if source is None:
        return None
    return f"{source}:{user}" if user else source


def _watched_change(
    data: Mapping[str, Any] | None, previous: Mapping[str, Any] | None
) -> tuple[str | None, str | None]:
    if data is None or previous is None:
        return None, None
    for name in _WATCHED_FIELDS:
        if name in previous and previous.get(name) != data.get(name):
            return name, _text(data.get(name))
    return None, None


def _require_usable(current: Mapping[str, Any] | None, entity: str, action: str, key: str) -> None:
    """Refuse at the door (400) a deal create/change the worker could not apply.

    The worker turns ``data`` (v2) or ``current`` (v1) into a record ordered by its ``update_time``
    (:func:`connectors.pipedrive.convert.to_canonical`); without it the event could only die later.
    """
    if entity not in HANDLED_OBJECTS or action not in ("create", "change"):
        return
    if current is None:
        raise PayloadError(f"pipedrive webhook: {key} is missing for a {entity} {action}")
    if current.get("is_deleted") is True:
        return
    try:
        stamp = parse_time(current.get("update_time"), f"{key}.update_time")
    except PermanentError as exc:
        raise PayloadError(f"pipedrive webhook: {key}.update_time is not an RFC 3339 time") from exc
    if stamp is None:
        raise PayloadError(f"pipedrive webhook: {key}.update_time is missing")


def _attempt(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _parse_v2(body: Mapping[str, Any], now: Callable[[], datetime]) -> WebhookEvent:
    meta = _object(body, "meta", nullable=False)
    assert meta is not None
    data = _object(body, "data")
    previous = _object(body, "previous")
    dedupe = _id(meta.get("id"), "meta.id")
    action = meta.get("action")
    entity = meta.get("entity")
    if not isinstance(action, str) or not action:
        raise PayloadError("pipedrive webhook: meta.action is missing")
    if not isinstance(entity, str) or not entity:
        raise PayloadError("pipedrive webhook: meta.entity is missing")
    raw_id = meta.get("entity_id")
    if raw_id is None:
        raw_id = (data or previous or {}).get("id")
    object_id = _id(raw_id, "meta.entity_id")
    try:
        occurred = parse_time(meta.get("timestamp"), "meta.timestamp")
    except (PermanentError, OverflowError) as exc:  # OverflowError: year 1 or 9999 moved into UTC
        raise PayloadError("pipedrive webhook: meta.timestamp is not an RFC 3339 time") from exc
    _require_usable(data, entity, action, "data")
    name, value = _watched_change(data, previous)
    return WebhookEvent(
        source=SOURCE,
        dedupe_key=f"v2:{dedupe}",
        object_type=entity,
        object_id=object_id,
        action=action,
        occurred_at=occurred or now(),
        raw=body,
        property_name=name,
        property_value=value,
        change_source=_change_source(meta),
        attempt=_attempt(meta.get("attempt")),
        handled=entity in HANDLED_OBJECTS and action in _HANDLED_ACTIONS,
    )


def _parse_v1(body: Mapping[str, Any], now: Callable[[], datetime]) -> WebhookEvent:
    meta = _object(body, "meta", nullable=False)
    assert meta is not None
    current = _object(body, "current")
    previous = _object(body, "previous")
    event = body.get("event")
    action_raw = meta.get("action")
    entity = meta.get("object")
    if isinstance(event, str) and "." in event and (action_raw is None or entity is None):
        action_raw, _, entity = event.partition(".")
    if not isinstance(action_raw, str) or not isinstance(entity, str) or not action_raw or not entity:
        raise PayloadError("pipedrive webhook: meta.action/meta.object (or event) is missing")
    action = _V1_ACTIONS.get(action_raw, action_raw)
    raw_id = meta.get("id")
    if raw_id is None:
        raw_id = (current or previous or {}).get("id")
    object_id = _id(raw_id, "meta.id")
    stamp = meta.get("timestamp")
    micro = meta.get("timestamp_micro")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float | type(None)):
        raise PayloadError("pipedrive webhook: meta.timestamp is not epoch seconds")
    occurred = (
        epoch_time(stamp, per_second=1, what="pipedrive webhook: meta.timestamp")
        if stamp is not None
        else now()
    )
    # v1 has no delivery id; a change is the same change across retries when object, action
    # and the event's own timestamp agree (``retry`` grows, these do not).
    moment = _text(micro) or _text(stamp)
    if moment is None:
        raise PayloadError("pipedrive webhook: meta.timestamp is missing")
    _require_usable(current, entity, action, "current")
    name, value = _watched_change(current, previous)
    return WebhookEvent(
        source=SOURCE,
        dedupe_key=f"v1:{entity}:{object_id}:{action}:{moment}",
        object_type=entity,
        object_id=object_id,
        action=action,
        occurred_at=occurred,
        raw=body,
        property_name=name,
        property_value=value,
        change_source=_change_source(meta),
        attempt=_attempt(body.get("retry", meta.get("attempt_no"))),
        handled=entity in HANDLED_OBJECTS and action in _HANDLED_ACTIONS,
    )


def _is_v1(body: Mapping[str, Any]) -> bool:
    meta = body.get("meta")
    if "event" in body or "current" in body or body.get("v") == 1:
        return True
    return isinstance(meta, dict) and (meta.get("v") == 1 or "object" in meta)


def parse_webhook(
    body: bytes, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> list[WebhookEvent]:
    """The event in a v2 or v1 webhook body (Pipedrive sends one per request).

    ``now`` stamps an event whose payload carries no time.
    """
    decoded = decode_json(body, "pipedrive webhook")
    if not isinstance(decoded, dict):
        raise PayloadError("pipedrive webhook: body is not a JSON object")
    if _is_v1(decoded):
        return [_parse_v1(decoded, now)]
    return [_parse_v2(decoded, now)]
