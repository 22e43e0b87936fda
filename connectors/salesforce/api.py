"""The Salesforce REST boundary: the org's instance, the API version, tokens, limits, query paging.

Every call goes to ``{instance_url}/services/data/v{api_version}/...`` with ``Authorization:
Bearer`` (REST API Developer Guide, "Resources":
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_list.htm).
``instance_url`` comes from the token answer and is kept; a 401 (``INVALID_SESSION_ID``) obtains a
new token once and repeats the call. A 403 ``REQUEST_LIMIT_EXCEEDED`` becomes a
:class:`~sync_worker.errors.TransientError` with ``retry_after`` and ``status`` 429 (the rate
limit Salesforce signals with a 403); a used-up allocation also blocks the shared limiter for that
long (:mod:`connectors.salesforce.wire`).

SOQL (``GET /query?q=`` and ``/queryAll?q=``, which also returns deleted rows) answers at most
2,000 records a batch with ``done`` and ``nextRecordsUrl``, a path followed as is
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm and
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm); the
``Sforce-Query-Options: batchSize=N`` header asks for smaller batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx

from connectors.salesforce.auth import BearerAuth, TokenSource
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.wire import RequestLimitExceeded, SalesforceTransport
from sync_worker.errors import AuthError, PermanentError, TransientError
from sync_worker.http import ApiClient, ApiResponse, RateLimiter

__all__ = ["SalesforceApi"]


class SalesforceApi:
    """Authenticated, limited calls to one org's REST API."""

    def __init__(
        self,
        section: SalesforceSettings,
        *,
        limiter: RateLimiter,
        clock: Callable[[], datetime],
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 4,
    ) -> None:
        self.version = section.api_version
        self._limiter = limiter
        self._batch_size = section.query_batch_size
        login_url = str(section.login_url).rstrip("/")
        slots = section.max_concurrent_requests
        self._oauth = ApiClient(
            "salesforce-oauth",
            login_url,
            transport=SalesforceTransport(transport, max_concurrent=slots),
            sleep=sleep,
            max_attempts=max_attempts,
        )
        self.tokens = TokenSource(
            oauth_api=self._oauth,
            clock=clock,
            login_url=login_url,
            client_id=section.client_id,
            client_secret=section.client_secret,
            refresh_token=section.refresh_token,
            username=section.username,
            private_key=section.private_key,
            access_token=section.access_token,
            instance_url=str(section.instance_url) if section.instance_url else None,
        )
        self._api = ApiClient(
            "salesforce",
            str(section.instance_url or login_url),
            auth=BearerAuth(self.tokens),
            transport=SalesforceTransport(transport, max_concurrent=slots),
            limiter=limiter,
            sleep=sleep,
            max_attempts=max_attempts,
        )

    def __repr__(self) -> str:
        return f"SalesforceApi(v{self.version}, {self.tokens!r})"

    @property
    def calls(self) -> int:
        return self._api.calls

    def close(self) -> None:
        self._api.close()
        self._oauth.close()

    def url(self, path: str) -> str:
        """``path`` on the org's instance: under the versioned root unless it is a ``/services/`` path."""
        instance = self.tokens.current().instance_url
        if path.startswith("/services/"):
            return instance + path
        return f"{instance}/services/data/v{self.version}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        bucket: str = "default",
    ) -> ApiResponse:
        """One call; after a 401 a new token is obtained and the call made once more."""
        try:
            return self._send(method, path, params, json_body, headers, bucket)
        except AuthError as exc:
            if exc.status != 401 or not self.tokens.invalidate():
                raise
        return self._send(method, path, params, json_body, headers, bucket)

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        bucket: str,
    ) -> ApiResponse:
        try:
            return self._api.request(
                method, self.url(path), params=params, json_body=json_body, headers=headers, bucket=bucket
            )
        except RequestLimitExceeded as exc:
            if exc.exhausted:
                told = httpx.Headers(exc.headers)
                told["retry-after"] = str(int(exc.retry_after))
                self._limiter.observe(bucket, told)
            # 429: what the status table calls rate-limited; Salesforce says it with a 403.
            raise TransientError(str(exc), retry_after=exc.retry_after, status=429) from exc

    def query_pages(
        self, soql: str, *, include_deleted: bool = False
    ) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """``(records, done)`` per batch of ``soql``, following ``nextRecordsUrl``."""
        options = {"Sforce-Query-Options": f"batchSize={self._batch_size}"}
        path = "/queryAll" if include_deleted else "/query"
        response = self.request("GET", path, params={"q": soql}, headers=options)
        while True:
            data = response.data
            if not isinstance(data, dict) or not isinstance(data.get("records"), list):
                raise PermanentError("salesforce: the query answer has no records array")
            records = [r for r in data["records"] if isinstance(r, dict)]
            next_url = data.get("nextRecordsUrl")
            done = data.get("done") is not False or not isinstance(next_url, str)
            yield records, done
            if done:
                return
            assert isinstance(next_url, str)
            response = self.request("GET", next_url, headers=options)

    def query_all(self, soql: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of ``soql`` (small result sets: stages, a batch of ids)."""
        return [r for records, _ in self.query_pages(soql, include_deleted=include_deleted) for r in records]
