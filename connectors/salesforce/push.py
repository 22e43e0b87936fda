"""Writes through sObject Collections: up to 200 Opportunities per call, results one by one.

``PATCH /composite/sobjects`` updates and ``POST /composite/sobjects`` creates, each record with
``attributes.type`` (and ``id`` to update), ``allOrNone: false`` so one bad record does not roll
back the others. A well-formed request answers **HTTP 200** even when items fail: the answer is an
array in request order of ``{"id", "success", "errors": [{"statusCode", "message", "fields"}]}``
(REST API Developer Guide, "Update Multiple Records" and "Create Multiple Records", under
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/: the pages
``resources_composite_sobjects_collections_update.htm`` and ``..._create.htm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.salesforce.api import SalesforceApi
from connectors.salesforce.convert import check_id
from sync_worker.canonical import CanonicalUpdate, UpdateResult
from sync_worker.errors import PermanentError

__all__ = ["BATCH_LIMIT", "COLLECTIONS_PATH", "RETRYABLE_CODES", "apply_updates"]

BATCH_LIMIT = 200
COLLECTIONS_PATH = "/composite/sobjects"
RETRYABLE_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUEST_LIMIT_EXCEEDED",
        "SERVER_UNAVAILABLE",
    }
)
"""Item ``statusCode`` values worth trying again: a lock, a rollback caused by another item, a limit."""

Fields = Callable[[CanonicalUpdate], dict[str, Any]]
_Item = tuple[int, CanonicalUpdate, dict[str, Any]]


def _error(errors: Any) -> tuple[str, bool]:
    if not isinstance(errors, list) or not errors:
        return "salesforce: the record was refused without an error", False
    texts, retryable = [], True
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        code = str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN")
        fields = error.get("fields") or []
        where = f" ({', '.join(map(str, fields))})" if fields else ""
        texts.append(f"{code}: {str(error.get('message') or '')[:200]}{where}")
        retryable = retryable and code in RETRYABLE_CODES
    return "salesforce: " + "; ".join(texts), retryable and bool(texts)


def _send(api: SalesforceApi, method: str, chunk: Sequence[_Item]) -> list[tuple[int, UpdateResult]]:
    body = {"allOrNone": False, "records": [record for _, _, record in chunk]}
    answer = api.request(method, COLLECTIONS_PATH, json_body=body).data
    if not isinstance(answer, list) or len(answer) != len(chunk):
        raise PermanentError(f"salesforce: {method} {COLLECTIONS_PATH} did not answer one result per record")
    out: list[tuple[int, UpdateResult]] = []
    for (index, update, _), item in zip(chunk, answer, strict=True):
        item = item if isinstance(item, Mapping) else {}
        record_id = item.get("id") if isinstance(item.get("id"), str) else update.external_id
        if item.get("success") is True:
            out.append((index, UpdateResult(update.idempotency_key, True, external_id=record_id)))
        else:
            message, retryable = _error(item.get("errors"))
            out.append(
                (
                    index,
                    UpdateResult(
                        update.idempotency_key,
                        False,
                        external_id=update.external_id,
                        error=message,
                        retryable=retryable,
                    ),
                )
            )
    return out


def apply_updates(
    api: SalesforceApi, updates: Sequence[CanonicalUpdate], fields_of: Fields
) -> list[UpdateResult]:
    """Write ``updates`` in batches of :data:`BATCH_LIMIT`; one result per update, in order.

    An update that cannot be expressed fails alone (``fields_of`` raised :class:`PermanentError`);
    one with nothing to write succeeds without a call. A failure of a whole call (limits, 5xx)
    propagates, so the batch is retried as a unit.
    """
    results: dict[int, UpdateResult] = {}
    patches: list[_Item] = []
    creates: list[_Item] = []
    for index, update in enumerate(updates):
        try:
            fields = fields_of(update)
            if update.external_id is not None:
                check_id(update.external_id)
        except PermanentError as exc:
            results[index] = UpdateResult(
                update.idempotency_key, False, external_id=update.external_id, error=str(exc)
            )
            continue
        record: dict[str, Any] = {"attributes": {"type": "Opportunity"}}
        if update.external_id is None:
            creates.append((index, update, {**record, **fields}))
        elif not fields:
            results[index] = UpdateResult(update.idempotency_key, True, external_id=update.external_id)
        else:
            patches.append((index, update, {**record, "id": update.external_id, **fields}))
    for method, items in (("PATCH", patches), ("POST", creates)):
        for start in range(0, len(items), BATCH_LIMIT):
            results.update(_send(api, method, items[start : start + BATCH_LIMIT]))
    return [results[i] for i in range(len(updates))]
