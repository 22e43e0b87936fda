"""Outbound Messages the sandbox org sends: SOAP envelopes as the WSDL describes them, posted
until the listener answers ``<Ack>true</Ack>``.

Each change of an Opportunity (by a person or through the API: a workflow rule does not tell them
apart) becomes a ``Notification`` with a fresh ``Id`` (``04l``) in a message of at most 100; the
fields sent are the Opportunity's current values (Outbound Messaging guide: "only the latest field
values are sent"; retries use the same notification ids;
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_understanding.htm).
Salesforce retries with exponential backoff up to two hours apart for 24 hours; the sandbox keeps
the shape of that schedule, multiplied by ``time_scale``. An answer without ``Ack`` true is a failed
attempt: the :class:`~sync_worker.sandbox.common.Delivery` records it with ``error`` ``NoAckError``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import httpx

from connectors.salesforce.sandbox.org import sf_id
from connectors.salesforce.webhooks import OUTBOUND_NS, SOAP_NS, SOBJECT_NS
from sync_worker.sandbox.common import Faults, WebhookDeliverer

__all__ = ["NOTIFIED_FIELDS", "RETRY_DELAYS", "NoAckError", "OutboundSender", "envelope"]

NOTIFIED_FIELDS = (
    "Id",
    "Name",
    "StageName",
    "Amount",
    "CloseDate",
    "IsClosed",
    "IsWon",
    "LastModifiedById",
    "LastModifiedDate",
    "SystemModstamp",
)
RETRY_DELAYS = (15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3840.0, 7200.0, 7200.0, 7200.0)
_ACK = b"<Ack>true</Ack>"


class NoAckError(httpx.TransportError):
    """The listener answered without ``<Ack>true</Ack>``: Salesforce counts it as a failure."""


class _AckTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if not 200 <= response.status_code < 300:
            return response
        body = response.read()
        response.close()
        if _ACK not in body.replace(b" ", b""):
            raise NoAckError(f"HTTP {response.status_code} without <Ack>true</Ack>", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def envelope(
    org_id: str, action_id: str, base_url: str, notifications: Sequence[tuple[str, Mapping[str, Any]]]
) -> bytes:
    """The SOAP body of one Outbound Message: ``(notification id, Opportunity)`` pairs."""
    items = []
    for notification_id, opp in notifications:
        fields = "".join(
            f'<sf:{name} xsi:nil="true"/>'
            if opp.get(name) is None
            else f"<sf:{name}>{_value(opp[name])}</sf:{name}>"
            for name in NOTIFIED_FIELDS
        )
        items.append(
            f"<Notification><Id>{notification_id}</Id>"
            f'<sObject xsi:type="sf:Opportunity" xmlns:sf={quoteattr(SOBJECT_NS)}>{fields}</sObject>'
            "</Notification>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        f'<notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{org_id}</OrganizationId>'
        f'<ActionId>{action_id}</ActionId><SessionId xsi:nil="true"/>'
        f"<EnterpriseUrl>{escape(base_url)}/services/Soap/c/62.0/{org_id[:15]}</EnterpriseUrl>"
        f"<PartnerUrl>{escape(base_url)}/services/Soap/u/62.0/{org_id[:15]}</PartnerUrl>"
        f"{''.join(items)}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


class OutboundSender(WebhookDeliverer):
    """A :class:`WebhookDeliverer` whose attempts succeed only on an ``Ack``.

    The shared deliverer retries on a non-2xx status; Salesforce also retries a 2xx without the
    Ack, so this one sends through a transport that fails such an answer.
    """

    def __init__(
        self, *, org_id: str, base_url: str, url: str | None, time_scale: float, faults: Faults
    ) -> None:
        super().__init__(retry_delays=RETRY_DELAYS, time_scale=time_scale, faults=faults)
        self._client.close()
        self._client = httpx.Client(timeout=60.0, transport=_AckTransport())
        self.org_id = org_id
        self.action_id = sf_id("04k", 1)
        self.base_url = base_url
        self.url = url
        self._notification_ids = itertools.count(1)
        self._id_lock = threading.Lock()

    def notify(self, opportunities: Sequence[Mapping[str, Any]]) -> list[str]:
        """Send the Opportunities' current values (messages of at most 100); the notification ids."""
        if self.url is None or not opportunities:
            return []
        with self._id_lock:
            numbered = [(sf_id("04l", next(self._notification_ids)), dict(opp)) for opp in opportunities]
        for start in range(0, len(numbered), 100):
            body = envelope(self.org_id, self.action_id, self.base_url, numbered[start : start + 100])
            self.submit(self.url, body, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        return [n for n, _ in numbered]
