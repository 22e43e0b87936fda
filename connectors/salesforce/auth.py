"""Salesforce OAuth: the refresh-token grant, the JWT bearer flow, or a configured session id.

Both grants ``POST {login_url}/services/oauth2/token`` form-encoded:

- refresh: ``grant_type=refresh_token&refresh_token=...&client_id=...[&client_secret=...]``
  ("Understanding the OAuth Refresh Token Process", REST API Developer Guide:
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_understanding_refresh_token_oauth.htm);
- JWT bearer: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``, the JWT
  signed RS256 with claims ``iss`` (consumer key), ``sub`` (username), ``aud`` (the login URL) and
  ``exp`` (now + 3 minutes), as simple-salesforce ``login.py`` builds it
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).

The answer carries ``access_token``, ``instance_url`` (every API call goes there) and ``id``, the
identity URL ``https://login.salesforce.com/id/{orgId}/{userId}``; there is no ``expires_in``: a
session lasts as long as the org's timeout, so the token is replaced when an API call answers 401
``INVALID_SESSION_ID`` (:meth:`TokenSource.invalidate`). Refusals are
``{"error", "error_description"}`` (HTTP 400), raised as :class:`~sync_worker.errors.AuthError`.
Secrets stay in :class:`~pydantic.SecretStr`; no repr or message shows them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import jwt
from pydantic import SecretStr

from sync_worker.errors import AuthError, ConfigError, PermanentError
from sync_worker.http import ApiClient

__all__ = ["TOKEN_PATH", "BearerAuth", "Session", "TokenSource", "identity_ids"]

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME = timedelta(minutes=3)

Grant = Literal["refresh_token", "jwt", "static"]


@dataclass(frozen=True)
class Session:
    """One access token and where to use it. ``repr`` hides the token."""

    access_token: SecretStr
    instance_url: str
    user_id: str | None = None
    org_id: str | None = None


def identity_ids(identity_url: Any) -> tuple[str | None, str | None]:
    """``(org id, user id)`` from the identity URL ``.../id/{orgId}/{userId}``, else ``(None, None)``."""
    if not isinstance(identity_url, str):
        return None, None
    parts = [p for p in identity_url.split("/") if p]
    if len(parts) >= 3 and parts[-3] == "id":
        return parts[-2], parts[-1]
    return None, None


class TokenSource:
    """Hands out the current :class:`Session`, obtaining a new one when there is none."""

    def __init__(
        self,
        *,
        oauth_api: ApiClient,
        clock: Callable[[], datetime],
        login_url: str,
        client_id: str | None = None,
        client_secret: SecretStr | None = None,
        refresh_token: SecretStr | None = None,
        username: str | None = None,
        private_key: SecretStr | None = None,
        access_token: SecretStr | None = None,
        instance_url: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._api = oauth_api
        self._clock = clock
        self._login_url = login_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._username = username
        self._private_key = private_key
        self.grant: Grant
        if refresh_token is not None and client_id:
            self.grant = "refresh_token"
        elif private_key is not None and client_id and username:
            self.grant = "jwt"
        elif access_token is not None and instance_url:
            self.grant = "static"
        else:
            raise ConfigError(
                "salesforce: set SYNC_SALESFORCE__REFRESH_TOKEN and __CLIENT_ID, or __PRIVATE_KEY, "
                "__CLIENT_ID and __USERNAME, or __ACCESS_TOKEN and __INSTANCE_URL"
            )
        self._session: Session | None = None
        if access_token is not None and instance_url:
            self._session = Session(access_token, instance_url.rstrip("/"))
        self.grants = 0

    def __repr__(self) -> str:
        return f"TokenSource(grant={self.grant!r})"

    @property
    def can_refresh(self) -> bool:
        return self.grant != "static"

    def current(self) -> Session:
        """The session to use now; obtains one first when there is none."""
        with self._lock:
            if self._session is None:
                self._session = self._obtain()
            return self._session

    def known(self) -> Session | None:
        """The session held now, without asking for one."""
        with self._lock:
            return self._session

    def invalidate(self) -> bool:
        """Forget the session after a 401; True when a new one can be obtained."""
        with self._lock:
            if not self.can_refresh:
                return False
            self._session = None
            return True

    def _form(self) -> dict[str, str]:
        assert self._client_id is not None
        if self.grant == "refresh_token":
            assert self._refresh_token is not None
            form = {
                "grant_type": "refresh_token",
                "refresh_token": self._refresh_token.get_secret_value(),
                "client_id": self._client_id,
            }
            if self._client_secret is not None:
                form["client_secret"] = self._client_secret.get_secret_value()
            return form
        assert self._private_key is not None and self._username is not None
        claims = {
            "iss": self._client_id,
            "sub": self._username,
            "aud": self._login_url,
            "exp": int((self._clock() + JWT_LIFETIME).timestamp()),
        }
        try:
            assertion = jwt.encode(claims, self._private_key.get_secret_value(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"salesforce: SYNC_SALESFORCE__PRIVATE_KEY is not a usable RSA key ({type(exc).__name__})"
            ) from exc
        return {"grant_type": JWT_GRANT, "assertion": assertion}

    def _obtain(self) -> Session:
        try:
            response = self._api.request("POST", TOKEN_PATH, form=self._form(), bucket="oauth")
        except AuthError:
            raise
        except PermanentError as exc:
            raise AuthError(
                f"salesforce: the {self.grant} grant was refused (HTTP {exc.status}): {exc}"
            ) from exc
        data = response.data
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise AuthError("salesforce: the token answer has no access_token")
        instance = data.get("instance_url")
        if not isinstance(instance, str) or not instance.startswith(("https://", "http://")):
            raise AuthError("salesforce: the token answer has no instance_url")
        org_id, user_id = identity_ids(data.get("id"))
        self.grants += 1
        return Session(SecretStr(data["access_token"]), instance.rstrip("/"), user_id, org_id)


class BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <access token>`` at send time, from a :class:`TokenSource`."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def __repr__(self) -> str:
        return "BearerAuth()"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._tokens.current().access_token.get_secret_value()}"
        yield request
