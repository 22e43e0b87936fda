"""Credentials, request budgets and 429s of the Trello connector.

- :class:`KeyTokenAuth` puts ``key`` and ``token`` in the query string at send time
  ("…/1/members/me/?key={yourAPIKey}&token={yourAPIToken}",
  https://developer.atlassian.com/cloud/trello/guides/rest-api/authorization/). The request that
  a response keeps (and that httpx error messages print) is rewritten with both masked, and
  :func:`install_log_filter` masks them in httpx's own request log line, so neither reaches a
  message or a log.
- Budgets (https://developer.atlassian.com/cloud/trello/guides/rest-api/rate-limits/): 300
  requests per 10 s per API key and 100 per 10 s per token; ``/1/members/`` 100 per 900 s. The
  core's limiter is keyed by the account (base URL + API key, :func:`limits` / ``spec.account``),
  so the key budget (bucket ``default``) is shared by every token of that key, and each token has
  its own bucket named after a one-way hash of it. :class:`TrelloPacer` takes a slot in the token
  bucket and in the key bucket (and in ``members`` for ``/1/members/``) for each request.
- A 429 body names the budget that ran out, ``{"error":"API_TOKEN_LIMIT_EXCEEDED"}`` or
  ``{"error":"API_KEY_LIMIT_EXCEEDED"}``, and no rate-limit header is documented; over 200 429s per
  key in a window make every request 429 for the rest of it. Nothing says when the window that ran
  out began, so a 429 blocks that budget in the shared limiter for half a window, the expected rest
  of it (every worker waits, so 429s stay rare and far from the lockout), and is counted by kind in
  :attr:`TrelloPacer.limited`; the request itself is retried by the core's HTTP client.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Generator, Mapping

import httpx
from pydantic import SecretStr

from connectors.trello.settings import TrelloSettings
from sync_worker.errors import ConfigError
from sync_worker.http import RateLimiter
from sync_worker.ratelimit import Limit, account_key

__all__ = [
    "BLOCK_SECONDS",
    "KEY_BUCKET",
    "LIMIT_ERRORS",
    "MEMBERS_BUCKET",
    "KeyTokenAuth",
    "TrelloPacer",
    "install_log_filter",
    "limit_kind",
    "limits",
    "mask_url",
    "token_bucket",
]

KEY_BUCKET = "default"
MEMBERS_BUCKET = "members"
WINDOW_SECONDS = 10.0
BLOCK_SECONDS = WINDOW_SECONDS / 2
LIMIT_ERRORS: Mapping[str, str] = {
    "API_KEY_LIMIT_EXCEEDED": "key",
    "API_TOKEN_LIMIT_EXCEEDED": "token",
}
"""429 ``error`` value -> the budget it names (any other 429 counts against the token)."""

_SECRET_PARAMS = ("key", "token")
_MASK = "REDACTED"
_log = logging.getLogger(__name__)


def _secret(value: SecretStr | None, name: str) -> SecretStr:
    if value is None or not value.get_secret_value():
        raise ConfigError(f"trello: set SYNC_TRELLO__{name.upper()}")
    return value


def token_bucket(settings: TrelloSettings) -> str:
    """The limiter bucket of this token: ``trello-token-<16 hex>``, never the token itself."""
    return account_key("trello-token", str(settings.base_url), _secret(settings.token, "token"))


def limits(settings: TrelloSettings) -> dict[str, Limit]:
    """The documented budgets by bucket: key (``default``), this token, and ``/1/members/``."""
    return {
        KEY_BUCKET: Limit(settings.key_rate_limit_per_10s, WINDOW_SECONDS),
        token_bucket(settings): Limit(settings.token_rate_limit_per_10s, WINDOW_SECONDS),
        MEMBERS_BUCKET: Limit(settings.members_rate_limit_per_900s, 900.0),
    }


def mask_url(url: httpx.URL) -> httpx.URL:
    """``url`` with ``key`` and ``token`` masked."""
    for name in _SECRET_PARAMS:
        if name in url.params:
            url = url.copy_set_param(name, _MASK)
    return url


class TrelloPacer:
    """A :class:`~sync_worker.http.RateLimiter` over the core's limiter: token and key budgets.

    ``acquire(bucket)`` takes a slot in the token bucket, then the key bucket, then ``bucket``
    itself when it is another one (``members``). :meth:`limit_hit` blocks a budget for a window.
    """

    def __init__(self, inner: RateLimiter, token_bucket: str) -> None:
        self._inner = inner
        self._token = token_bucket
        self._lock = threading.Lock()
        self.limited: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"TrelloPacer({self._inner!r})"

    def _buckets(self, bucket: str) -> tuple[str, ...]:
        extra = () if bucket in (KEY_BUCKET, self._token) else (bucket,)
        return (self._token, KEY_BUCKET, *extra)

    def acquire(self, bucket: str) -> None:
        for name in self._buckets(bucket):
            self._inner.acquire(name)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        self._inner.observe(self._token, headers)

    def limit_hit(self, kind: str) -> None:
        """A 429 named ``kind`` ("key" or "token"): every worker waits half a window on that budget."""
        with self._lock:
            self.limited[kind] += 1
        bucket = KEY_BUCKET if kind == "key" else self._token
        self._inner.observe(bucket, httpx.Headers({"retry-after": str(BLOCK_SECONDS)}))
        _log.warning("trello: 429, the %s budget is spent; waiting %.0f s", kind, BLOCK_SECONDS)


def limit_kind(response: httpx.Response) -> str:
    """Which budget a 429 names: "key", "token" (also when the body says nothing known)."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return "token"
    error = body.get("error") if isinstance(body, dict) else None
    return LIMIT_ERRORS.get(error, "token") if isinstance(error, str) else "token"


class KeyTokenAuth(httpx.Auth):
    """Adds ``key`` and ``token`` to the query at send time; its repr never shows them.

    With a ``pacer``, a 429 blocks the budget its body names (see the module docstring).
    """

    requires_response_body = True

    def __init__(self, settings: TrelloSettings, pacer: TrelloPacer | None = None) -> None:
        self._key = _secret(settings.api_key, "api_key")
        self._token = _secret(settings.token, "token")
        self._pacer = pacer

    def __repr__(self) -> str:
        return "KeyTokenAuth(key=********, token=********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url.copy_set_param("key", self._key.get_secret_value())
        request.url = url.copy_set_param("token", self._token.get_secret_value())
        response = yield request
        response.request = httpx.Request(
            request.method, mask_url(request.url), headers=request.headers, extensions=request.extensions
        )
        if response.status_code == 429 and self._pacer is not None:
            self._pacer.limit_hit(limit_kind(response))


class _MaskFilter(logging.Filter):
    """Masks ``key``/``token`` in the URL httpx logs for every request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(mask_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def install_log_filter() -> None:
    """Install the masking filter on the ``httpx`` logger once."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskFilter) for f in logger.filters):
        logger.addFilter(_MaskFilter())
