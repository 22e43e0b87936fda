"""Writes to HubSpot: batched deal creates/updates and the leak-flag properties.

* ``POST /crm/v3/objects/deals/batch/update`` and ``/batch/create``: at most 100 inputs per call;
  each input carries ``objectWriteTraceId`` (our idempotency key), which HubSpot echoes on its
  result. A 207 multi-status answer lists ``results`` and ``errors``; each error names its inputs in
  ``context.ids`` (update) or ``context.objectWriteTraceId``; it is split into one
  :class:`~sync_worker.canonical.UpdateResult` per update, never retried whole.
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/deals/batch/update-deals
  https://developers.hubspot.com/changelog/simplifying-batch-update-response-codes-for-crm-v3-apis
* Property groups and properties: ``GET``/``POST /crm/v3/properties/deals/groups`` and
  ``/crm/v3/properties/deals``; a 409 means the name is already taken (created concurrently).
  https://developers.hubspot.com/docs/api/crm/properties
* Identity on writes (see :mod:`connectors.hubspot.identity`): a create carrying ``contact_email``
  is associated (``associations`` on its ``batch/create`` input, type 3 deal -> contact) with the
  contact HubSpot knows by that e-mail, looked up for all creates at once; no contact is created.
  A write whose origin is a linked system also sets that system's link-id property when the account has it.
  https://developers.hubspot.com/docs/api/crm/deals
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.hubspot.convert import from_canonical, link_property, parse_hubspot_datetime
from sync_worker.canonical import CanonicalUpdate, SourceStage, UpdateResult
from sync_worker.errors import AuthError, PermanentError, TransientError
from sync_worker.http import ApiResponse
from sync_worker.mappings import Mappings

__all__ = [
    "BATCH_SIZE",
    "FLAG_GROUP",
    "ContactFinder",
    "Requester",
    "apply_updates",
    "create_missing_properties",
    "ensure_flag_properties",
]

BATCH_SIZE = 100
FLAG_GROUP = "sync_worker"
_OBJECTS = "/crm/v3/objects/deals"
_RETRYABLE_CATEGORIES = frozenset({"RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT"})
_DEAL_TO_CONTACT = 3  # HUBSPOT_DEFINED deal -> contact association type


class Requester(Protocol):
    """The connector's request function (auth refresh and errors already handled)."""

    def __call__(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        bucket: str = "default",
    ) -> ApiResponse: ...


ContactFinder = Callable[[Sequence[str]], Mapping[str, str]]
"""E-mails -> ``{lower-cased e-mail: contact id}`` for the contacts that exist (batched)."""


@dataclass(frozen=True)
class _Pending:
    index: int
    update: CanonicalUpdate
    properties: dict[str, str]
    associations: tuple[dict[str, Any], ...] = ()


def _chunks(items: list[_Pending]) -> list[list[_Pending]]:
    """Batches of at most 100, never holding the same deal id twice (HubSpot refuses duplicates)."""
    batches: list[list[_Pending]] = []
    seen: list[set[str]] = []
    for item in items:
        deal_id = item.update.external_id
        for batch, ids in zip(batches, seen, strict=True):
            if len(batch) < BATCH_SIZE and (deal_id is None or deal_id not in ids):
                batch.append(item)
                if deal_id is not None:
                    ids.add(deal_id)
                break
        else:
            batches.append([item])
            seen.append({deal_id} if deal_id is not None else set())
    return batches


def _ok(item: _Pending, result: Mapping[str, Any]) -> UpdateResult:
    return UpdateResult(
        idempotency_key=item.update.idempotency_key,
        ok=True,
        external_id=str(result.get("id")) if result.get("id") is not None else item.update.external_id,
        updated_at=parse_hubspot_datetime(result.get("updatedAt")),
    )


def _failed(item: _Pending, message: str, *, retryable: bool) -> UpdateResult:
    return UpdateResult(
        idempotency_key=item.update.idempotency_key,
        ok=False,
        external_id=item.update.external_id,
        error=message[:500],
        retryable=retryable,
    )


def _error_message(error: Mapping[str, Any]) -> str:
    category = error.get("category")
    message = error.get("message") or "rejected"
    return f"hubspot: {category}: {message}" if category else f"hubspot: {message}"


def _context_values(error: Mapping[str, Any], key: str) -> list[str]:
    context = error.get("context")
    values = context.get(key) if isinstance(context, Mapping) else None
    return [str(v) for v in values] if isinstance(values, list) else []


