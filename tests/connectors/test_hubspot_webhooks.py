"""HubSpot webhook verification (v3, v1) and parsing, against the documented examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.webhooks import parse_events, signed_uri, v3_signature, verify_signature
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import load_mappings

FIXTURES = Path(__file__).parent / "fixtures" / "hubspot"
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"


def _at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _request(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> WebhookRequest:
    return WebhookRequest(method=method, url=url, headers=headers, body=body, query={})


# -- v3 ---------------------------------------------------------------------------------------------


def test_v3_matches_the_hubspot_sdk_test_vector() -> None:
    # HubSpot/hubspot-api-python tests/spec/utils/test_signature.py: get_signature v3.
    signature = v3_signature(
        DOC_SECRET,
        "POST",
        "https://www.example.com/webhook_uri",
        b"{'example_field':'example_value'}",
        "15000000",
    )
    assert signature == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="


def test_v3_vector_verifies_with_an_injected_clock_and_any_header_case() -> None:
    request = _request(
        "https://www.example.com/webhook_uri",
        b"{'example_field':'example_value'}",
        {
            "X-HubSpot-Signature-V3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
            "X-HUBSPOT-REQUEST-TIMESTAMP": "15000000",
        },
    )
    verify_signature(request, DOC_SECRET, now=_at_ms(15_000_000 + 299_000))
    with pytest.raises(SignatureError, match="5 minutes"):
        verify_signature(request, DOC_SECRET, now=_at_ms(15_000_000 + 301_000))
    with pytest.raises(SignatureError, match="5 minutes"):
        verify_signature(request, DOC_SECRET, now=_at_ms(15_000_000 - 301_000))


def test_v3_decodes_exactly_the_documented_escapes() -> None:
    url = "https://hooks.example.com/webhooks/hubspot?next=%2Fdeals%3Fa%3D1&who=a%40b%2Cc&sp=x%20y&pct=%25"
    assert (
        signed_uri(url)
        == "https://hooks.example.com/webhooks/hubspot?next=/deals?a%3D1&who=a@b,c&sp=x%20y&pct=%25"
    )
    body = b'[{"objectId":1}]'
    ts = "1700000000000"
    # The sender signs the decoded form; we are handed the URL as it arrived (encoded).
    good = v3_signature(DOC_SECRET, "POST", signed_uri(url), body, ts)
    request = _request(url, body, {"x-hubspot-signature-v3": good, "x-hubspot-request-timestamp": ts})
    verify_signature(request, DOC_SECRET, now=_at_ms(int(ts)))


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({}, b"[]", "missing X-HubSpot-Signature-v3"),
        ({"x-hubspot-signature-v3": "AAAA"}, b"[]", "Request-Timestamp"),
        (
            {"x-hubspot-signature-v3": "AAAA", "x-hubspot-request-timestamp": "soon"},
            b"[]",
            "Request-Timestamp",
        ),
        (
            {"x-hubspot-signature-v3": "AAAA", "x-hubspot-request-timestamp": "1700000000000"},
            b"[]",
            "does not match",
        ),
    ],
)
def test_v3_refusals(headers: dict[str, str], body: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_signature(
            _request("https://x.test/h", body, headers), DOC_SECRET, now=_at_ms(1_700_000_000_000)
        )


def test_v3_tampered_body_is_refused() -> None:
    ts = "1700000000000"
    sig = v3_signature(DOC_SECRET, "POST", "https://x.test/h", b"[1]", ts)
    request = _request(
        "https://x.test/h", b"[2]", {"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": ts}
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(request, DOC_SECRET, now=_at_ms(int(ts)))


def test_no_secret_configured_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="no client secret"):
        verify_signature(_request("https://x.test/h", b"[]", {}), None, now=_at_ms(0))


# -- v1 ---------------------------------------------------------------------------------------------


def test_v1_doc_example_only_when_accepted() -> None:
    body = (FIXTURES / "webhook_v1_doc_example.json").read_bytes()
    headers = {
        "X-HubSpot-Signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        "X-HubSpot-Signature-Version": "v1",
    }
    request = _request("https://x.test/h", body, headers)
    verify_signature(request, DOC_SECRET, now=_at_ms(0), accept_v1=True)
    with pytest.raises(SignatureError, match="v1 signatures are not accepted"):
        verify_signature(request, DOC_SECRET, now=_at_ms(0), accept_v1=False)
    tampered = _request("https://x.test/h", body + b" ", headers)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(tampered, DOC_SECRET, now=_at_ms(0), accept_v1=True)


def test_connector_verifies_with_settings_secret_and_clock() -> None:
    ts = 1_700_000_000_000
    body = b"[]"
    connector = HubSpotConnector(
        load_mappings(Path("mappings")),
        token=SecretStr("pat-token"),
        client_secret=SecretStr(DOC_SECRET),
        clock=lambda: _at_ms(ts + 1000),
    )
    sig = v3_signature(DOC_SECRET, "POST", "https://sync.example.com/webhooks/hubspot", body, str(ts))
    connector.verify_webhook(
        _request(
            "https://sync.example.com/webhooks/hubspot",
            body,
            {"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": str(ts)},
        )
    )
    assert DOC_SECRET not in repr(connector)
    connector.close()


# -- parsing ----------------------------------------------------------------------------------------


def test_parse_documented_events() -> None:
    events = parse_events((FIXTURES / "webhook_events.json").read_bytes())
    assert [(e.object_type, e.action, e.object_id, e.handled) for e in events] == [
        ("contact", "propertyChange", "1246965", True),
        ("contact", "creation", "1246978", True),
        ("deal", "propertyChange", "9876", True),
        ("deal", "merge", "9877", True),
        ("deal", "propertyChange", "9878", True),
        ("deal", "associationChange", "9879", False),
    ]
    first, _, stage, _, generic, _ = events
    assert first.property_name == "lifecyclestage" and first.property_value == "subscriber"
    assert first.change_source == "ACADEMY"
    assert first.occurred_at == datetime(2016, 5, 2, 19, 11, 47, 945000, tzinfo=UTC)
    assert stage.attempt == 1 and stage.change_source == "CRM_UI:userId:45678"
    assert stage.property_value == "closedwon"
    assert generic.raw["objectTypeId"] == "0-3" and generic.change_source == "INTEGRATION:1160452"
    assert all(e.source == "hubspot" for e in events)
    assert len({e.dedupe_key for e in events}) == len(events)


def test_dedupe_key_survives_retries_and_new_event_ids() -> None:
    event = {
        "eventId": 1,
        "subscriptionType": "deal.propertyChange",
        "objectId": 5,
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "occurredAt": 1700000000000,
        "attemptNumber": 0,
        "portalId": 33,
    }
    retry = {**event, "eventId": 2, "attemptNumber": 3}
    other = {**event, "propertyValue": "closedlost"}
    a, b, c = parse_events(json.dumps([event, retry, other]).encode())
    assert a.dedupe_key == b.dedupe_key
    assert b.attempt == 3
    assert c.dedupe_key != a.dedupe_key


def test_event_type_fallback_and_unknown_object_types() -> None:
    body = json.dumps(
        [
            {"eventType": "deal.deletion", "objectId": "7", "occurredAt": "1700000000000"},
            {"subscriptionType": "object.creation", "objectTypeId": "2-123", "objectId": 8, "occurredAt": 1},
            {"subscriptionType": "contact.privacyDeletion", "objectId": 9, "occurredAt": 1},
            {"subscriptionType": "deal.restore", "objectId": 10, "occurredAt": 1},
        ]
    ).encode()
    events = parse_events(body)
    assert [(e.object_type, e.action, e.handled) for e in events] == [
        ("deal", "deletion", True),
        ("2-123", "creation", False),
        ("contact", "privacyDeletion", False),
        ("deal", "restore", True),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"objectId": 1}', "JSON array"),
        (json.dumps([{"objectId": 1, "occurredAt": 1}] * 101).encode(), "101 events"),
        (b"[1]", "event 0: expected an object"),
        (b'[{"objectId": 1, "occurredAt": 1}]', "event 0: subscriptionType"),
        (b'[{"subscriptionType": "deal.creation", "occurredAt": 1}]', "event 0: objectId is missing"),
        (b'[{"subscriptionType": "deal.creation", "objectId": "abc", "occurredAt": 1}]', "numeric id"),
        (b'[{"subscriptionType": "deal.creation", "objectId": 1}]', "occurredAt is missing"),
        (b'[{"subscriptionType": "object.creation", "objectId": 1, "occurredAt": 1}]', "objectTypeId"),
    ],
)
def test_malformed_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_events(body)
