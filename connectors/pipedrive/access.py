"""Credentials and request pacing for the Pipedrive connector.

- :class:`TokenAuth`: the API token as the ``x-api-token`` header, or an OAuth access token as
  ``Authorization: Bearer``, added at request time and never shown in a repr.
  https://pipedrive.readme.io/docs/core-api-concepts-authentication

Request pacing (the burst limit per 2-second window per token, learning from ``x-ratelimit-*``,
https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting) is the core's
:mod:`sync_worker.ratelimit`: in-process by default, shared in Redis by the worker runtime.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.errors import ConfigError

__all__ = ["TokenAuth"]


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
