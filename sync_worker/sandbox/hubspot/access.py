"""HubSpot sandbox access control: bearer tokens, the OAuth token endpoint and per-token rate limits.

Follows:
- OAuth ``POST /oauth/v1/token`` (form-encoded ``grant_type`` = ``authorization_code`` or
  ``refresh_token``, ``client_id``, ``client_secret``, ``redirect_uri``, ``code``, ``refresh_token``;
  answer ``token_type``, ``access_token``, ``refresh_token``, ``expires_in``; errors such as
  ``BAD_REFRESH_TOKEN``): https://developers.hubspot.com/docs/api-reference/auth-oauth-v1/guide
- 401 bodies with categories ``INVALID_AUTHENTICATION`` and ``EXPIRED_AUTHENTICATION``:
  https://developers.hubspot.com/docs/api-reference/latest/error-handling
- Limits: 100 requests per 10 s per app by default, search 5 per second per token; headers
  ``X-HubSpot-RateLimit-Daily``, ``-Daily-Remaining`` (private apps only, not OAuth),
  ``-Interval-Milliseconds``, ``-Max``, ``-Remaining``, ``-Secondly``, ``-Secondly-Remaining``;
  search responses carry none of them:
  https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details,
  https://developers.hubspot.com/changelog/rate-limit-headers-will-now-appear-for-oauth-authenticated-calls,
  https://developers.hubspot.com/docs/api-reference/search/guide

Tokens are random; no token or secret is ever put in an error message or a repr.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sync_worker.sandbox.common import WindowRateLimiter
from sync_worker.sandbox.hubspot.wire import ApiError, error_body, rate_limit_body

__all__ = ["AccessControl", "Caller"]

TokenKind = Literal["private", "oauth"]


@dataclass(frozen=True)
class Caller:
    """Who made a request: an opaque key for limits (not the token) and the kind of token."""

    key: str
    kind: TokenKind


class AccessControl:
    """Tokens and per-token limits. Time comes from ``clock`` (epoch seconds)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        access_token_ttl: int,
        rate_limit_per_10s: int,
        search_rate_limit_per_s: int,
        daily_limit: int,
        clock: Callable[[], float],
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.access_token_ttl = access_token_ttl
        self.daily_limit = daily_limit
        self._clock = clock
        self._lock = threading.Lock()
        self._private: dict[str, str] = {}
        self._access: dict[str, tuple[str, float]] = {}
        self._refresh: dict[str, str] = {}
        self._codes: set[str] = set()
        self._daily: dict[str, int] = {}
        self.general = WindowRateLimiter(rate_limit_per_10s, 10.0, clock=clock)
        self.secondly = WindowRateLimiter(max(1, rate_limit_per_10s // 10), 1.0, clock=clock)
        self.search = WindowRateLimiter(search_rate_limit_per_s, 1.0, clock=clock)

    def __repr__(self) -> str:
        return f"AccessControl(client_id={self._client_id!r})"

    # -- tokens ---------------------------------------------------------------------------------------------

    def add_private_app_token(self, token: str) -> None:
        with self._lock:
            self._private[token] = f"private-{len(self._private) + 1}"

    def issue_refresh_token(self) -> str:
        """A refresh token as if a user had installed the app (the token stays valid across refreshes)."""
        token = "sbx-refresh-" + secrets.token_hex(16)
        with self._lock:
            self._refresh[token] = f"install-{len(self._refresh) + 1}"
        return token

    def issue_authorization_code(self) -> str:
        code = "sbx-code-" + secrets.token_hex(12)
        with self._lock:
            self._codes.add(code)
        return code

    def issue_access_token(self, refresh_token: str | None = None) -> str:
        """A fresh access token living ``access_token_ttl`` seconds."""
        token = "sbx-access-" + secrets.token_hex(16)
        with self._lock:
            key = self._refresh.get(refresh_token or "", "direct")
            self._access[token] = (key, self._clock() + self.access_token_ttl)
        return token

    def exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        """``POST /oauth/v1/token``: trade a code or refresh token for an access token."""
        grant = form.get("grant_type", "")
        if grant not in ("authorization_code", "refresh_token"):
            raise ApiError(
                400, _oauth_error("BAD_GRANT_TYPE", "grant_type must be authorization_code or refresh_token")
            )
        if not hmac.compare_digest(form.get("client_id", ""), self._client_id):
            raise ApiError(400, _oauth_error("BAD_CLIENT_ID", "missing or unknown client id"))
        if not hmac.compare_digest(form.get("client_secret", ""), self._client_secret):
            raise ApiError(400, _oauth_error("BAD_CLIENT_SECRET", "missing or invalid client secret"))
        if grant == "authorization_code":
            with self._lock:
                known = form.get("code", "") in self._codes
                if known:
                    self._codes.discard(form.get("code", ""))
            if not known:
                raise ApiError(400, _oauth_error("BAD_AUTH_CODE", "missing or unknown auth code"))
            refresh = self.issue_refresh_token()
        else:
            refresh = form.get("refresh_token", "")
            with self._lock:
                known = refresh in self._refresh
            if not known:
                raise ApiError(400, _oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token"))
        access = self.issue_access_token(refresh)
        return {
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": access,
            "expires_in": self.access_token_ttl,
        }

    def authenticate(self, authorization: str | None) -> Caller:
        """Check an ``Authorization: Bearer`` header; 401 with the documented body otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        with self._lock:
            if scheme.lower() == "bearer" and token in self._private:
                return Caller(self._private[token], "private")
            entry = self._access.get(token) if scheme.lower() == "bearer" else None
        if entry is None:
            raise ApiError(
                401,
                error_body(
                    "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                    "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                ),
            )
        key, expires_at = entry
        now = self._clock()
        if now >= expires_at:
            ago = max(0, math.floor((now - expires_at) / 60))
            raise ApiError(
                401,
                error_body(
                    f"The OAuth token used to make this call expired {ago} minute(s) ago.",
                    "EXPIRED_AUTHENTICATION",
                    context={"expiredAt": [str(int(expires_at * 1000))]},
                ),
            )
        return Caller(key, "oauth")

    # -- limits ---------------------------------------------------------------------------------------------

    def check_rate(self, caller: Caller, *, search: bool) -> dict[str, str]:
        """Count one request; return the rate-limit headers to send, or raise the documented 429."""
        if search:
            decision = self.search.hit(caller.key)
            if not decision.allowed:
                raise ApiError(429, rate_limit_body("SECONDLY"))
            return {}
        decision = self.general.hit(caller.key)
        second = self.secondly.hit(caller.key)
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(decision.limit),
            "X-HubSpot-RateLimit-Remaining": str(decision.remaining),
            "X-HubSpot-RateLimit-Secondly": str(second.limit),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(second.remaining),
        }
        if caller.kind == "private":
            with self._lock:
                used = self._daily.get(caller.key, 0) + (1 if decision.allowed else 0)
                self._daily[caller.key] = used
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, self.daily_limit - used))
        if not decision.allowed:
            raise ApiError(429, rate_limit_body("TEN_SECONDLY_ROLLING"), headers)
        return headers

    def reset_limits(self) -> None:
        self.general.reset()
        self.secondly.reset()
        self.search.reset()


def _oauth_error(status: str, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "correlationId": secrets.token_hex(16)}
