"""Deal identity in HubSpot: the contact's e-mail (through associations) and our external-id property.

HubSpot deal objects carry neither an e-mail nor the id of their twin in another CRM, so the engine
could never match a HubSpot deal with its Pipedrive copy. This module fills both in, batched:

* Deal -> contact associations, v4 batch read: ``POST /crm/v4/associations/deals/contacts/batch/read``
  with ``{"inputs": [{"id": <deal id>}]}``; each result is ``{"from": {"id"}, "to": [{"toObjectId",
  "associationTypes": [{"category", "typeId", "label"}]}], "paging"?}``; a deal with no contact comes
  back as a 207 error (``crm.associations.NO_ASSOCIATIONS_FOUND``), which is not a failure. At most
  1,000 inputs per request (HubSpot changelog, February 2025):
  https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/get-associations
  https://developers.hubspot.com/changelog/bug-fix-batch-read-limit-for-hubspot-associations-api
* Contacts batch read: ``POST /crm/v3/objects/contacts/batch/read`` with ``properties: ["email"]``,
  by id or, with ``idProperty: "email"``, by e-mail (e-mail is a unique contact identifier); at most
  100 inputs; unknown inputs come back as 207 errors:
  https://developers.hubspot.com/docs/api/crm/contacts and
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/objects/batch/get-objects
* Creating a deal associated with a contact: each ``batch/create`` input may carry
  ``associations: [{"to": {"id"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
  "associationTypeId": 3}]}]`` (3 is the default deal -> contact type):
  https://developers.hubspot.com/docs/api/crm/deals and
  https://developers.hubspot.com/docs/api/crm/associations
* The link-id properties (:func:`~connectors.hubspot.convert.link_property`, single-line text deal
  properties in the ``sync_worker`` group) are created like the leak-flag properties:
  https://developers.hubspot.com/docs/api/crm/properties

Which contact's e-mail a deal gets: among the contacts HubSpot lists on the first page of the deal's
associations, the one with the lowest numeric id (the oldest contact, usually the one the deal was
created for); HubSpot does not document an order, so the lowest id keeps the choice stable from one
pull to the next. Only that contact is read, so a page of N deals costs one associations call
(N <= 1,000) and ceil(distinct contacts / 100) contacts calls, never a call per deal.
Required scopes: ``crm.objects.contacts.read`` besides the deal scopes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.hubspot.convert import link_property
from connectors.hubspot.push import FLAG_GROUP, Requester, create_missing_properties
from sync_worker.canonical import CanonicalRecord
from sync_worker.errors import PermanentError

__all__ = [
    "ASSOCIATIONS_BATCH",
    "CONTACTS_BATCH",
    "contact_emails",
    "contacts_by_email",
    "deal_contact_emails",
    "ensure_identity_properties",
    "first_contact_ids",
    "identity_property_exists",
    "with_contact_emails",
]

ASSOCIATIONS_BATCH = 1000
CONTACTS_BATCH = 100
_ASSOCIATIONS = "/crm/v4/associations/deals/contacts/batch/read"
_CONTACTS_READ = "/crm/v3/objects/contacts/batch/read"


def _identity_definition(system: str) -> dict[str, Any]:
    return {
        "name": link_property(system),
        "label": f"{system} deal id",
        "type": "string",
        "fieldType": "text",
        "description": f"The id of this deal's twin in {system}, written by sync-worker",
    }


def _results(data: Any) -> list[Mapping[str, Any]]:
    results = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(results, list):
        raise PermanentError("hubspot: batch answer has no results array")
    return [item for item in results if isinstance(item, Mapping)]


def _numeric(value: str) -> tuple[int, str]:
    return (int(value), value) if value.isdigit() else (2**63, value)


def first_contact_ids(request: Requester, deal_ids: Sequence[str]) -> dict[str, str]:
    """Deal id -> the id of its lowest-numbered associated contact, for deals that have one.

    One associations batch read per 1,000 deals; deals without contacts are simply absent.
    """
    out: dict[str, str] = {}
    unique = list(dict.fromkeys(str(i) for i in deal_ids))
    for start in range(0, len(unique), ASSOCIATIONS_BATCH):
        chunk = unique[start : start + ASSOCIATIONS_BATCH]
        response = request("POST", _ASSOCIATIONS, json_body={"inputs": [{"id": i} for i in chunk]})
        for result in _results(response.data):
            source = result.get("from")
            deal_id = source.get("id") if isinstance(source, Mapping) else None
            targets = result.get("to")
            if deal_id is None or not isinstance(targets, list):
                continue
            ids = [str(t["toObjectId"]) for t in targets if isinstance(t, Mapping) and t.get("toObjectId")]
            if ids:
                out[str(deal_id)] = min(ids, key=_numeric)
    return out


def contact_emails(request: Requester, contact_ids: Iterable[str]) -> dict[str, str]:
    """Contact id -> e-mail (lower-cased, trimmed) for contacts that have one; 100 ids per call."""
    out: dict[str, str] = {}
    unique = list(dict.fromkeys(contact_ids))
    for start in range(0, len(unique), CONTACTS_BATCH):
        chunk = unique[start : start + CONTACTS_BATCH]
        body = {"properties": ["email"], "inputs": [{"id": i} for i in chunk]}
        response = request("POST", _CONTACTS_READ, json_body=body)
        for contact in _results(response.data):
            email = _email(contact)
            if contact.get("id") is not None and email is not None:
                out[str(contact["id"])] = email
    return out


def _email(contact: Mapping[str, Any]) -> str | None:
    props = contact.get("properties")
    raw = props.get("email") if isinstance(props, Mapping) else None
    text = str(raw).strip().lower() if raw is not None else ""
    return text or None


def deal_contact_emails(request: Requester, deal_ids: Sequence[str]) -> dict[str, str]:
    """Deal id -> its contact's e-mail (see the module docstring for which contact)."""
    if not deal_ids:
        return {}
    contacts = first_contact_ids(request, deal_ids)
    if not contacts:
        return {}
    emails = contact_emails(request, sorted(set(contacts.values()), key=_numeric))
    return {deal: emails[contact] for deal, contact in contacts.items() if contact in emails}


