"""The Zoho CRM v8 calls the connector makes, on :class:`~sync_worker.http.ApiClient`.

- ``GET /crm/v8/settings/layouts?module=Deals`` (layout ids) and
  ``GET /crm/v8/settings/pipeline?layout_id=`` (``layout_id`` is mandatory).
  https://www.zoho.com/crm/developer/docs/api/v8/layouts-meta.html,
  https://www.zoho.com/crm/developer/docs/api/v8/get-pipelines.html
- ``GET /crm/v8/Deals`` with ``fields`` (mandatory, at most 50), ``per_page`` (at most 200),
  ``sort_by=Modified_Time``, ``sort_order=asc``, ``page`` for the first page and ``page_token``
  (from ``info.next_page_token``) after it, since ``page`` stops at 2,000 records
  (``DISCRETE_PAGINATION_LIMIT_EXCEEDED``); ``If-Modified-Since`` for changes; ``ids`` (up to 100)
  for a batch read. No rows is HTTP 204 with an empty body (304 is read the same way).
  https://www.zoho.com/crm/developer/docs/api/v8/get-records.html
- ``GET /crm/v8/Deals/deleted?type=all&page=&per_page=200`` with ``If-Modified-Since``; ``page``
  paging only. https://www.zoho.com/crm/developer/docs/api/v8/get-deleted-records.html
- ``PUT /crm/v8/Deals`` / ``POST /crm/v8/Deals`` ``{"data": [...]}`` with at most 100 records;
  per-record ``{code, details, message, status}`` in input order.
  https://www.zoho.com/crm/developer/docs/api/v8/update-records.html,
  https://www.zoho.com/crm/developer/docs/api/v8/insert-records.html
- Errors ``{"code", "details", "message", "status": "error"}``; 429 ``TOO_MANY_REQUESTS`` is
  retried by the HTTP boundary with backoff; ``X-API-CREDITS-REMAINING`` is read when present.
  https://www.zoho.com/crm/developer/docs/api/v8/api-limits.html

Every API call also takes one slot of the ``credits`` bucket (24 h rolling) of the shared limiter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from connectors.zoho.convert import FIELDS
from sync_worker.errors import PermanentError
from sync_worker.http import ApiClient, ApiResponse, RateLimiter

__all__ = ["BATCH_SIZE", "CREDITS_HEADER", "CreditedLimiter", "ZohoApi"]

BATCH_SIZE = 100
PER_PAGE = 200
CREDITS_HEADER = "x-api-credits-remaining"
_DEALS = "/crm/v8/Deals"


class CreditedLimiter:
    """Takes a ``credits`` slot, then the request's own bucket (``default``: concurrency pace)."""

    def __init__(self, inner: RateLimiter) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return f"CreditedLimiter({self._inner!r})"

    def acquire(self, bucket: str) -> None:
        self._inner.acquire("credits")
        self._inner.acquire(bucket)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        self._inner.observe(bucket, headers)
        if bucket != "credits":  # every answer also tells the credits bucket (X-API-CREDITS-REMAINING)
            self._inner.observe("credits", headers)


