"""HubSpot credentials: a private-app token, or OAuth access tokens refreshed ahead of expiry.

Private apps send their static token as ``Authorization: Bearer``:
https://developers.hubspot.com/docs/apps/legacy-apps/private-apps/overview
OAuth apps trade the refresh token for a new access token with a form-encoded
``POST /oauth/v1/token`` (``grant_type=refresh_token``, ``client_id``, ``client_secret``,
``refresh_token``); the answer carries ``access_token``, ``refresh_token`` and ``expires_in``
(seconds): https://developers.hubspot.com/docs/api/oauth/tokens and
https://developers.hubspot.com/docs/api/oauth-quickstart-guide

The token is refreshed ``margin`` seconds before it expires (by the injected clock), and once more
after a 401 (see :meth:`TokenSource.invalidate`). Secrets live in :class:`~pydantic.SecretStr` and
are revealed only while building the header or the refresh form; no repr shows them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import datetime, timedelta

import httpx
from pydantic import SecretStr

from sync_worker.errors import AuthError, PermanentError
from sync_worker.http import ApiClient

__all__ = ["BearerAuth", "TokenSource"]

TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a URL path, not a secret


class TokenSource:
    """Hands out the current access token, refreshing an OAuth one when it is about to expire."""

    def __init__(
        self,
        *,
        token: SecretStr | None,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
        refresh_token: SecretStr | None = None,
        oauth_api: ApiClient | None = None,
        clock: Callable[[], datetime],
        margin: float = 60.0,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._margin = timedelta(seconds=margin)
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._oauth_api = oauth_api
        self._access: SecretStr | None = token
        # None: unknown lifetime (a configured token), used until HubSpot refuses it.
        self._expires_at: datetime | None = None
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenSource(oauth={self.can_refresh})"

    @property
    def can_refresh(self) -> bool:
        return (
            self._refresh_token is not None
            and self._client_id is not None
            and self._client_secret is not None
            and self._oauth_api is not None
        )

    def current(self) -> str:
        """The access token to send now; refreshes first when missing or within the margin."""
        with self._lock:
            if self.can_refresh and (
                self._access is None
                or (self._expires_at is not None and self._clock() >= self._expires_at - self._margin)
            ):
                self._refresh()
            if self._access is None:
                raise AuthError("hubspot: no access token is configured")
            return self._access.get_secret_value()

    def invalidate(self) -> bool:
        """Forget the access token after a 401; True when a refresh can replace it."""
        with self._lock:
            if not self.can_refresh:
                return False
            self._access = None
            self._expires_at = None
            return True

    def _refresh(self) -> None:
        assert self._oauth_api is not None and self._refresh_token is not None
        assert self._client_secret is not None and self._client_id is not None
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "refresh_token": self._refresh_token.get_secret_value(),
        }
        try:
            response = self._oauth_api.request("POST", TOKEN_PATH, form=form, bucket="oauth")
        except AuthError:
            raise
        except PermanentError as exc:
            # HubSpot answers 400 BAD_REFRESH_TOKEN / BAD_CLIENT_ID: the credentials are wrong.
            raise AuthError(f"hubspot: refreshing the OAuth token was refused (HTTP {exc.status})") from exc
        data = response.data
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise AuthError("hubspot: the OAuth token answer has no access_token")
        expires_in = data.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise AuthError("hubspot: the OAuth token answer has no numeric expires_in")
        self._access = SecretStr(data["access_token"])
        self._expires_at = self._clock() + timedelta(seconds=float(expires_in))
        new_refresh = data.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            self._refresh_token = SecretStr(new_refresh)
        self.refreshes += 1


class BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <token>`` at send time, from a :class:`TokenSource`."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def __repr__(self) -> str:
        return "BearerAuth()"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._tokens.current()}"
        yield request
