"""Pipedrive webhooks (basic auth, v1 and v2 bodies) and the pure translation functions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.pipedrive import from_canonical, parse_webhook, to_canonical, verify_basic_auth
from connectors.pipedrive.convert import stage_from_payload
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, PermanentError, SignatureError
from sync_worker.mappings import Mappings, load_mappings

FIXTURES = Path(__file__).parent / "fixtures" / "pipedrive"
REPO = Path(__file__).resolve().parents[2]


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> Any:
    return json.loads(raw(name))


def request(authorization: str | None) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return WebhookRequest("POST", "https://sync.example.com/webhooks/pipedrive", headers, b"{}", {})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


# -- verification ------------------------------------------------------------------------


def test_matching_basic_auth_passes() -> None:
    verify_basic_auth(request(basic("hook", "p:w")), "hook", SecretStr("p:w"))


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "header is missing"),
        (basic("hook", "wrong"), "do not match"),
        (basic("other", "pw-secret"), "do not match"),
        ("Basic " + base64.b64encode(b"hookpw-secret").decode(), "do not match"),
        ("Bearer abc", "not Basic"),
        ("Basic %%%", "not base64"),
    ],
    ids=["missing", "bad-password", "bad-user", "no-colon", "bearer", "garbage"],
)
def test_bad_basic_auth_is_refused_without_echoing_secrets(authorization: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        verify_basic_auth(request(authorization), "hook", SecretStr("pw-secret"))
    assert "pw-secret" not in str(caught.value)
    assert caught.value.status == 401


def test_unconfigured_credentials_refuse_everything() -> None:
    with pytest.raises(SignatureError, match="not configured"):
        verify_basic_auth(request(basic("hook", "pw")), None, None)


# -- parsing -----------------------------------------------------------------------------


def test_v2_change_event() -> None:
    (event,) = parse_webhook(raw("webhook_v2_deal_change.json"))
    assert event.source == "pipedrive"
    assert event.dedupe_key == "v2:5a0f3e8e-3b9b-4a76-8a9e-1d2c3b4a5e6f"
    assert (event.object_type, event.object_id, event.action) == ("deal", "746", "change")
    assert event.occurred_at == datetime(2024, 5, 15, 18, tzinfo=UTC)
    assert (event.property_name, event.property_value) == ("stage_id", "3")
    assert event.change_source == "app:123"
    assert event.attempt == 1 and event.handled
    assert event.raw["data"]["title"] == "Biview"


def test_v2_delete_event_with_numeric_ids() -> None:
    (event,) = parse_webhook(raw("webhook_v2_deal_delete.json"))
    assert (event.object_id, event.action, event.handled) == ("746", "delete", True)
    assert event.change_source == "api:777"
    assert event.attempt == 2
    assert event.property_name is None


def test_v1_updated_deal() -> None:
    (event,) = parse_webhook(raw("webhook_v1_deal_updated.json"))
    assert (event.object_type, event.object_id, event.action) == ("deal", "42", "change")
    assert event.dedupe_key == "v1:deal:42:change:1523440213384700"
    assert event.occurred_at == datetime.fromtimestamp(1523440213, UTC)
    assert (event.property_name, event.property_value) == ("status", "lost")
    assert event.change_source == "api:5678"
    assert event.handled


def test_v1_retry_keeps_the_dedupe_key_and_string_ids_work() -> None:
    body = fixture("webhook_v1_deal_updated.json")
    first = parse_webhook(json.dumps(body).encode())[0]
    body["retry"] = 3
    body["meta"]["id"] = "42"
    again = parse_webhook(json.dumps(body).encode())[0]
    assert again.dedupe_key == first.dedupe_key and again.attempt == 3 and again.object_id == "42"


@pytest.mark.parametrize("entity", ["person", "activity", "lead"])
def test_unhandled_objects_are_returned_not_rejected(entity: str) -> None:
    body = fixture("webhook_v2_deal_change.json")
    body["meta"]["entity"] = entity
    (event,) = parse_webhook(json.dumps(body).encode())
    assert event.object_type == entity and not event.handled


def test_missing_timestamp_uses_injected_clock() -> None:
    body = fixture("webhook_v2_deal_change.json")
    del body["meta"]["timestamp"]
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    (event,) = parse_webhook(json.dumps(body).encode(), now=lambda: fixed)
    assert event.occurred_at == fixed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"data": {}}', "meta is not an object"),
        (b'{"meta": {"action": "change", "entity": "deal", "entity_id": "1"}}', "meta.id"),
        (b'{"meta": {"id": "x", "action": "change", "entity": "deal", "entity_id": true}}', "meta.entity_id"),
        (b'{"meta": {"id": "x", "entity": "deal", "entity_id": 1}}', "meta.action"),
        (b'{"meta": {"id": "x", "action": "change", "entity": "deal", "entity_id": 1, "timestamp": "soon"}}',
         "meta.timestamp"),
        (b'{"meta": {"id": "x", "action": "change", "entity": "deal", "entity_id": 1}, "data": [1]}',
         "data is not an object"),
        (b'{"v": 1, "event": "updated.deal", "meta": {"id": 1}}', "meta.timestamp is missing"),
    ],
)  # fmt: skip
def test_malformed_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        parse_webhook(body)
    assert caught.value.status == 400


# -- pure translation --------------------------------------------------------------------


def test_to_canonical_doc_example(mappings: Mappings) -> None:
    stages = {
        "2": stage_from_payload(fixture("stages_v2.json")["data"][1], {"1": "Pipeline"}),
    }
    record = to_canonical(fixture("deal_v2.json"), mappings, stages=stages, person_emails={"1": "a@b.c"})
    assert record.external_id == "1" and record.kind == "deal"
    assert record.status == "won" and record.stage == StageKey.WON  # status wins over "Contact Made"
    assert record.updated_at == datetime(2024, 7, 1, 11, 29, 32, tzinfo=UTC)
    assert record.created_at == datetime(2024, 7, 1, 5, 46, 33, tzinfo=UTC)
    assert record.stage_changed_at == datetime(2024, 7, 1, 5, 49, 13, tzinfo=UTC)
    assert record.amount == Decimal("0.0") and record.currency == "USD"
    assert (record.owner_id, record.pipeline_id, record.source_stage) == ("18", "1", "2")
    assert record.close_date == date(2024, 7, 15)
    assert record.contact_email == "a@b.c"
    assert record.unmapped is None


def test_to_canonical_open_deal_without_stage_names_is_unmapped(mappings: Mappings) -> None:
    payload = {**fixture("deal_v2.json"), "status": "open"}
    record = to_canonical(payload, mappings)  # no stage cache: the name mapping cannot match an id
    assert record.stage is None
    assert record.unmapped is not None and record.unmapped.stage == "2"


def test_to_canonical_accepts_webhook_v1_times_and_string_ids(mappings: Mappings) -> None:
    current = fixture("webhook_v1_deal_updated.json")["current"]
    record = to_canonical({**current, "id": "42"}, mappings)
    assert record.updated_at == datetime(2018, 4, 11, 9, 50, 13, tzinfo=UTC)
    assert (
        record.external_id == "42" and record.stage == StageKey.LOST and record.lost_reason == "Too expensive"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"update_time": None}, "no update_time"),
        ({"update_time": "yesterday"}, "RFC 3339"),
        ({"status": "frozen"}, "not one of"),
        ({"value": "lots"}, "not a number"),
        ({"id": None}, "deal id is missing"),
    ],
)
def test_to_canonical_rejects_bad_payloads(mappings: Mappings, change: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        to_canonical({**fixture("deal_v2.json"), **change}, mappings)


def _update(**fields: Any) -> CanonicalUpdate:
    return CanonicalUpdate(
        target="pipedrive", idempotency_key="k", origin="hubspot", external_id="1", **fields
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "won"}, {"status": "won"}),
        ({"stage": StageKey.WON}, {"status": "won"}),
        ({"status": "open", "lost_reason": "x"}, {"status": "open"}),
        ({"status": "lost", "lost_reason": "x"}, {"status": "lost", "lost_reason": "x"}),
        ({"amount": Decimal("10.00")}, {"value": 10}),
        ({"amount": Decimal("10.25"), "currency": "EUR"}, {"value": 10.25, "currency": "EUR"}),
        ({"close_date": date(2025, 1, 2)}, {"expected_close_date": "2025-01-02"}),
        ({}, {}),
    ],
)
def test_from_canonical_bodies(mappings: Mappings, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert from_canonical(_update(**fields), mappings) == expected


def test_from_canonical_refuses_stage_of_unmapped_pipeline(mappings: Mappings) -> None:
    with pytest.raises(PermanentError, match="'proposal' has no mapping in pipeline 'Other'"):
        from_canonical(_update(stage=StageKey.PROPOSAL), mappings, pipeline_id="5", pipeline_name="Other")


def test_from_canonical_refuses_delete_and_missing_stage_names(mappings: Mappings) -> None:
    with pytest.raises(PermanentError, match="not pushed"):
        from_canonical(_update(status="deleted"), mappings)
    with pytest.raises(PermanentError, match="no stage named 'Proposal Made'"):
        from_canonical(_update(stage=StageKey.PROPOSAL), mappings, stages=[])
