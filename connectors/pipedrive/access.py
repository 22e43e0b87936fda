"""Credentials and request pacing for the Pipedrive connector.

- :class:`TokenAuth`: the API token as the ``x-api-token`` header, or an OAuth access token as
  ``Authorization: Bearer``, added at request time and never shown in a repr.
  https://pipedrive.readme.io/docs/core-api-concepts-authentication
- :class:`WindowLimiter`: the burst limit per 2-second window per token, learning from
  ``x-ratelimit-limit`` / ``x-ratelimit-remaining`` / ``x-ratelimit-reset``.
  https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator

import httpx

from sync_worker.errors import ConfigError
from sync_worker.settings import PipedriveSettings

__all__ = ["TokenAuth", "WindowLimiter"]


class TokenAuth(httpx.Auth):
    """Adds the credential at request time; its repr never shows it."""

    def __init__(self, settings: PipedriveSettings) -> None:
        if settings.oauth_token is not None:
            self._header = ("Authorization", "Bearer " + settings.oauth_token.get_secret_value())
        elif settings.api_token is not None:
            self._header = ("x-api-token", settings.api_token.get_secret_value())
        else:
            raise ConfigError("pipedrive: set SYNC_PIPEDRIVE__API_TOKEN or SYNC_PIPEDRIVE__OAUTH_TOKEN")

    def __repr__(self) -> str:
        return f"TokenAuth({self._header[0]!r}, '********')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header[0]] = self._header[1]
        yield request


class WindowLimiter:
    """In-process burst limiter: at most ``limit`` requests per ``window`` seconds.

    It also learns from ``x-ratelimit-*``: when ``remaining`` hits 0 it waits ``reset`` seconds,
    and it never plans for more than the server's ``limit``. Shared limits across processes belong
    in Redis; pass such a limiter to :func:`from_settings` instead.
    """

    def __init__(
        self,
        limit: int,
        *,
        window: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, bucket: str) -> None:
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._blocked_until - now)
            while self._sent and self._sent[0] <= now + wait - self._window:
                self._sent.popleft()
            if len(self._sent) >= self._limit:
                wait = max(wait, self._sent[0] + self._window - now)
            if wait > 0:
                self._sleep(wait)
            self._sent.append(now + wait)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        with self._lock:
            limit = _header_number(headers, "x-ratelimit-limit")
            if limit is not None and limit >= 1:
                self._limit = min(self._limit, int(limit))
            remaining = _header_number(headers, "x-ratelimit-remaining")
            reset = _header_number(headers, "x-ratelimit-reset")
            if remaining is not None and remaining <= 0 and reset is not None:
                self._blocked_until = max(self._blocked_until, self._clock() + reset)


def _header_number(headers: httpx.Headers, name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None