def _split(batch: list[_Pending], data: Any) -> dict[int, UpdateResult]:
    """One result per input of a 200/201/207 batch answer."""
    by_trace = {item.update.idempotency_key: item for item in batch}
    by_id = {item.update.external_id: item for item in batch if item.update.external_id is not None}
    out: dict[int, UpdateResult] = {}
    body = data if isinstance(data, Mapping) else {}
    leftovers: list[Mapping[str, Any]] = []
    for result in body.get("results") or []:
        if not isinstance(result, Mapping):
            continue
        trace = result.get("objectWriteTraceId")
        item = by_trace.get(str(trace)) if trace is not None else None
        if item is None and result.get("id") is not None:
            item = by_id.get(str(result["id"]))
        if item is None or item.index in out:
            leftovers.append(result)
            continue
        out[item.index] = _ok(item, result)
    unmatched: list[Mapping[str, Any]] = []
    for error in body.get("errors") or []:
        if not isinstance(error, Mapping):
            continue
        named = [by_id.get(i) for i in _context_values(error, "ids")]
        named += [by_trace.get(t) for t in _context_values(error, "objectWriteTraceId")]
        targets = [item for item in named if item is not None and item.index not in out]
        if not targets:
            unmatched.append(error)
            continue
        retryable = error.get("category") in _RETRYABLE_CATEGORIES
        for item in targets:
            out[item.index] = _failed(item, _error_message(error), retryable=retryable)
    missing = [item for item in batch if item.index not in out]
    if missing and not unmatched and len(leftovers) == len(missing):
        # Results without a trace id or known id (creates): HubSpot answers them in input order.
        for item, result in zip(missing, leftovers, strict=True):
            out[item.index] = _ok(item, result)
        missing = []
    for item in missing:
        if len(unmatched) == 1 and len(missing) == 1:
            out[item.index] = _failed(item, _error_message(unmatched[0]), retryable=False)
        else:
            out[item.index] = _failed(
                item, "hubspot: the batch answer does not say what became of it", retryable=True
            )
    return out


def _send(request: Requester, path: str, batch: list[_Pending]) -> dict[int, UpdateResult]:
    inputs: list[dict[str, Any]] = []
    for item in batch:
        entry: dict[str, Any] = {
            "properties": item.properties,
            "objectWriteTraceId": item.update.idempotency_key,
        }
        if item.update.external_id is not None:
            entry = {"id": item.update.external_id, **entry}
        elif item.associations:
            entry["associations"] = list(item.associations)
        inputs.append(entry)
    try:
        response = request("POST", path, json_body={"inputs": inputs})
    except AuthError:
        raise
    except TransientError as exc:
        return {item.index: _failed(item, str(exc), retryable=True) for item in batch}
    except PermanentError as exc:
        return {item.index: _failed(item, str(exc), retryable=False) for item in batch}
    return _split(batch, response.data)


def _contact_association(contact_id: str) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": _DEAL_TO_CONTACT}],
    }


def _associate(
    creates: list[_Pending], find_contacts: ContactFinder | None, results: dict[int, UpdateResult]
) -> list[_Pending]:
    """The creates with their contact association; a transient lookup failure fails them (retryable)."""
    emails = [p.update.contact_email for p in creates if p.update.contact_email]
    if find_contacts is None or not emails:
        return creates
    try:
        found = find_contacts(emails)
    except AuthError:
        raise
    except TransientError as exc:
        waiting = [p for p in creates if p.update.contact_email]
        results.update({p.index: _failed(p, str(exc), retryable=True) for p in waiting})
        return [p for p in creates if not p.update.contact_email]
    except PermanentError:
        return creates  # the deal matters more than its association: create it without
    out: list[_Pending] = []
    for pending in creates:
        email = (pending.update.contact_email or "").strip().lower()
        contact = found.get(email) if email else None
        if contact is not None:
            pending = _Pending(
                pending.index, pending.update, pending.properties, (_contact_association(contact),)
            )
        out.append(pending)
    return out


