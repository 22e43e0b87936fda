"""ClinchPad webhooks: the handshake key, delivery parsing and normalisation of stored events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.clinchpad import (
    ClinchPadConnector,
    ClinchPadSettings,
    from_section,
    parse_body,
    verify_handshake,
)
from connectors.clinchpad.webhooks import ACTION_DELETED
from sync_worker.canonical import UNRECOGNISED_ACTION, StageKey, WebhookEvent
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store.models import InboxEvent, StoredRecord

BASE = "https://www.clinchpad.com/api/v1"
KEY = "4e65146b302a2a2ec8135aa6dc501a17"
HANDSHAKE = "gfhkd1asfsa"  # the documented sample's key
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "clinchpad"
MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
LEAD = "52cfa124cce8b4d113000056"
PIPE = "52cf8c0bcce8b4c375000008"
OWNER = "52cf8c0acce8b4c375000001"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "webhook_note.json").read_text(encoding="utf-8"))
    return data


def body_of(kind: str, *, activity_id: str = "52cfbf76cce8b40f0f000005", **extra: Any) -> bytes:
    data = sample()
    data["activity"] = {**data["activity"], "type": kind, "_id": activity_id}
    data.update(extra)
    return json.dumps(data).encode()


def request(body: bytes) -> WebhookRequest:
    url = "https://sync.example.com/webhooks/clinchpad"
    return WebhookRequest("POST", url, {"content-type": "application/json"}, body, {})


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


# -- verification --------------------------------------------------------------------------------


def test_a_delivery_with_the_configured_handshake_key_is_accepted() -> None:
    verify_handshake(request(json.dumps(sample()).encode()), SecretStr(HANDSHAKE))


@pytest.mark.parametrize(
    ("body", "secret", "message"),
    [
        (body_of("lead:created", handshake_key="guessed"), HANDSHAKE, "does not match"),
        (body_of("lead:created", handshake_key=HANDSHAKE + "x"), HANDSHAKE, "does not match"),
        (body_of("lead:created", handshake_key=None), HANDSHAKE, "no handshake_key"),
        (b"not json", HANDSHAKE, "no handshake_key"),
        (b"[1, 2]", HANDSHAKE, "no handshake_key"),
        (json.dumps(sample()).encode(), None, "no handshake key is configured"),
        (json.dumps(sample()).encode(), "", "no handshake key is configured"),
    ],
)
def test_anything_else_is_refused_without_naming_the_key(
    body: bytes, secret: str | None, message: str
) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        verify_handshake(request(body), SecretStr(secret) if secret is not None else None)
    assert HANDSHAKE not in str(caught.value)


# -- parsing -------------------------------------------------------------------------------------


def test_the_documented_note_delivery_is_recorded_unhandled() -> None:
    [event] = parse_body(json.dumps(sample()).encode(), now=lambda: NOW)
    assert (event.object_type, event.object_id, event.action) == ("lead", LEAD, "note:created")
    assert not event.handled and "note" in (event.reason or "")
    assert event.dedupe_key == "clinchpad:activity:52cfbf76cce8b40f0f000005"
    assert event.occurred_at == datetime(2014, 1, 10, 9, 37, 58, tzinfo=UTC)
    assert event.change_source == f"user:{OWNER}"
    assert "handshake_key" not in event.raw


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("lead:created", "lead:created"),
        ("lead:stage_changed", "lead:stage_changed"),
        ("lead:deleted", ACTION_DELETED),
    ],
)
def test_lead_activities_are_handled_and_a_delete_type_is_a_deletion(kind: str, action: str) -> None:
    [event] = parse_body(body_of(kind), now=lambda: NOW)
    assert event.handled and event.action == action and event.object_id == LEAD


def test_an_activity_naming_no_lead_is_kept_as_unrecognised() -> None:
    [event] = parse_body(body_of("user:invited", lead=None), now=lambda: NOW)
    assert not event.handled and event.action == UNRECOGNISED_ACTION


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"lead": {"_id": "x"}}', body_of("x", activity_id="a")[:-1]])
def test_a_malformed_body_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_body(body, now=lambda: NOW)


def test_a_delivery_without_a_time_or_id_is_stamped_now_and_keyed_by_its_body() -> None:
    data = sample()
    data["activity"] = {"type": "lead:created"}
    body = json.dumps(data).encode()
    [event] = parse_body(body, now=lambda: NOW)
    assert event.occurred_at == NOW and event.change_source is None
    assert parse_body(body, now=lambda: NOW)[0].dedupe_key == event.dedupe_key


# -- normalisation -------------------------------------------------------------------------------


def inbox(event: WebhookEvent, inbox_id: int) -> InboxEvent:
    return InboxEvent(
        id=inbox_id,
        source=event.source,
        dedupe_key=event.dedupe_key,
        object_type=event.object_type,
        object_id=event.object_id,
        action=event.action,
        occurred_at=event.occurred_at,
        payload=event.raw,
        received_at=NOW,
        change_source=event.change_source,
    )


def stored(**fields: Any) -> StoredRecord:
    base = {
        "id": 7,
        "source": "clinchpad",
        "kind": "deal",
        "external_id": LEAD,
        "status": "open",
        "source_updated_at": NOW,
        "first_seen_at": NOW,
        "last_seen_at": NOW,
        "stage": StageKey.PROSPECT,
        "pipeline_id": PIPE,
        "title": "Webhook T",
        "amount": Decimal(700),
    }
    return StoredRecord(**{**base, **fields})


def context(
    mappings: Mappings, known: StoredRecord | None = None, own: frozenset[str] = frozenset()
) -> NormaliseContext:
    return NormaliseContext(
        mappings=mappings, lookup=lambda source, kind, external_id: known, own_markers=own
    )


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def clinchpad(mappings: Mappings) -> ClinchPadConnector:
    return from_section(ClinchPadSettings(api_key=SecretStr(KEY)), mappings, sleep=lambda _: None)


def full_lead(stage_name: str = "Offer") -> dict[str, Any]:
    return {
        "_id": LEAD,
        "name": "Webhook T",
        "size": 2500,
        "user": {"_id": OWNER, "name": "Webhook Testing"},
        "stage": {"_id": "52cf8c0bcce8b4c37500000c", "name": stage_name},
    }


def test_events_for_one_lead_read_it_once_and_keep_the_pipe_and_the_newest_time(
    mappings: Mappings, api: respx.MockRouter, clinchpad: ClinchPadConnector
) -> None:
    read = api.get(f"/leads/{LEAD}").mock(return_value=httpx.Response(200, json=full_lead()))
    first = parse_body(body_of("lead:created", activity_id="a1"), now=lambda: NOW)[0]
    later = replace(
        parse_body(body_of("lead:stage_changed", activity_id="a2"), now=lambda: NOW)[0], occurred_at=NOW
    )
    out = clinchpad.normalise_events([inbox(first, 1), inbox(later, 2)], context(mappings))
    assert read.call_count == 1 and out.reads == 1
    [(record, ids)] = out.records
    assert ids == (1, 2)
    assert (record.stage, record.amount, record.pipeline_id, record.updated_at) == (
        StageKey.PROPOSAL,
        Decimal(2500),
        PIPE,
        NOW,
    )
    assert record.change_source == f"user:{OWNER}"


def test_our_own_activities_are_echoes_and_read_nothing(
    mappings: Mappings, api: respx.MockRouter, clinchpad: ClinchPadConnector
) -> None:
    read = api.get(f"/leads/{LEAD}")
    event = parse_body(body_of("lead:stage_changed"), now=lambda: NOW)[0]
    out = clinchpad.normalise_events([inbox(event, 3)], context(mappings, own=frozenset({f"user:{OWNER}"})))
    assert out.echo_ids == [3] and out.records == [] and read.call_count == 0


def test_a_lead_that_answers_404_or_a_delete_activity_marks_the_stored_copy_deleted(
    mappings: Mappings, api: respx.MockRouter, clinchpad: ClinchPadConnector
) -> None:
    api.get(f"/leads/{LEAD}").mock(return_value=httpx.Response(404, json={"error": "Lead not found"}))
    changed = parse_body(body_of("lead:updated", activity_id="a3"), now=lambda: NOW)[0]
    out = clinchpad.normalise_events([inbox(changed, 4)], context(mappings, stored()))
    [(record, ids)] = out.records
    assert ids == (4,) and record.status == "deleted" and record.amount == Decimal(700)
    deleted = parse_body(body_of("lead:deleted", activity_id="a4"), now=lambda: NOW)[0]
    gone = clinchpad.normalise_events([inbox(deleted, 5)], context(mappings, None))
    assert gone.skipped == {5: "deletion of a lead never stored"} and gone.reads == 0


def test_without_a_pipe_the_stored_pipeline_is_used(
    mappings: Mappings, api: respx.MockRouter, clinchpad: ClinchPadConnector
) -> None:
    api.get(f"/leads/{LEAD}").mock(return_value=httpx.Response(200, json=full_lead("Contact")))
    data = sample()
    data["activity"]["type"] = "lead:updated"
    del data["lead"]["pipe"]
    event = parse_body(json.dumps(data).encode(), now=lambda: NOW)[0]
    out = clinchpad.normalise_events([inbox(event, 6)], context(mappings, stored(pipeline_id="p-stored")))
    assert out.records[0][0].pipeline_id == "p-stored"
