"""Removing HubSpot deals: the twins of records deleted elsewhere (a route's ``on_delete``).

HubSpot has one way to remove a deal: archiving it (it goes to the recycling bin and can be
restored for 90 days), so ``on_delete: delete`` and ``archive`` both archive.
https://developers.hubspot.com/docs/api/crm/deals

* ``POST /crm/v3/objects/deals/batch/archive`` with ``{"inputs": [{"id": ...}]}``, at most 100
  inputs a call, answered ``204 No Content`` (``BatchInputSimplePublicObjectId`` in the
  published OpenAPI document of CRM deals v3);
* when a batch is refused as a whole (one unknown or malformed id fails it), each deal is archived
  on its own with ``DELETE /crm/v3/objects/deals/{dealId}`` (``204``), so one bad id never holds
  back the others; a ``404`` there means the deal is gone already: removed, as the protocol asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.hubspot.push import BATCH_SIZE, Requester
from sync_worker.canonical import RecordRemoval, UpdateResult
from sync_worker.errors import AuthError, PermanentError, TransientError

__all__ = ["remove_records"]

_OBJECTS = "/crm/v3/objects/deals"


def _failed(removal: RecordRemoval, message: str, *, retryable: bool) -> UpdateResult:
    return UpdateResult(
        removal.idempotency_key, ok=False, external_id=removal.external_id, error=message, retryable=retryable
    )


def _removed(removal: RecordRemoval) -> UpdateResult:
    return UpdateResult(removal.idempotency_key, ok=True, external_id=removal.external_id)


def _archive_one(request: Requester, removal: RecordRemoval) -> UpdateResult:
    try:
        request("DELETE", f"{_OBJECTS}/{removal.external_id}")
    except AuthError:
        raise
    except TransientError as exc:
        return _failed(removal, str(exc), retryable=True)
    except PermanentError as exc:
        if exc.status == 404:
            return _removed(removal)
        return _failed(removal, str(exc), retryable=False)
    return _removed(removal)


def remove_records(request: Requester, removals: Sequence[RecordRemoval]) -> list[UpdateResult]:
    """Archive the deals; one result per removal, in order. :class:`AuthError` propagates."""
    results: dict[int, UpdateResult] = {}
    deals: list[tuple[int, RecordRemoval]] = []
    for index, removal in enumerate(removals):
        if removal.kind != "deal" or not removal.external_id.isdigit():
            message = f"hubspot: cannot remove {removal.kind} {removal.external_id[:40]!r} (deals by id only)"
            results[index] = _failed(removal, message, retryable=False)
        else:
            deals.append((index, removal))
    for start in range(0, len(deals), BATCH_SIZE):
        batch = deals[start : start + BATCH_SIZE]
        inputs = [{"id": removal.external_id} for _, removal in batch]
        try:
            request("POST", f"{_OBJECTS}/batch/archive", json_body={"inputs": inputs})
        except AuthError:
            raise
        except TransientError as exc:
            results.update({i: _failed(r, str(exc), retryable=True) for i, r in batch})
        except PermanentError:
            results.update({i: _archive_one(request, r) for i, r in batch})
        else:
            results.update({i: _removed(r) for i, r in batch})
    return [results[index] for index in range(len(removals))]
