"""Outbound Messages: the SOAP envelope parsed, the org checked, the SOAP answers, normalisation,
and the receiver answering Ack only once the notifications are stored.

The envelope is the Outbound Messaging WSDL's shape (fixtures/salesforce/outbound_message.xml).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from defusedxml.ElementTree import fromstring
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr
from starlette.applications import Starlette

from connectors.salesforce import SalesforceConnector, SalesforceSettings
from connectors.salesforce.webhooks import (
    OUTBOUND_NS,
    SOAP_NS,
    ack_body,
    fault_body,
    parse_message,
    to_events,
)
from sync_worker.broker import build_stub_broker
from sync_worker.canonical import StageKey
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError, StoreUnavailableError
from sync_worker.mappings import Mappings, MappingsHolder, load_mappings
from sync_worker.receiver import create_app
from sync_worker.settings import Settings
from sync_worker.store import SyncStore, upgrade_database
from sync_worker.store.models import InboxEvent

ORG = "00D5e000000KQ2eEAG"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
API = "https://yourInstance.my.salesforce.com/services/data/v62.0"


FIXTURES = Path(__file__).parent / "fixtures" / "salesforce"
REPO = Path(__file__).resolve().parents[2]
BODY = (FIXTURES / "outbound_message.xml").read_bytes()


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


def connector(router: respx.Router, mappings: Mappings, **values: Any) -> SalesforceConnector:
    options: dict[str, Any] = {"organization_id": ORG, **values}
    settings = SalesforceSettings(
        access_token=SecretStr("00D!session"),
        instance_url="https://yourInstance.my.salesforce.com",
        **options,
    )
    return SalesforceConnector(
        settings, lambda: mappings, transport=httpx.MockTransport(router.handler), clock=lambda: NOW
    )


def hook(body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", "https://sync.example.com/webhooks/salesforce", {}, body, {})


def envelope(notifications: str, org: str = ORG) -> bytes:
    return (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soapenv:Body><notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{org}</OrganizationId>'
        f"<ActionId>04k5e000000CaRkAAK</ActionId>{notifications}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def notification(number: int, kind: str = "Opportunity", fields: str = "") -> str:
    return (
        f"<Notification><Id>04l5e00000Gx{number:04d}AAJ</Id>"
        f'<sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"<sf:Id>006xx00000{number:05d}AAS</sf:Id>{fields}</sObject></Notification>"
    )


# -- parsing ---------------------------------------------------------------------------------


def test_the_documented_envelope_gives_one_event_per_notification_keyed_by_its_id() -> None:
    events = to_events(parse_message(BODY), lambda: NOW)
    assert [(e.dedupe_key, e.object_type, e.object_id, e.action) for e in events] == [
        ("04l5e00000Gx7QzAAJ", "opportunity", "006xx000004TmiQAAS", "change"),
        ("04l5e00000Gx7R0AAJ", "opportunity", "006xx000004TmiRAAS", "change"),
    ]
    first = events[0]
    assert (first.property_name, first.property_value) == ("StageName", "Closed Won")
    assert first.change_source == "005xx000001SvogAAC"
    assert first.occurred_at == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert first.raw["fields"]["Amount"] == "50000.0"
    assert first.raw["organizationId"] == ORG
    json.dumps(dict(first.raw))  # stored as JSON


def test_other_objects_are_kept_unhandled_and_nil_fields_are_none() -> None:
    body = envelope(notification(1, "Account", '<sf:Name xsi:nil="true"/>'))
    (event,) = to_events(parse_message(body), lambda: NOW)
    assert not event.handled and event.reason is not None and "Account" in event.reason
    assert event.raw["fields"]["Name"] is None
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not xml", "SOAP envelope"),
        (b"<html/>", "Envelope"),
        (
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body/></soapenv:Envelope>'.encode(),
            "notifications",
        ),
        (envelope(""), "no Notification"),
        (envelope("".join(notification(i) for i in range(101))), "at most 100"),
        (envelope("<Notification><Id>04l</Id></Notification>"), "lacks"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b"<lolz>&lol2;</lolz>",
            "DTDForbidden",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
            "DTDForbidden",
        ),
    ],
)
def test_malformed_or_hostile_bodies_are_payload_errors(body: bytes, detail: str) -> None:
    with pytest.raises(PayloadError, match=detail):
        parse_message(body)


def test_a_hundred_notifications_are_accepted() -> None:
    events = to_events(parse_message(envelope("".join(notification(i) for i in range(100)))), lambda: NOW)
    assert len({e.dedupe_key for e in events}) == 100


def test_the_organization_is_checked(router: respx.Router, mappings: Mappings) -> None:
    connector(router, mappings).verify_webhook(hook(BODY))
    connector(router, mappings, organization_id=ORG[:15]).verify_webhook(hook(BODY))
    with pytest.raises(SignatureError, match="another organization"):
        connector(router, mappings).verify_webhook(hook(envelope(notification(1), org="00D000000000001AAA")))
    with pytest.raises(SignatureError, match="ORGANIZATION_ID"):
        connector(router, mappings, organization_id=None).verify_webhook(hook(BODY))


def test_ack_and_fault_are_soap() -> None:
    media, ack = ack_body(2)
    assert media.startswith("text/xml")
    root = fromstring(ack)
    assert root.tag == f"{{{SOAP_NS}}}Envelope"
    assert root.find(f".//{{{OUTBOUND_NS}}}notificationsResponse/{{{OUTBOUND_NS}}}Ack").text == "true"  # type: ignore[union-attr]
    media, fault = fault_body(400, "bad <envelope> & more")
    node = fromstring(fault).find(f".//{{{SOAP_NS}}}Fault")
    assert node is not None
    assert node.findtext("faultcode") == "soapenv:Client"
    assert node.findtext("faultstring") == "bad <envelope> & more"
    assert (
        fromstring(fault_body(503, "down")[1]).findtext(f".//{{{SOAP_NS}}}Fault/faultcode")
        == "soapenv:Server"
    )
    assert b"Ack" not in fault


# -- normalisation ---------------------------------------------------------------------------


def inbox(events: list[Any]) -> list[InboxEvent]:
    return [
        InboxEvent(
            id=i + 1,
            source=e.source,
            dedupe_key=e.dedupe_key,
            object_type=e.object_type,
            object_id=e.object_id,
            action=e.action,
            occurred_at=e.occurred_at,
            payload=e.raw,
            received_at=NOW,
            change_source=e.change_source,
        )
        for i, e in enumerate(events)
    ]


def stage_rows() -> dict[str, Any]:
    rows = [
        {
            "ApiName": name,
            "MasterLabel": name,
            "SortOrder": n,
            "IsActive": True,
            "IsClosed": closed,
            "IsWon": won,
            "DefaultProbability": p,
        }
        for n, (name, closed, won, p) in enumerate(
            [
                ("Negotiation/Review", False, False, 90),
                ("Closed Won", True, True, 100),
                ("Closed Lost", True, False, 0),
            ]
        )
    ]
    return {"totalSize": len(rows), "done": True, "records": rows}


def test_notifications_become_records_with_won_from_the_stage_flags(
    router: respx.Router, mappings: Mappings
) -> None:
    query = router.get(f"{API}/query").mock(return_value=httpx.Response(200, json=stage_rows()))
    sf = connector(router, mappings)
    ctx = NormaliseContext(mappings=mappings, lookup=lambda *_: None)
    out = sf.normalise_events(inbox(sf.parse_webhook(BODY)), ctx)

    won, burlington = (record for record, _ in out.records)
    assert (won.external_id, won.stage, won.status, won.amount) == (
        "006xx000004TmiQAAS",
        StageKey.WON,
        "won",
        50000,
    )
    assert (burlington.stage, burlington.status, burlington.title) == (
        StageKey.NEGOTIATION,
        "open",
        "Burlington Textiles Weaving Plant",
    )
    assert [ids for _, ids in out.records] == [(1,), (2,)]
    assert "FROM OpportunityStage" in query.calls.last.request.url.params["q"]  # IsClosed was not sent


def test_own_writes_are_echoes_and_thin_notifications_are_read_in_one_batch(
    router: respx.Router, mappings: Mappings
) -> None:
    row = {
        "Id": "006xx00000" + "00002AAS",
        "Name": "Read back",
        "StageName": "Closed Lost",
        "IsClosed": True,
        "IsWon": False,
        "SystemModstamp": "2026-06-01T10:00:00.000+0000",
        "LastModifiedById": "005xx000009PersonA",
        "IsDeleted": False,
    }
    query_all = router.get(f"{API}/queryAll").mock(
        return_value=httpx.Response(200, json={"totalSize": 1, "done": True, "records": [row]})
    )
    body = envelope(
        notification(
            1,
            fields="<sf:StageName>Prospecting</sf:StageName><sf:LastModifiedById>005SYNC</sf:LastModifiedById>"
            "<sf:SystemModstamp>2026-06-01T10:00:00.000Z</sf:SystemModstamp>",
        )
        + notification(2)
        + notification(2)[: -len("</Notification>")].replace("Gx0002", "Gx0003")
        + "</Notification>"
        + notification(4, "Account")
        + notification(5).replace("006xx0000000005AAS", "006-not-an-id")
    )
    sf = connector(router, mappings)
    events = inbox(sf.parse_webhook(body))
    out = sf.normalise_events(
        events,
        NormaliseContext(mappings=mappings, lookup=lambda *_: None, own_markers=frozenset({"005SYNC"})),
    )

    assert out.echo_ids == [1]
    assert out.reads == 1 and query_all.call_count == 1
    assert "WHERE Id IN ('006xx0000000002AAS')" in query_all.calls.last.request.url.params["q"]
    ((record, ids),) = out.records
    assert (record.status, record.stage, ids) == ("lost", StageKey.LOST, (2, 3))
    assert list(out.skipped) == [4, 5]


# -- the receiver ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SyncStore]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    sync_store = SyncStore(url)
    yield sync_store
    sync_store.close()


def post(app: Starlette, body: bytes) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(
                "/webhooks/salesforce", content=body, headers={"Content-Type": "text/xml"}
            )

    return asyncio.run(call())


def receiver(router: respx.Router, mappings: Mappings, store: Any) -> Starlette:
    broker: StubBroker = build_stub_broker()
    return create_app(
        Settings(_env_file=None, database_url="sqlite:///./unused.db"),
        store=store,
        broker=broker,
        mappings_holder=MappingsHolder(REPO / "mappings", interval=60.0),
        connectors={"salesforce": connector(router, mappings)},
        sweep_interval=None,
        access_log=False,
    )


def test_the_receiver_acks_in_soap_once_stored_and_ignores_redeliveries(
    router: respx.Router, mappings: Mappings, store: SyncStore
) -> None:
    app = receiver(router, mappings, store)
    first = post(app, BODY)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in first.content
    assert store.inbox_depth() == 2
    again = post(app, BODY)
    assert again.status_code == 200 and b"<Ack>true</Ack>" in again.content
    assert store.inbox_depth() == 2


@pytest.mark.parametrize(
    ("body", "status"), [(b"<oops", 400), (envelope(notification(1), org="00D000000000001AAA"), 401)]
)
def test_the_receiver_answers_refusals_with_a_soap_fault_and_stores_nothing(
    router: respx.Router, mappings: Mappings, store: SyncStore, body: bytes, status: int
) -> None:
    response = post(receiver(router, mappings, store), body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/xml")
    assert fromstring(response.content).find(f".//{{{SOAP_NS}}}Fault") is not None
    assert b"Ack" not in response.content
    assert store.inbox_depth() == 0


class _DownStore:
    """A store whose database is gone: every call fails as SyncStore does then."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailableError("database unreachable")

        return fail


def test_no_ack_while_the_store_is_down(router: respx.Router, mappings: Mappings) -> None:
    response = post(receiver(router, mappings, _DownStore()), BODY)
    assert response.status_code == 503
    assert b"<Ack>" not in response.content
    assert fromstring(response.content).findtext(f".//{{{SOAP_NS}}}Fault/faultcode") == "soapenv:Server"
