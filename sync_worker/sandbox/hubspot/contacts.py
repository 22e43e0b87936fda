"""Contacts and deal <-> contact associations of the HubSpot sandbox, in memory.

Follows:
- Contact objects (``id``, ``properties`` as strings: ``email``, ``firstname``, ``lastname``,
  ``createdate``, ``lastmodifieddate``, ``hs_object_id``; ``createdAt``, ``updatedAt``, ``archived``)
  and the default properties returned when none are asked for; ``email`` is a unique identifier
  usable as ``idProperty``: https://developers.hubspot.com/docs/api/crm/contacts
- Associations: a deal -> contact association has the HUBSPOT_DEFINED type 3, its reverse
  (contact -> deal) type 4; both directions exist once one is made; v4 reads list
  ``{"toObjectId", "associationTypes": [{"category", "typeId", "label"}]}`` per associated record:
  https://developers.hubspot.com/docs/api/crm/associations and
  https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/get-associations
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync_worker.sandbox.hubspot.wire import to_iso

__all__ = ["CONTACT_TO_DEAL_TYPE_ID", "DEAL_TO_CONTACT_TYPE_ID", "ContactBook"]

DEAL_TO_CONTACT_TYPE_ID = 3
CONTACT_TO_DEAL_TYPE_ID = 4

_DEFAULT_READ = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
_ALWAYS_READ = ("createdate", "hs_object_id", "lastmodifieddate")


@dataclass
class _Contact:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int


class ContactBook:
    """Contacts and their associations with deals, thread-safe. ``now_ms`` is the sandbox clock."""

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._lock = threading.RLock()
        self._contacts: dict[str, _Contact] = {}
        self._ids = itertools.count(51)
        # deal id -> contact ids, in the order the associations were made
        self._deal_contacts: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"ContactBook(contacts={len(self._contacts)})"

    # -- contacts -------------------------------------------------------------------------------------

    def add_contact(
        self,
        email: str | None = None,
        *,
        firstname: str | None = None,
        lastname: str | None = None,
        contact_id: str | None = None,
        created_ms: int | None = None,
    ) -> str:
        """Seed a contact directly (no validation beyond the unique e-mail); returns its id.

        An e-mail that a contact already has returns that contact's id, as HubSpot deduplicates
        contacts by e-mail.
        """
        with self._lock:
            if email:
                existing = self.find_by_email(email)
                if existing is not None:
                    return existing
            new_id = contact_id if contact_id is not None else str(next(self._ids))
            stamp = created_ms if created_ms is not None else self._now_ms()
            props = {"email": email or "", "firstname": firstname or "", "lastname": lastname or ""}
            props.update(createdate=to_iso(stamp), lastmodifieddate=to_iso(stamp), hs_object_id=new_id)
            self._contacts[new_id] = _Contact(new_id, props, stamp, stamp)
            return new_id

    def find_by_email(self, email: str) -> str | None:
        """The id of the contact with this e-mail (case-insensitive), or None."""
        wanted = email.strip().lower()
        with self._lock:
            for contact in self._contacts.values():
                if contact.properties.get("email", "").lower() == wanted and wanted:
                    return contact.id
        return None

    def exists(self, contact_id: str) -> bool:
        with self._lock:
            return contact_id in self._contacts

    def contact_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._contacts, key=int)

    def wire(self, contact_id: str, properties: Iterable[str] | None = None) -> dict[str, Any] | None:
        """A contact in the wire format with the asked-for properties (default set when None)."""
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                return None
            names = list(_DEFAULT_READ if properties is None else properties)
            names += [n for n in _ALWAYS_READ if n not in names]
            return {
                "id": contact.id,
                "properties": {n: contact.properties.get(n) or None for n in names},
                "createdAt": to_iso(contact.created_ms),
                "updatedAt": to_iso(contact.updated_ms),
                "archived": False,
            }

    # -- associations ---------------------------------------------------------------------------------

    def associate(self, deal_id: str, contact_id: str) -> None:
        """Associate a deal with a contact (type 3, and 4 the other way); idempotent."""
        with self._lock:
            linked = self._deal_contacts.setdefault(deal_id, [])
            if contact_id not in linked:
                linked.append(contact_id)

    def contacts_of(self, deal_id: str) -> list[str]:
        """Contact ids associated with a deal, in the order the associations were made."""
        with self._lock:
            return list(self._deal_contacts.get(deal_id, []))

    def deals_of(self, contact_id: str) -> list[str]:
        """Deal ids associated with a contact."""
        with self._lock:
            return [deal for deal, contacts in self._deal_contacts.items() if contact_id in contacts]

    @staticmethod
    def association_entry(to_id: str, type_id: int) -> dict[str, Any]:
        """One ``to`` entry of a v4 association read (unlabeled: ``label`` null)."""
        return {
            "toObjectId": int(to_id) if to_id.isdigit() else to_id,
            "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}],
        }

    def validate_associations(self, associations: object) -> list[str]:
        """Problems with the ``associations`` of a deal create input (empty when valid)."""
        if associations is None:
            return []
        if not isinstance(associations, list):
            return ["associations must be an array"]
        problems: list[str] = []
        for entry in associations:
            target = entry.get("to") if isinstance(entry, Mapping) else None
            types = entry.get("types") if isinstance(entry, Mapping) else None
            to_id = str(target.get("id")) if isinstance(target, Mapping) else ""
            if not isinstance(types, list) or not types:
                problems.append("each association needs to.id and types")
                continue
            for spec in types:
                category = spec.get("associationCategory") if isinstance(spec, Mapping) else None
                type_id = spec.get("associationTypeId") if isinstance(spec, Mapping) else None
                if category != "HUBSPOT_DEFINED" or type_id != DEAL_TO_CONTACT_TYPE_ID:
                    problems.append(
                        f"association type {category}/{type_id} is not valid from deal to contact"
                    )
            if not self.exists(to_id):
                problems.append(f"contact {to_id} does not exist")
        return problems
