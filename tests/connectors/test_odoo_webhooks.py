"""The Odoo server-action webhook: the secret in the URL, the payload, and normalisation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import respx
from pydantic import SecretStr

from connectors.odoo import OdooConnector
from connectors.odoo.webhooks import parse_webhook, verify_token
from sync_worker.canonical import StageKey, WebhookEvent
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store.models import InboxEvent, StoredRecord
from tests.connectors.odoo_helpers import BASE, REPO, body, build, fixture, json2

SECRET = SecretStr("s3cret-token-value")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
Make = Callable[..., OdooConnector]


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def make(router: respx.Router, mappings: Mappings) -> Make:
    return lambda **settings: build(router, mappings, **settings)


def request(query: dict[str, str], payload: bytes = b"{}") -> WebhookRequest:
    url = f"https://sync.example.com/webhooks/odoo?{'&'.join(f'{k}={v}' for k, v in query.items())}"
    return WebhookRequest("POST", url, {"content-type": "application/json"}, payload, query)


def test_the_token_in_the_url_is_checked() -> None:
    verify_token(request({"token": SECRET.get_secret_value()}), SECRET)
    for query in ({}, {"token": "wrong"}, {"token": ""}, {"other": SECRET.get_secret_value()}):
        with pytest.raises(SignatureError) as caught:
            verify_token(request(query), SECRET)
        assert SECRET.get_secret_value() not in str(caught.value)
    with pytest.raises(SignatureError, match="not configured"):
        verify_token(request({"token": "x"}), None)


def test_the_documented_payload_is_one_event() -> None:
    raw = json.dumps(fixture("webhook_lead.json")).encode()
    [event] = parse_webhook(raw, now=lambda: NOW)
    assert (event.object_type, event.object_id, event.action) == ("crm.lead", "7", "Lead stage webhook(#42)")
    assert event.occurred_at == datetime(2025, 3, 1, 10, 15, 2, tzinfo=UTC)
    assert (event.property_name, event.property_value) == ("stage_id", "4")
    assert event.handled and event.change_source is None
    again = parse_webhook(raw, now=lambda: NOW)[0]
    assert again.dedupe_key == event.dedupe_key  # the same delivery is the same event


def test_payload_variants() -> None:
    partner = {"_id": 3, "_model": "res.partner", "_action": "x(#1)"}
    [other] = parse_webhook(json.dumps(partner).encode(), now=lambda: NOW)
    assert not other.handled and other.reason and other.occurred_at == NOW
    lead = {"_id": 3, "_model": "crm.lead", "_action": "x(#1)", "type": "lead", "write_uid": 6}
    [plain] = parse_webhook(json.dumps(lead).encode(), now=lambda: NOW)
    assert not plain.handled and plain.change_source == "user:6"
    bad_time = b'{"_id": 1, "_model": "crm.lead", "write_date": "soon"}'
    for bad in (b"not json", b"[]", b'{"_model": "crm.lead"}', bad_time):
        with pytest.raises(PayloadError):
            parse_webhook(bad, now=lambda: NOW)


def inbox(event: WebhookEvent, number: int) -> InboxEvent:
    return InboxEvent(
        id=number,
        source=event.source,
        dedupe_key=event.dedupe_key,
        object_type=event.object_type,
        object_id=event.object_id,
        action=event.action,
        occurred_at=event.occurred_at,
        payload=event.raw,
        received_at=NOW,
        property_name=event.property_name,
        property_value=event.property_value,
        change_source=event.change_source,
    )


def delivery(lead_id: int, **fields: Any) -> WebhookEvent:
    payload = {"_id": lead_id, "_model": "crm.lead", "_action": "sync(#7)", "id": lead_id, **fields}
    return parse_webhook(json.dumps(payload).encode(), now=lambda: NOW)[0]


def test_events_are_read_back_in_one_call_and_own_writes_are_echoes(
    router: respx.Router,
    make: Make,
    mappings: Mappings,
) -> None:
    leads = fixture("leads.json")
    json2(router, "crm.stage", "search_read", fixture("stages.json"))
    read = json2(router, "crm.lead", "search_read", [leads[0], leads[1], leads[2]])
    lookups: list[tuple[str, str, str]] = []

    def lookup(source: str, kind: str, external_id: str) -> Any:
        lookups.append((source, kind, external_id))
        return None

    ctx = NormaliseContext(mappings=mappings, lookup=lookup, own_markers=frozenset({"user:6"}))
    events = [
        inbox(delivery(5, stage_id=3), 1),
        inbox(delivery(5, stage_id=3, probability=50.0), 2),
        inbox(delivery(6), 3),  # written last by user 6 (the service): an echo once read
        inbox(delivery(7, write_uid=6), 4),  # says so itself: no read needed for it
        inbox(delivery(99), 5),  # gone from Odoo and never stored
    ]
    out = make(user_id=6).normalise_events(events, ctx)
    assert read.call_count == 1 and out.reads == 1
    sent = body(read.calls.last.request)
    assert sent["domain"] == [["id", "in", [5, 6, 99]]] and sent["context"]["active_test"] is False
    assert [(r.external_id, ids) for r, ids in out.records] == [("5", (1, 2))]
    assert sorted(out.echo_ids) == [3, 4]
    assert list(out.skipped) == [5] and lookups == [("odoo", "deal", "99")]


def test_a_vanished_lead_that_was_stored_comes_back_deleted(
    router: respx.Router,
    make: Make,
    mappings: Mappings,
) -> None:
    json2(router, "crm.lead", "search_read", [])
    stored = StoredRecord(
        id=1,
        source="odoo",
        kind="deal",
        external_id="12",
        status="open",
        source_updated_at=NOW,
        first_seen_at=NOW,
        last_seen_at=NOW,
        stage=StageKey.PROPOSAL,
        title="Kept",
    )
    ctx = NormaliseContext(mappings=mappings, lookup=lambda s, k, i: stored if i == "12" else None)
    context = json2(router, "res.users", "context_get", {"lang": "en_US", "tz": "UTC", "uid": 6})
    connector = make()
    out = connector.normalise_events([inbox(delivery(12), 1)], ctx)
    assert context.call_count == 1 and connector.own_marker() == "user:6"  # asked once, then known
    [(record, ids)] = out.records
    assert (record.external_id, record.status, record.title, ids) == ("12", "deleted", "Kept", (1,))


def test_a_persons_change_overwritten_by_ours_since_stays_theirs(
    router: respx.Router, make: Make, mappings: Mappings
) -> None:
    # Given a delivery naming a person (user 2), and the lead last written by the service (user 6)
    json2(router, "crm.stage", "search_read", fixture("stages.json"))
    json2(router, "crm.lead", "search_read", [fixture("leads.json")[1]])
    ctx = NormaliseContext(mappings=mappings, lookup=lambda s, k, i: None, own_markers=frozenset({"user:6"}))
    out = make(user_id=6).normalise_events([inbox(delivery(6, write_uid=2), 1)], ctx)
    # Then it is the person's change, not an echo
    [(record, ids)] = out.records
    assert (record.external_id, record.change_source, ids) == ("6", "user:2", (1,)) and out.echo_ids == []
