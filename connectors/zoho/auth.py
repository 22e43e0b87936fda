"""Zoho OAuth 2: access tokens refreshed ahead of expiry, sent as ``Authorization: Zoho-oauthtoken``.

- Refresh: a form ``POST {accounts server}/oauth/v2/token`` with ``refresh_token``, ``client_id``,
  ``client_secret`` and ``grant_type=refresh_token``; the answer carries ``access_token``,
  ``expires_in`` (seconds; or ``expires_in_sec``), ``api_domain`` and ``token_type``; a refusal
  carries ``error`` instead of ``access_token`` (often with HTTP 200).
  https://www.zoho.com/crm/developer/docs/api/v8/refresh.html and the SDK's
  ``com/zoho/api/authenticator/oauth_token.py`` (``refresh_access_token``, ``parse_response``).
- The header prefix is ``Zoho-oauthtoken `` (SDK ``OAUTH_HEADER_PREFIX``), not ``Bearer``.
  https://www.zoho.com/crm/developer/docs/api/v8/oauth-overview.html
- Requests go to the token's ``api_domain`` (the SDK moves its environment there): the auth flow
  points each request at the API domain of the current token, so one client follows a data-centre
  move. A 401 (``INVALID_TOKEN``) forgets the token and the request is sent once more with a fresh one.

Secrets live in :class:`~pydantic.SecretStr` and are revealed only while building a header or the
refresh form; no repr or message shows them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import datetime, timedelta

import httpx
from pydantic import SecretStr

from sync_worker.errors import AuthError, PermanentError
from sync_worker.http import ApiClient

__all__ = ["TOKEN_PATH", "ZohoAuth", "ZohoTokenSource"]

TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 - a URL path, not a secret
_HEADER_PREFIX = "Zoho-oauthtoken "


class ZohoTokenSource:
    """The current access token and API domain; refreshes ``margin`` seconds before expiry."""

    def __init__(
        self,
        *,
        api_domain: str,
        clock: Callable[[], datetime],
        access_token: SecretStr | None = None,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
        refresh_token: SecretStr | None = None,
        accounts: ApiClient | None = None,
        margin: float = 300.0,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._margin = timedelta(seconds=margin)
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._accounts = accounts
        self._access = access_token
        self._expires_at: datetime | None = None
        self.api_domain = api_domain.rstrip("/")
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"ZohoTokenSource(api_domain={self.api_domain!r}, refreshable={self.can_refresh})"

    @property
    def can_refresh(self) -> bool:
        return None not in (self._refresh_token, self._client_id, self._client_secret, self._accounts)

    def current(self) -> tuple[str, str]:
        """``(access token, API domain)`` to use now, refreshing first when due."""
        with self._lock:
            due = self._access is None or (
                self._expires_at is not None and self._clock() >= self._expires_at - self._margin
            )
            if due and self.can_refresh:
                self._refresh()
            if self._access is None:
                raise AuthError(
                    "zoho: no access token; set SYNC_ZOHO__REFRESH_TOKEN and the client id/secret"
                )
            return self._access.get_secret_value(), self.api_domain

    def invalidate(self) -> bool:
        """Forget the access token after a 401; True when a refresh can replace it."""
        with self._lock:
            if not self.can_refresh:
                return False
            self._access = None
            self._expires_at = None
            return True

    def _refresh(self) -> None:
        assert self._accounts is not None and self._refresh_token is not None
        assert self._client_secret is not None and self._client_id is not None
        form = {
            "refresh_token": self._refresh_token.get_secret_value(),
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "grant_type": "refresh_token",
        }
        try:
            response = self._accounts.request("POST", TOKEN_PATH, form=form, bucket="oauth")
        except AuthError:
            raise
        except PermanentError as exc:
            raise AuthError(f"zoho: refreshing the access token was refused (HTTP {exc.status})") from exc
        data = response.data
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            error = data.get("error") if isinstance(data, dict) else None
            detail = f": {str(error)[:60]}" if isinstance(error, str) else ""
            raise AuthError(f"zoho: the token answer has no access_token{detail}")
        expires = data.get("expires_in", data.get("expires_in_sec"))
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            expires = 3600
        self._access = SecretStr(data["access_token"])
        self._expires_at = self._clock() + timedelta(seconds=float(expires))
        domain = data.get("api_domain")
        if isinstance(domain, str) and domain.startswith(("https://", "http://")):
            self.api_domain = domain.rstrip("/")
        self.refreshes += 1


class ZohoAuth(httpx.Auth):
    """Sets the ``Zoho-oauthtoken`` header and the API domain at send time; one retry after a 401."""

    def __init__(self, tokens: ZohoTokenSource) -> None:
        self._tokens = tokens

    def __repr__(self) -> str:
        return "ZohoAuth()"

    def _prepare(self, request: httpx.Request) -> None:
        token, domain = self._tokens.current()
        target = httpx.URL(domain)
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["Host"] = target.netloc.decode("ascii")
        request.headers["Authorization"] = _HEADER_PREFIX + token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._prepare(request)
        response = yield request
        if response.status_code == 401 and self._tokens.invalidate():
            self._prepare(request)
            yield request