def apply_updates(
    request: Requester,
    updates: Sequence[CanonicalUpdate],
    mappings: Mappings,
    stages: Callable[[], Sequence[SourceStage]],
    *,
    identity_property: Callable[[str], bool] | None = None,
    find_contacts: ContactFinder | None = None,
) -> list[UpdateResult]:
    """Write ``updates`` in batches; one result per update, in order. :class:`AuthError` propagates.

    ``identity_property(system)`` says (asked only when needed) whether the account has the link-id
    deal property of ``system`` (None: the origin is not a linked system); when it does, a write
    whose ``origin`` is that system with an ``origin_id`` sets it. ``find_contacts`` looks up the
    contacts of the creates' ``contact_email`` in one batched call; each create is associated with
    its contact.
    """
    results: dict[int, UpdateResult] = {}
    creates: list[_Pending] = []
    changes: list[_Pending] = []
    has_identity: dict[str, bool] = {}
    for index, update in enumerate(updates):
        try:
            known = stages() if update.stage is not None or update.status in ("won", "lost") else ()
            props = from_canonical(update, mappings, stages=known)
        except AuthError:
            raise
        except PermanentError as exc:
            results[index] = UpdateResult(update.idempotency_key, ok=False, error=str(exc))
            continue
        if update.origin_id and identity_property is not None:
            if update.origin not in has_identity:
                has_identity[update.origin] = identity_property(update.origin)
            if has_identity[update.origin]:
                props[link_property(update.origin)] = update.origin_id
        pending = _Pending(index, update, props)
        (creates if update.external_id is None else changes).append(pending)
    creates = _associate(creates, find_contacts, results)
    for batch in _chunks(changes):
        results.update(_send(request, f"{_OBJECTS}/batch/update", batch))
    for batch in _chunks(creates):
        results.update(_send(request, f"{_OBJECTS}/batch/create", batch))
    return [results[index] for index in range(len(updates))]


_FLAG_DEFINITIONS: tuple[dict[str, Any], ...] = (
    {
        "name": "sync_worker_leak_status",
        "label": "Leak status",
        "type": "enumeration",
        "fieldType": "select",
        "description": "Why sync-worker flagged this deal as leaking (empty when not flagged)",
        "options": [
            {"label": label, "value": value, "displayOrder": order}
            for order, (value, label) in enumerate(
                [
                    ("stalled", "Stalled"),
                    ("regressed", "Regressed"),
                    ("dropped", "Dropped"),
                    ("unanswered", "Unanswered"),
                ]
            )
        ],
    },
    {"name": "sync_worker_leak_reason", "label": "Leak reason", "type": "string", "fieldType": "textarea"},
    {"name": "sync_worker_leak_stage", "label": "Leaked from stage", "type": "string", "fieldType": "text"},
    {"name": "sync_worker_leak_since", "label": "Leaking since", "type": "datetime", "fieldType": "date"},
    {
        "name": "sync_worker_leak_days",
        "label": "Days in stage when flagged",
        "type": "number",
        "fieldType": "number",
    },
)


def _names(response: ApiResponse) -> set[str]:
    data = response.data
    results = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(results, list):
        raise PermanentError("hubspot: properties answer has no results array")
    return {str(item.get("name")) for item in results if isinstance(item, Mapping)}


def _create(request: Requester, path: str, body: Mapping[str, Any]) -> bool:
    """POST a definition; False when HubSpot says (409) that it already exists."""
    try:
        request("POST", path, json_body=dict(body))
    except PermanentError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def create_missing_properties(
    request: Requester, definitions: Sequence[Mapping[str, Any]], *, group: str = FLAG_GROUP
) -> list[str]:
    """Create ``group`` and the deal properties of ``definitions`` that are missing; names created.

    The group is reported as ``group:<name>``; a 409 (created meanwhile) counts as existing.
    """
    created: list[str] = []
    groups_path = "/crm/v3/properties/deals/groups"
    if group not in _names(request("GET", groups_path)):
        body = {"name": group, "label": "Sync worker", "displayOrder": -1}
        if _create(request, groups_path, body):
            created.append(f"group:{group}")
    existing = _names(request("GET", "/crm/v3/properties/deals"))
    for definition in definitions:
        if definition["name"] in existing:
            continue
        if _create(request, "/crm/v3/properties/deals", {**definition, "groupName": group}):
            created.append(str(definition["name"]))
    return created


def ensure_flag_properties(request: Requester) -> list[str]:
    """Create the ``sync_worker`` group and the leak-flag deal properties that are missing.

    Returns the names created (the group as ``group:sync_worker``); idempotent.
    """
    return create_missing_properties(request, _FLAG_DEFINITIONS)
