"""Contacts and v4 associations endpoints of the HubSpot sandbox.

Follows:
- ``GET /crm/v3/objects/contacts/{contactId}`` (``properties``; 404 ``OBJECT_NOT_FOUND``) and
  ``POST /crm/v3/objects/contacts/batch/read`` (``inputs`` of ``{"id"}``, at most 100, ``properties``,
  ``idProperty`` such as ``email``; unknown inputs are listed in a 207 multi-status ``errors`` entry):
  https://developers.hubspot.com/docs/api/crm/contacts and
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/objects/batch/get-objects
- ``POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read``: ``inputs`` of
  ``{"id", "after"?}``, at most 1,000 (since February 2025); one result per object with
  associations (``from.id``, ``to[].toObjectId``, ``to[].associationTypes``, ``paging.next.after``
  only when more remain); an object with none is a 207 error ``NO_ASSOCIATIONS_FOUND``:
  https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/get-associations
  https://developers.hubspot.com/changelog/bug-fix-batch-read-limit-for-hubspot-associations-api
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_worker.sandbox.hubspot.access import Caller
from sync_worker.sandbox.hubspot.contacts import CONTACT_TO_DEAL_TYPE_ID, DEAL_TO_CONTACT_TYPE_ID
from sync_worker.sandbox.hubspot.state import HubSpotSandbox
from sync_worker.sandbox.hubspot.wire import ApiError, error_body

__all__ = ["ASSOCIATIONS_BATCH_MAX", "ASSOCIATIONS_PAGE_SIZE", "CONTACTS_BATCH_MAX", "contact_routes"]

CONTACTS_BATCH_MAX = 100
ASSOCIATIONS_BATCH_MAX = 1000
ASSOCIATIONS_PAGE_SIZE = 500
"""Associated records listed per object and page of a batch read."""

Handler = Callable[[Request, Caller | None], Awaitable[Response]]
Wrap = Callable[[str, Handler], Callable[[Request], Awaitable[Response]]]

_OBJECT_TYPES = {
    "deals": "deals",
    "deal": "deals",
    "0-3": "deals",
    "contacts": "contacts",
    "contact": "contacts",
}
_OBJECT_TYPES["0-1"] = "contacts"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _inputs(body: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ApiError(400, error_body("inputs must be an array of objects", "VALIDATION_ERROR"))
    if len(inputs) > limit:
        raise ApiError(
            400,
            error_body(
                f"Batch input of {len(inputs)} exceeds the limit of {limit} inputs.",
                "VALIDATION_ERROR",
                context={"limit": [str(limit)]},
            ),
        )
    return inputs


def _multi_status(results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str) -> Response:
    payload: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        payload["numErrors"] = len(errors)
        payload["errors"] = errors
    payload["startedAt"] = started
    payload["completedAt"] = _now_iso()
    return JSONResponse(payload, status_code=207 if errors else 200)


class _ContactsApi:
    def __init__(
        self, sandbox: HubSpotSandbox, read_json: Callable[[Request], Awaitable[dict[str, Any]]]
    ) -> None:
        self.sandbox = sandbox
        self._json = read_json

    async def contact(self, request: Request, caller: Caller | None) -> Response:
        contact_id = request.path_params["contactId"]
        values = request.query_params.getlist("properties")
        names = [n.strip() for v in values for n in v.split(",") if n.strip()] or None
        found = self.sandbox.contacts.wire(contact_id, names)
        if found is None:
            raise ApiError(
                404,
                error_body(
                    "Object not found.  objectId are usually numeric.",
                    "OBJECT_NOT_FOUND",
                    context={"id": [contact_id]},
                ),
            )
        return JSONResponse(found)

    async def batch_read(self, request: Request, caller: Caller | None) -> Response:
        started = _now_iso()
        body = await self._json(request)
        inputs = _inputs(body, CONTACTS_BATCH_MAX)
        properties = body.get("properties") or None
        id_property = body.get("idProperty")
        if id_property not in (None, "", "hs_object_id", "email"):
            raise ApiError(
                400, error_body(f"{id_property} is not a unique identifier property", "VALIDATION_ERROR")
            )
        book = self.sandbox.contacts
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", ""))
            contact_id = book.find_by_email(key) if id_property == "email" else key
            found = book.wire(contact_id, properties) if contact_id is not None else None
            if found is None:
                missing.append(key)
            elif found not in results:
                results.append(found)
        errors = []
        if missing:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    "context": {"ids": missing},
                }
            )
        return _multi_status(results, errors, started)

    async def associations(self, request: Request, caller: Caller | None) -> Response:
        started = _now_iso()
        source = _OBJECT_TYPES.get(request.path_params["fromObjectType"].lower())
        target = _OBJECT_TYPES.get(request.path_params["toObjectType"].lower())
        if source is None or target is None or source == target:
            raise ApiError(
                400,
                error_body(
                    "The sandbox knows deal <-> contact associations only.",
                    "VALIDATION_ERROR",
                ),
            )
        body = await self._json(request)
        inputs = _inputs(body, ASSOCIATIONS_BATCH_MAX)
        book = self.sandbox.contacts
        results, errors = [], []
        for item in inputs:
            from_id = str(item.get("id", ""))
            if source == "deals":
                linked = book.contacts_of(from_id) if self.sandbox.wire(from_id) is not None else []
                type_id = DEAL_TO_CONTACT_TYPE_ID
            else:
                linked = book.deals_of(from_id) if book.exists(from_id) else []
                type_id = CONTACT_TO_DEAL_TYPE_ID
            start = int(item["after"]) if str(item.get("after") or "").isdigit() else 0
            page = linked[start : start + ASSOCIATIONS_PAGE_SIZE]
            if not page:
                errors.append(_no_associations(from_id, source, target))
                continue
            result: dict[str, Any] = {
                "from": {"id": from_id},
                "to": [book.association_entry(to_id, type_id) for to_id in page],
            }
            if start + len(page) < len(linked):
                result["paging"] = {"next": {"after": str(start + len(page))}}
            results.append(result)
        return _multi_status(results, errors, started)


def _no_associations(from_id: str, source: str, target: str) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
        "context": {"fromObjectId": [from_id]},
        "message": f"No {target} is associated with {source.rstrip('s')} {from_id}.",
    }


def contact_routes(
    sandbox: HubSpotSandbox, wrap: Wrap, read_json: Callable[[Request], Awaitable[dict[str, Any]]]
) -> list[Route]:
    """The routes, each passed through ``wrap`` (faults, auth, rate limit, call counting)."""
    api = _ContactsApi(sandbox, read_json)
    read_path = "/crm/v3/objects/contacts/batch/read"
    one_path = "/crm/v3/objects/contacts/{contactId}"
    assoc_path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read"
    return [
        Route(read_path, wrap(read_path, api.batch_read), methods=["POST"]),
        Route(one_path, wrap(one_path, api.contact), methods=["GET"]),
        Route(assoc_path, wrap(assoc_path, api.associations), methods=["POST"]),
    ]
