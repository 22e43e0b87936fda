"""Outbound Messages: Salesforce's SOAP webhook, parsed, checked and answered.

A workflow rule or flow's Outbound Message POSTs a SOAP 1.1 envelope whose ``notifications``
element (namespace ``http://soap.sforce.com/2005/09/outbound``) holds ``OrganizationId``,
``ActionId``, ``SessionId`` (nillable), ``EnterpriseUrl``, ``PartnerUrl`` and 1 to 100
``Notification`` elements, each an ``Id`` and an ``sObject`` (``xsi:type="sf:Opportunity"``) whose
fields are in ``urn:sobject.enterprise.soap.sforce.com`` (the WSDL:
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_wsdl.htm).
Delivery is at least once, unordered, retried for 24 hours until the listener answers
``notificationsResponse`` with ``Ack`` true as ``text/xml``; a notification ``Id`` repeats across
retries, so it is the event's ``dedupe_key``
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_notifications.htm).

There is no signature: a message is accepted only from the configured ``OrganizationId`` (the
15-character case-sensitive prefix of an 18-character id is compared). The body is parsed with
``defusedxml`` with DTDs forbidden, so no entity is ever expanded (no XML bombs, no external
entities). :func:`ack_body` and :func:`fault_body` are the spec's ``webhook_ack`` and
``webhook_fault``: the receiver answers in SOAP.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from connectors.salesforce.convert import SOURCE
from connectors.salesforce.wire import parse_datetime
from sync_worker.canonical import WebhookEvent
from sync_worker.errors import PayloadError, SignatureError

__all__ = [
    "CONTENT_TYPE",
    "MAX_NOTIFICATIONS",
    "OUTBOUND_NS",
    "SOAP_NS",
    "SOBJECT_NS",
    "OutboundMessage",
    "ack_body",
    "fault_body",
    "parse_message",
    "to_events",
    "verify_organization",
]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
CONTENT_TYPE = "text/xml; charset=utf-8"


@dataclass(frozen=True)
class OutboundMessage:
    """One parsed delivery: the org, the action, and each notification as ``(Id, type, fields)``."""

    organization_id: str
    action_id: str | None
    notifications: tuple[tuple[str, str, dict[str, str | None]], ...]


def _child(parent: Element, ns: str, name: str) -> Element | None:
    return parent.find(f"{{{ns}}}{name}")


def _text(element: Element | None) -> str | None:
    if element is None or element.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    text = (element.text or "").strip()
    return text or None


def _fields(sobject: Element) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for field in sobject:
        if not isinstance(field.tag, str) or not field.tag.startswith(f"{{{SOBJECT_NS}}}"):
            continue
        fields[field.tag.split("}", 1)[1]] = _text(field)
    return fields


def parse_message(body: bytes) -> OutboundMessage:
    """The Outbound Message in ``body``; :class:`PayloadError` when it is not a well-formed one."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise PayloadError(f"salesforce: not a usable SOAP envelope ({type(exc).__name__})") from exc
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise PayloadError("salesforce: the body is not a SOAP 1.1 Envelope")
    soap_body = _child(root, SOAP_NS, "Body")
    notifications = _child(soap_body, OUTBOUND_NS, "notifications") if soap_body is not None else None
    if notifications is None:
        raise PayloadError("salesforce: the envelope has no outbound notifications element")
    org = _text(_child(notifications, OUTBOUND_NS, "OrganizationId"))
    if org is None:
        raise PayloadError("salesforce: the notifications have no OrganizationId")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not items:
        raise PayloadError("salesforce: the message holds no Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadError(f"salesforce: {len(items)} notifications, at most {MAX_NOTIFICATIONS} allowed")
    parsed: list[tuple[str, str, dict[str, str | None]]] = []
    for item in items:
        notification_id = _text(_child(item, OUTBOUND_NS, "Id"))
        sobject = _child(item, OUTBOUND_NS, "sObject")
        if notification_id is None or sobject is None:
            raise PayloadError("salesforce: a Notification lacks its Id or sObject")
        kind = (sobject.get(f"{{{XSI_NS}}}type") or "").rpartition(":")[2]
        fields = _fields(sobject)
        if not fields.get("Id"):
            raise PayloadError(f"salesforce: notification {notification_id} has an sObject without Id")
        parsed.append((notification_id, kind, fields))
    return OutboundMessage(org, _text(_child(notifications, OUTBOUND_NS, "ActionId")), tuple(parsed))


def verify_organization(message: OutboundMessage, expected: str | None) -> None:
    """:class:`SignatureError` unless the message comes from the configured organisation."""
    if not expected:
        raise SignatureError("salesforce: SYNC_SALESFORCE__ORGANIZATION_ID is not set; messages refused")
    given = message.organization_id[:15].encode()
    if not hmac.compare_digest(given, expected[:15].encode()):
        raise SignatureError("salesforce: the Outbound Message comes from another organization")


def to_events(message: OutboundMessage, now: Callable[[], datetime]) -> list[WebhookEvent]:
    """One event per notification; other objects than Opportunity are kept unhandled."""
    events: list[WebhookEvent] = []
    for notification_id, kind, fields in message.notifications:
        raw: dict[str, Any] = {
            "notificationId": notification_id,
            "organizationId": message.organization_id,
            "actionId": message.action_id,
            "type": kind,
            "fields": fields,
        }
        occurred = parse_datetime(fields.get("SystemModstamp")) or parse_datetime(
            fields.get("LastModifiedDate")
        )
        handled = kind == "Opportunity"
        events.append(
            WebhookEvent(
                source=SOURCE,
                dedupe_key=notification_id,
                object_type=kind.lower() or "unknown",
                object_id=str(fields["Id"]),
                action="change",
                occurred_at=occurred or now(),
                raw=raw,
                property_name="StageName" if "StageName" in fields else None,
                property_value=fields.get("StageName"),
                change_source=fields.get("LastModifiedById"),
                handled=handled,
                reason=None if handled else f"{kind or 'untyped'} notifications are not synced",
            )
        )
    return events


def ack_body(accepted: int) -> tuple[str, bytes]:
    """The ``notificationsResponse`` with ``Ack`` true, sent once the notifications are stored."""
    return CONTENT_TYPE, (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
        f'<soapenv:Body><notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack>'
        "</notificationsResponse></soapenv:Body></soapenv:Envelope>"
    ).encode()


def fault_body(status: int, message: str) -> tuple[str, bytes]:
    """A SOAP 1.1 Fault (``soapenv:Client`` for 4xx, ``soapenv:Server`` otherwise): no Ack, so
    Salesforce retries a refused or failed delivery."""
    code = "soapenv:Client" if 400 <= status < 500 else "soapenv:Server"
    return CONTENT_TYPE, (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
        f"<soapenv:Body><soapenv:Fault><faultcode>{code}</faultcode>"
        f"<faultstring>{escape(message[:500])}</faultstring></soapenv:Fault>"
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()
