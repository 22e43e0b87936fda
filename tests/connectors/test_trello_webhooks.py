"""Trello webhooks: the X-Trello-Webhook signature (with the research notes' test vector), parsing,
and normalisation of stored events into records (echoes, deletions, one batch read)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import respx

from connectors.trello import connect
from connectors.trello.webhooks import parse_webhook, sign, verify_signature
from sync_worker.canonical import StageKey
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store.models import InboxEvent, StoredRecord
from tests.connectors.test_trello import (
    BASE,
    BOARD,
    BOT,
    LISTS,
    PERSON,
    action,
    board_routes,
    card,
    query,
    settings,
)

REPO = Path(__file__).resolve().parents[2]
CALLBACK = "https://sync.example.com/webhooks/trello"
NOW = datetime(2026, 5, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


def request(body: bytes, signature: str | None, url: str = CALLBACK) -> WebhookRequest:
    headers = {"x-trello-webhook": signature} if signature is not None else {}
    return WebhookRequest(method="POST", url=url, headers=headers, body=body, query={})


def test_the_signature_matches_the_computed_vector_of_the_research_notes() -> None:
    assert (
        sign("secret", b'{"hello":"world"}', "https://example.com/webhooks") == "FwPAcuGe9EP/+SbXFWjnEVTa0zw="
    )


def test_a_signature_over_body_and_callback_url_verifies() -> None:
    from pydantic import SecretStr

    body = json.dumps({"action": action("a1", "updateCard", "c1"), "model": {"id": BOARD}}).encode()
    secret = SecretStr("app-secret")
    verify_signature(request(body, sign("app-secret", body, CALLBACK)), secret)
    bad = [
        request(body, sign("other-secret", body, CALLBACK)),
        request(body, sign("app-secret", body, CALLBACK), url=CALLBACK + "?x=1"),
        request(body + b" ", sign("app-secret", body, CALLBACK)),
        request(body, None),
    ]
    for forged in bad:
        with pytest.raises(SignatureError):
            verify_signature(forged, secret)
    with pytest.raises(SignatureError, match="APP_SECRET"):
        verify_signature(request(body, sign("app-secret", body, CALLBACK)), None)


def test_a_move_parses_with_its_list_and_creator() -> None:
    moved = action(
        "5f00000000000000000000a2",
        "updateCard",
        "5f0000000000000000000c01",
        listBefore={"id": LISTS["Leads"], "name": "Leads"},
        listAfter={"id": LISTS["Won"], "name": "Won"},
    )
    (event,) = parse_webhook(json.dumps({"action": moved, "model": {"id": BOARD}}).encode(), now=lambda: NOW)
    assert (event.dedupe_key, event.object_type, event.object_id) == (
        moved["id"],
        "card",
        "5f0000000000000000000c01",
    )
    assert (event.property_name, event.property_value) == ("idList", LISTS["Won"])
    assert event.change_source == PERSON and event.handled
    assert event.occurred_at == datetime(2026, 5, 2, 9, tzinfo=UTC)
    assert event.raw == moved


def test_actions_that_change_no_deal_are_not_handled() -> None:
    comment = {
        "id": "a9",
        "type": "commentCard",
        "date": "2026-05-02T09:00:00.000Z",
        "data": {"card": {"id": "c"}},
    }
    board = {"id": "a8", "type": "updateBoard", "date": "2026-05-02T09:00:00.000Z", "data": {}}
    events = [parse_webhook(json.dumps({"action": a}).encode(), now=lambda: NOW)[0] for a in (comment, board)]
    assert [(e.handled, e.object_type) for e in events] == [(False, "card"), (False, "other")]
    assert all(e.reason for e in events)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"model": {}}',
        b'{"action": {"type": "x"}}',
        b'{"action": {"id": "a", "type": "x", "date": "yesterday"}}',
    ],
)
def test_malformed_bodies_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_webhook(body, now=lambda: NOW)


def inbox(event_id: int, payload: dict[str, Any], **changes: Any) -> InboxEvent:
    (parsed,) = parse_webhook(json.dumps({"action": payload}).encode(), now=lambda: NOW)
    values: dict[str, Any] = {
        "id": event_id,
        "source": "trello",
        "dedupe_key": parsed.dedupe_key,
        "object_type": parsed.object_type,
        "object_id": parsed.object_id,
        "action": parsed.action,
        "occurred_at": parsed.occurred_at,
        "payload": dict(parsed.raw),
        "received_at": NOW,
        "property_name": parsed.property_name,
        "property_value": parsed.property_value,
        "change_source": parsed.change_source,
        **changes,
    }
    return InboxEvent(**values)


def stored(external_id: str) -> StoredRecord:
    return StoredRecord(
        id=1,
        source="trello",
        kind="deal",
        external_id=external_id,
        status="open",
        source_updated_at=NOW,
        first_seen_at=NOW,
        last_seen_at=NOW,
        stage=StageKey.PROPOSAL,
        pipeline_id=BOARD,
        source_stage=LISTS["Leads"],
        title="Kept title",
        amount=Decimal("10"),
    )


@respx.mock
def test_normalise_settles_echoes_deletions_and_reads_the_rest_in_one_batch(mappings: Mappings) -> None:
    board_routes(respx.mock)
    a, b, c = "5f0000000000000000000c01", "5f0000000000000000000c02", "5f0000000000000000000c03"
    batch = respx.get(f"{BASE}/1/batch").respond(json=[{"200": card(a, "Won")}])
    move = {"listBefore": {"id": LISTS["Leads"]}, "listAfter": {"id": LISTS["Won"]}}
    events = [
        inbox(1, action("5f00000000000000000000a1", "updateCard", a, **move)),
        inbox(2, action("5f00000000000000000000a2", "updateCard", b, creator=BOT, **move)),
        inbox(3, action("5f00000000000000000000a3", "deleteCard", c, list={"id": LISTS["Leads"]})),
        inbox(
            4,
            {
                "id": "5f00000000000000000000a4",
                "type": "commentCard",
                "date": "2026-05-02T09:00:00.000Z",
                "data": {},
            },
        ),
    ]
    trello = connect(settings(), lambda: mappings)
    ctx = NormaliseContext(
        mappings=mappings, lookup=lambda s, k, i: stored(i) if i == c else None, own_markers=frozenset({BOT})
    )
    out = trello.normalise_events(events, ctx)
    assert out.echo_ids == [2] and list(out.skipped) == [4]
    by_id = {r.external_id: (r, ids) for r, ids in out.records}
    assert by_id[a][0].stage is StageKey.WON and by_id[a][0].status == "won" and by_id[a][1] == (1,)
    assert by_id[a][0].stage_changed_at == datetime(2026, 5, 2, 9, tzinfo=UTC)
    assert by_id[c][0].status == "deleted" and by_id[c][0].title == "Kept title"
    assert query(batch.calls.last.request)["urls"] == f"/cards/{a}?customFieldItems=true"
    assert out.reads >= 1 and batch.call_count == 1


@respx.mock
def test_without_a_configured_member_the_token_member_is_learned_once(mappings: Mappings) -> None:
    board_routes(respx.mock)
    me = respx.get(f"{BASE}/1/members/me").respond(json={"id": BOT})
    trello = connect(settings(member_id=None), lambda: mappings)
    ctx = NormaliseContext(mappings=mappings, lookup=lambda s, k, i: None)
    events = [
        inbox(n, action(f"5f00000000000000000000a{n}", "updateCard", "5f0000000000000000000c01", creator=BOT))
        for n in (1, 2)
    ]
    out = trello.normalise_events(events, ctx)
    assert out.echo_ids == [1, 2] and me.call_count == 1


@respx.mock
def test_a_card_now_on_another_board_left_this_pipeline(mappings: Mappings) -> None:
    board_routes(respx.mock)
    moved = "5f0000000000000000000c05"
    respx.get(f"{BASE}/1/batch").respond(
        json=[{"200": card(moved, "Leads", idBoard="5f00000000000000000b0b0b")}]
    )
    events = [inbox(1, action("5f00000000000000000000a1", "updateCard", moved))]
    ctx = NormaliseContext(mappings=mappings, lookup=lambda s, k, i: stored(i))
    out = connect(settings(), lambda: mappings).normalise_events(events, ctx)
    ((record, ids),) = out.records
    assert (record.external_id, record.status, record.title, ids) == (moved, "deleted", "Kept title", (1,))
