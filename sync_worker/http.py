"""The one boundary where httpx lives.

Every connector talks HTTP through :class:`ApiClient`: one ``httpx.Client`` per connector per
process, with timeouts and a ``User-Agent``. Responses and transport failures become the project's
errors through :data:`STATUS_ERRORS`, a table kept as data (429 and 5xx transient, 401 and 403 auth,
other 4xx permanent), always chained ``from exc``. tenacity retries transient errors a bounded number
of times with jittered exponential backoff, waiting at least what ``Retry-After`` (or a provider's
rate-limit reset header) asked for.

Messages carry the method and the path only: never the query string (LaGrowthMachine takes its key
there), headers or bodies, so no secret reaches an exception or a log line.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from sync_worker import __version__
from sync_worker.errors import AuthError, PermanentError, SyncWorkerError, TransientError
from sync_worker.metrics import RATE_LIMITED

__all__ = [
    "STATUS_ERRORS",
    "USER_AGENT",
    "ApiClient",
    "ApiResponse",
    "RateLimiter",
    "error_for_status",
    "parse_retry_after",
]

USER_AGENT = f"sync-worker/{__version__} (+https://github.com/sync-worker/sync-worker)"
_log = logging.getLogger(__name__)

# Status code (or class, as "4xx"/"5xx") -> error type. Looked up most specific first.
STATUS_ERRORS: Mapping[int | str, type[SyncWorkerError]] = {
    401: AuthError,
    403: AuthError,
    408: TransientError,
    409: PermanentError,
    423: TransientError,
    425: TransientError,
    429: TransientError,
    "4xx": PermanentError,
    "5xx": TransientError,
}

# Headers that say how long to wait, in the order we trust them.
_RESET_HEADERS = ("retry-after", "x-ratelimit-reset", "ratelimit-reset")


class RateLimiter(Protocol):
    """Shared request budget: ``acquire`` blocks until a request may go, ``observe`` learns from headers."""

    def acquire(self, bucket: str) -> None: ...

    def observe(self, bucket: str, headers: httpx.Headers) -> None: ...


@dataclass(frozen=True)
class ApiResponse:
    """A successful response, decoded. ``data`` is the parsed JSON body (None when empty)."""

    status: int
    headers: httpx.Headers
    data: Any


def parse_retry_after(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or a rate-limit reset header."""
    for name in _RESET_HEADERS:
        raw = headers.get(name)
        if raw is None:
            continue
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            continue
        current = now or datetime.now(UTC)
        return max(0.0, (when - current).total_seconds())
    return None


def error_for_status(status: int, message: str, *, retry_after: float | None = None) -> SyncWorkerError:
    """Build the project error that :data:`STATUS_ERRORS` assigns to ``status``."""
    kind = STATUS_ERRORS.get(status) or STATUS_ERRORS.get(f"{status // 100}xx") or PermanentError
    if issubclass(kind, TransientError):
        return kind(message, retry_after=retry_after, status=status)
    if issubclass(kind, PermanentError):
        return kind(message, status=status)
    return kind(message)


def _provider_message(response: httpx.Response) -> str:
    """A short, secret-free summary of an error body: the provider's own message field."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("message", "error", "error_info", "category"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
    return ""


class ApiClient:
    """A small, typed HTTP client for one connector.

    ``auth`` carries credentials (an ``httpx.Auth``), so they never sit in ``repr`` or messages.
    ``sleep`` and ``max_attempts`` are injectable for tests.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
        )
        self.calls = 0

    def __repr__(self) -> str:
        return f"ApiClient({self.name!r}, {str(self._client.base_url)!r})"

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        bucket: str = "default",
    ) -> ApiResponse:
        """Send one request, retrying transient failures; raise the project's errors otherwise."""
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            retry=retry_if_exception_type(TransientError),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._send_once(method, path, params, json_body, form, headers, bucket)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        """Jittered exponential backoff, but never shorter than what the server asked for."""
        exp = min(self._backoff_max, self._backoff_initial * (2 ** (state.attempt_number - 1)))
        delay = random.uniform(0, exp)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._backoff_max * 4))
        return delay

    def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        form: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        bucket: str,
    ) -> ApiResponse:
        where = f"{self.name} {method} {path}"
        if self._limiter is not None:
            self._limiter.acquire(bucket)
        self.calls += 1
        try:
            response = self._client.request(
                method, path, params=params, json=json_body, data=form, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"{where}: timed out") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{where}: {type(exc).__name__}") from exc
        if self._limiter is not None:
            self._limiter.observe(bucket, response.headers)
        if response.status_code == 429:
            RATE_LIMITED.labels(system=self.name).inc()
        if response.status_code >= 400:
            detail = _provider_message(response)
            message = f"{where}: HTTP {response.status_code}" + (f": {detail}" if detail else "")
            _log.debug("%s", message)
            try:
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                raise error_for_status(
                    response.status_code, message, retry_after=parse_retry_after(response.headers)
                ) from exc
        if not response.content:
            return ApiResponse(response.status_code, response.headers, None)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TransientError(
                f"{where}: HTTP {response.status_code} with a body that is not JSON"
            ) from exc
        return ApiResponse(response.status_code, response.headers, data)
