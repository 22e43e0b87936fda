"""HubSpot wire formats as pure functions: error bodies, timestamps, search filters, signatures.

Follows:
- Error bodies (``status``, ``message``, ``correlationId``, ``category``, ``errors``, ``context``) and
  batch multi-status: https://developers.hubspot.com/docs/api-reference/latest/error-handling
- 429 bodies (``errorType: RATE_LIMIT``, ``policyName``) and the ``X-HubSpot-RateLimit-*`` headers:
  https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details and
  https://developers.hubspot.com/changelog/2018-11-06-rate-limit-information-headers-will-be-included-in-http-responses
- Search operators (EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY),
  dates as epoch-millisecond strings, limit 200, 10,000-result cap answered 400:
  https://developers.hubspot.com/docs/api-reference/search/guide
- Webhook signatures v1 (hex SHA-256 of secret + body) and v3 (base64 HMAC-SHA256 of
  method + uri + body + timestamp, keyed by the app secret):
  https://developers.hubspot.com/docs/guides/apps/authentication/validating-requests

Nothing here touches the network or reads a clock; callers pass times in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "SEARCH_RESULT_CAP",
    "ApiError",
    "error_body",
    "from_iso_ms",
    "matches_filter_groups",
    "rate_limit_body",
    "sign_v1",
    "sign_v3",
    "sort_key",
    "to_iso",
]

SEARCH_RESULT_CAP = 10_000
"""Search never pages past this many results; asking for more is a 400."""

_DATE_PROPERTIES = frozenset(
    {"hs_lastmodifieddate", "createdate", "closedate", "hs_v2_date_entered_current_stage"}
)


class ApiError(Exception):
    """An HTTP error answered with HubSpot's documented error body."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body.get('message', '')}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def error_body(
    message: str,
    category: str,
    *,
    errors: Sequence[Mapping[str, Any]] = (),
    context: Mapping[str, Any] | None = None,
    sub_category: str | None = None,
) -> dict[str, Any]:
    """The documented error body: ``status: "error"`` plus message, category and a correlation id."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if sub_category is not None:
        body["subCategory"] = sub_category
    if errors:
        body["errors"] = [dict(e) for e in errors]
    if context is not None:
        body["context"] = dict(context)
    body["links"] = {"knowledge-base": "https://www.hubspot.com/products/service/knowledge-base"}
    return body


def rate_limit_body(policy: str) -> dict[str, Any]:
    """The 429 body; ``policy`` is ``TEN_SECONDLY_ROLLING`` or ``SECONDLY``."""
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "requestId": str(uuid.uuid4()),
    }


def to_iso(ms: int) -> str:
    """Epoch milliseconds to HubSpot's ISO-8601 form, e.g. ``2019-10-30T03:30:17.883Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def from_iso_ms(value: str) -> int | None:
    """An ISO-8601 date/datetime or an epoch-ms string to epoch ms; None when it is neither."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _comparable(prop: str, value: str) -> Decimal | str:
    """Dates compare as epoch ms, numbers as decimals, anything else as lower-case text."""
    if prop in _DATE_PROPERTIES or prop.startswith(("hs_date_entered_", "hs_date_exited_")):
        ms = from_iso_ms(value)
        if ms is not None:
            return Decimal(ms)
    try:
        return Decimal(value)
    except InvalidOperation:
        return value.lower()


def _compare(prop: str, left: str, right: str) -> int:
    a, b = _comparable(prop, left), _comparable(prop, right)
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return (a > b) - (a < b)
    sa, sb = str(a), str(b)
    return (sa > sb) - (sa < sb)


def _matches(properties: Mapping[str, str | None], flt: Mapping[str, Any]) -> bool:
    prop = str(flt.get("propertyName", ""))
    op = str(flt.get("operator", "EQ")).upper()
    actual = properties.get(prop)
    if op == "HAS_PROPERTY":
        return actual not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return actual in (None, "")
    if op in ("IN", "NOT_IN"):
        values = [str(v) for v in flt.get("values", [])]
        found = actual is not None and any(_compare(prop, actual, v) == 0 for v in values)
        return found if op == "IN" else not found
    if actual in (None, ""):
        return op == "NEQ"
    assert actual is not None
    value = str(flt.get("value", ""))
    if op == "BETWEEN":
        high = str(flt.get("highValue", ""))
        return _compare(prop, actual, value) >= 0 and _compare(prop, actual, high) <= 0
    cmp = _compare(prop, actual, value)
    outcomes = {
        "EQ": cmp == 0,
        "NEQ": cmp != 0,
        "LT": cmp < 0,
        "LTE": cmp <= 0,
        "GT": cmp > 0,
        "GTE": cmp >= 0,
    }
    if op not in outcomes:
        raise ApiError(400, error_body(f"Unsupported filter operator: {op}", "VALIDATION_ERROR"))
    return outcomes[op]


def matches_filter_groups(properties: Mapping[str, str | None], groups: Sequence[Mapping[str, Any]]) -> bool:
    """Filter groups are ORed; the filters inside one group are ANDed. No groups matches all."""
    if not groups:
        return True
    return any(all(_matches(properties, f) for f in group.get("filters", [])) for group in groups)


def sort_key(properties: Mapping[str, str | None], prop: str) -> tuple[int, Decimal | str]:
    """Sort key for one property; missing values sort first ascending."""
    value = properties.get(prop)
    if value in (None, ""):
        return (0, "")
    assert value is not None
    comparable = _comparable(prop, value)
    return (1 if isinstance(comparable, Decimal) else 2, comparable)


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """``X-HubSpot-Signature-v3``: base64(HMAC-SHA256(secret, method + uri + body + timestamp))."""
    message = method.encode() + uri.encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(client_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_v1(client_secret: str, body: bytes) -> str:
    """``X-HubSpot-Signature`` v1: hex SHA-256 of secret + body."""
    return hashlib.sha256(client_secret.encode() + body).hexdigest()