def with_contact_emails(
    records: Sequence[CanonicalRecord], emails: Mapping[str, str]
) -> list[CanonicalRecord]:
    """The records with ``contact_email`` set from ``emails`` (deal id -> e-mail) where known."""
    return [
        dataclasses.replace(r, contact_email=emails[r.external_id]) if r.external_id in emails else r
        for r in records
    ]


def contacts_by_email(request: Requester, emails: Iterable[str]) -> dict[str, str]:
    """E-mail (lower-cased) -> contact id, for the e-mails HubSpot knows; 100 per call, by ``idProperty``."""
    out: dict[str, str] = {}
    unique = list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))
    for start in range(0, len(unique), CONTACTS_BATCH):
        chunk = unique[start : start + CONTACTS_BATCH]
        body = {"idProperty": "email", "properties": ["email"], "inputs": [{"id": e} for e in chunk]}
        response = request("POST", _CONTACTS_READ, json_body=body)
        for contact in _results(response.data):
            email = _email(contact)
            if contact.get("id") is not None and email is not None:
                out.setdefault(email, str(contact["id"]))
    return out


def identity_property_exists(request: Requester, system: str) -> bool:
    """Whether the account has ``system``'s link-id deal property (one GET; 404 is False)."""
    try:
        request("GET", f"/crm/v3/properties/deals/{link_property(system)}")
    except PermanentError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def ensure_identity_properties(request: Requester, systems: Sequence[str]) -> list[str]:
    """Create the ``sync_worker`` group and a link-id deal property per system when missing; names created."""
    if not systems:
        return []
    definitions = tuple(_identity_definition(system) for system in systems)
    return create_missing_properties(request, definitions, group=FLAG_GROUP)
