"""Salesforce wire details shared by the connector: error arrays, the limit header, datetimes.

- Top-level errors are a JSON array ``[{"message", "errorCode", "fields"}]``; sObject Collections
  results carry ``errors[{"statusCode", "message", "fields"}]`` instead (REST API Developer Guide,
  "Status Codes and Error Responses":
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
- Every answer carries ``Sforce-Limit-Info: api-usage=N/M`` (the org's rolling 24-hour
  allocation, N used of M; simple-salesforce ``parse_api_usage``). Over the allocation, or over the
  25 (5 in developer orgs) concurrent requests lasting 20 s or more, Salesforce answers **403**
  ``REQUEST_LIMIT_EXCEEDED`` with no ``Retry-After`` ("Salesforce Developer Limits and
  Allocations Quick Reference", API Request Limits:
  https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm).

:func:`read_limits` (the spec's ``read_limits``) turns the header into a limiter observation: the
allocation as the bucket's maximum, and a block of :data:`EXHAUSTED_BLOCK_SECONDS` once it is used
up, shared by every worker. :class:`SalesforceTransport` bounds the requests in flight and turns a
403 ``REQUEST_LIMIT_EXCEEDED`` into :class:`RequestLimitExceeded` before the generic status table
(403: auth failure) sees it; the connector re-raises it as a
:class:`~sync_worker.errors.TransientError` with ``retry_after``, never a dead letter.
"""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime
from typing import Any

import httpx

from sync_worker.errors import SyncWorkerError
from sync_worker.ratelimit import Observation, read_headers

__all__ = [
    "CONCURRENCY_RETRY_SECONDS",
    "DAY_SECONDS",
    "EXHAUSTED_BLOCK_SECONDS",
    "LIMIT_HEADER",
    "RequestLimitExceeded",
    "SalesforceTransport",
    "api_usage",
    "error_codes",
    "format_datetime",
    "parse_datetime",
    "read_limits",
    "truncate_to_minute",
]

LIMIT_HEADER = "Sforce-Limit-Info"
DAY_SECONDS = 86_400.0
EXHAUSTED_BLOCK_SECONDS = 900.0
"""How long every worker stops once the org's allocation is used up: it is a rolling 24-hour
window, so capacity comes back as old calls age out, at a time the header does not say."""
CONCURRENCY_RETRY_SECONDS = 20.0
"""A refusal while the allocation is not used up is the long-running concurrency cap (requests of
20 s or more); one such request's length is the wait. It is this request's wait only: the shared
limiter is blocked for a used-up allocation, not for requests in flight elsewhere."""

_USAGE = re.compile(r"(?:^|[;\s])api-usage=(\d+)/(\d+)")


def api_usage(headers: httpx.Headers) -> tuple[int, int] | None:
    """``(used, allocation)`` from ``Sforce-Limit-Info``, or None when absent or unreadable."""
    match = _USAGE.search(headers.get(LIMIT_HEADER, ""))
    if match is None or int(match.group(2)) < 1:
        return None
    return int(match.group(1)), int(match.group(2))


def read_limits(headers: httpx.Headers, window_seconds: float, now_epoch: float) -> Observation:
    """What Salesforce's headers say for a bucket of ``window_seconds``: the allocation as a
    maximum (scaled to the window), and a block once it is used up; generic headers too."""
    generic = read_headers(headers, window_seconds, now_epoch=now_epoch)
    maxima = [generic.max_requests] if generic.max_requests is not None else []
    blocks = [generic.block_seconds] if generic.block_seconds is not None else []
    usage = api_usage(headers)
    remaining = None
    if usage is not None:
        used, allocation = usage
        if window_seconds <= DAY_SECONDS + 1e-9:
            maxima.append(max(1, math.floor(allocation / math.ceil(DAY_SECONDS / window_seconds - 1e-9))))
        if window_seconds >= DAY_SECONDS - 1e-9:  # the day's allocation is this bucket's (for status)
            remaining = max(0, allocation - used)
        if used >= allocation:
            blocks.append(EXHAUSTED_BLOCK_SECONDS)
    return Observation(min(maxima) if maxima else None, max(blocks) if blocks else None, remaining)


def error_codes(body: Any) -> list[str]:
    """The ``errorCode`` values of a top-level error array (raw bytes or parsed JSON)."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return []
    if not isinstance(body, list):
        return []
    return [str(e["errorCode"]) for e in body if isinstance(e, dict) and isinstance(e.get("errorCode"), str)]


class RequestLimitExceeded(SyncWorkerError):
    """403 ``REQUEST_LIMIT_EXCEEDED``: the org's allocation or its concurrency cap is reached.

    Deliberately not a :class:`~sync_worker.errors.TransientError`: the HTTP layer must not sleep
    on it; the connector hands it back to the queue with ``retry_after``.
    """

    def __init__(self, message: str, *, retry_after: float, headers: httpx.Headers, exhausted: bool) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers
        self.exhausted = exhausted


class SalesforceTransport(httpx.BaseTransport):
    """Wraps the real transport: at most ``max_concurrent`` requests in flight in this process,
    and a 403 ``REQUEST_LIMIT_EXCEEDED`` raised as :class:`RequestLimitExceeded`."""

    def __init__(self, inner: httpx.BaseTransport | None = None, *, max_concurrent: int = 5) -> None:
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._slots:
            response = self._inner.handle_request(request)
            if response.status_code != 403:
                return response
            response.read()
        if "REQUEST_LIMIT_EXCEEDED" not in error_codes(response.content):
            return response
        response.close()
        usage = api_usage(response.headers)
        exhausted = usage is not None and usage[0] >= usage[1]
        wait = EXHAUSTED_BLOCK_SECONDS if exhausted else CONCURRENCY_RETRY_SECONDS
        what = "daily API allocation used up" if exhausted else "request limit (concurrency) reached"
        raise RequestLimitExceeded(
            f"salesforce {request.method} {request.url.path}: 403 REQUEST_LIMIT_EXCEEDED: {what}",
            retry_after=wait,
            headers=response.headers,
            exhausted=exhausted,
        )

    def close(self) -> None:
        self._inner.close()


def parse_datetime(value: Any) -> datetime | None:
    """A Salesforce datetime (``2013-05-08T21:20:00.000+0000`` or ISO 8601 with ``Z``/``+00:00``)
    as aware UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    """A SOQL datetime literal / REST ``start``/``end`` value: ``YYYY-MM-DDThh:mm:ssZ`` (UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncate_to_minute(moment: datetime) -> datetime:
    """``moment`` with seconds cut, as ``updated/`` and ``deleted/`` read their windows."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)