def _list(data: Any, key: str, where: str) -> list[Mapping[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, dict):
        raise PermanentError(f"zoho {where}: the answer is not a JSON object")
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise PermanentError(f"zoho {where}: {key} is not a list of objects")
    return items


def _info(data: Any) -> Mapping[str, Any]:
    info = data.get("info") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else {}


class ZohoApi:
    """Typed wrappers over the calls above; remembers the last credits-remaining figure."""

    def __init__(self, api: ApiClient, *, accounts: ApiClient | None = None) -> None:
        self._api = api
        self._accounts = accounts
        self.credits_remaining: int | None = None

    def __repr__(self) -> str:
        return f"ZohoApi({self._api!r})"

    @property
    def calls(self) -> int:
        return self._api.calls

    def close(self) -> None:
        self._api.close()
        if self._accounts is not None:
            self._accounts.close()

    def request(self, method: str, path: str, **kwargs: Any) -> ApiResponse:
        response = self._api.request(method, path, **kwargs)
        raw = response.headers.get(CREDITS_HEADER)
        if raw is not None and raw.strip().isdigit():
            self.credits_remaining = int(raw.strip())
        return response

    def layout_ids(self) -> list[str]:
        data = self.request("GET", "/crm/v8/settings/layouts", params={"module": "Deals"}).data
        return [str(item["id"]) for item in _list(data, "layouts", "GET layouts") if item.get("id")]

    def pipelines(self, layout_id: str) -> Any:
        return self.request("GET", "/crm/v8/settings/pipeline", params={"layout_id": layout_id}).data

    def deal_pages(self, if_modified_since: str | None) -> Iterator[list[Mapping[str, Any]]]:
        """Pages of Deals, oldest change first: ``page=1``, then ``page_token`` while more remain."""
        base = {
            "fields": ",".join(FIELDS),
            "per_page": PER_PAGE,
            "sort_by": "Modified_Time",
            "sort_order": "asc",
        }
        headers = {"If-Modified-Since": if_modified_since} if if_modified_since else None
        paging: dict[str, Any] = {"page": 1}
        while True:
            data = self.request("GET", _DEALS, params={**base, **paging}, headers=headers).data
            yield _list(data, "data", "GET /Deals")
            info = _info(data)
            if info.get("more_records") is not True:
                return
            token = info.get("next_page_token")
            if isinstance(token, str) and token:
                paging = {"page_token": token}
            elif "page" in paging and paging["page"] < 2000 // PER_PAGE:
                paging = {"page": paging["page"] + 1}
            else:
                raise PermanentError("zoho GET /Deals: more_records without a next_page_token")

    def deals_by_id(self, ids: Sequence[str], fields: Sequence[str] = FIELDS) -> list[Mapping[str, Any]]:
        """The records of ``ids`` (at most 100 per call), one call per 100."""
        found: list[Mapping[str, Any]] = []
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            params = {"ids": ",".join(chunk), "fields": ",".join(fields)}
            found.extend(_list(self.request("GET", _DEALS, params=params).data, "data", "GET /Deals?ids"))
        return found

    def contact_emails(self, ids: Sequence[str]) -> dict[str, str]:
        emails: dict[str, str] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            params = {"ids": ",".join(ids[start : start + BATCH_SIZE]), "fields": "Email"}
            data = self.request("GET", "/crm/v8/Contacts", params=params).data
            for contact in _list(data, "data", "GET /Contacts"):
                email = contact.get("Email")
                if isinstance(email, str) and email.strip() and contact.get("id") is not None:
                    emails[str(contact["id"])] = email.strip()
        return emails

    def deleted_pages(self, if_modified_since: str | None) -> Iterator[list[Mapping[str, Any]]]:
        headers = {"If-Modified-Since": if_modified_since} if if_modified_since else None
        page = 1
        while True:
            params = {"type": "all", "page": page, "per_page": PER_PAGE}
            data = self.request("GET", f"{_DEALS}/deleted", params=params, headers=headers).data
            yield _list(data, "data", "GET /Deals/deleted")
            if _info(data).get("more_records") is not True:
                return
            page += 1

    def write(self, method: str, items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``PUT``/``POST /crm/v8/Deals`` with up to 100 items; the per-record answers in order."""
        if not 1 <= len(items) <= BATCH_SIZE:
            raise ValueError(f"a Zoho write takes 1 to {BATCH_SIZE} records, got {len(items)}")
        data = self.request(method, _DEALS, json_body={"data": list(items)}).data
        answers = _list(data, "data", f"{method} /Deals")
        if len(answers) != len(items):
            raise PermanentError(f"zoho {method} /Deals: {len(answers)} answers for {len(items)} records")
        return answers

    def watch(self, method: str, body: Mapping[str, Any] | None = None, **params: str) -> Any:
        return self.request(method, "/crm/v8/actions/watch", json_body=body, params=params or None).data
