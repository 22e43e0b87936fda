"""TrelloConnector against respx route sets: what is sent (method, path, query, body) and what comes back.

Payload shapes follow section 4 of the research notes (py-trello, trello.js, Atlassian's guides).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connectors.trello import SPEC, TrelloConnector, TrelloSettings, connect
from connectors.trello.access import BLOCK_SECONDS, KEY_BUCKET, MEMBERS_BUCKET, limits, token_bucket
from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.ratelimit import LocalRateLimiter

REPO = Path(__file__).resolve().parents[2]
BASE = "https://api.trello.com"
KEY = "k3y0000000000000000000000000abcd"
TOKEN = "t0ken1111111111111111111111111111111111111111111111111111111111ef"
BOARD = "5f0000000000000000000b0a"
LISTS = {
    "Leads": "5f00000000000000000001a1",
    "Qualified": "5f00000000000000000001a2",
    "Won": "5f00000000000000000001a3",
    "Lost": "5f00000000000000000001a4",
    "Negotiation": "5f00000000000000000001a5",
    "Someday": "5f00000000000000000001a6",
}
ARCHIVED_LIST = "5f00000000000000000001af"
AMOUNT = "5f00000000000000000000cf"
BOT = "5f00000000000000000000b0"
PERSON = "5f00000000000000000000e1"


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


def settings(**changes: Any) -> TrelloSettings:
    values: dict[str, Any] = {
        "api_key": KEY,
        "token": TOKEN,
        "board_id": BOARD,
        "app_secret": "app-secret",
        "amount_field": AMOUNT,
        "member_id": BOT,
        **changes,
    }
    return TrelloSettings(**values)


def connector(mappings: Mappings, **changes: Any) -> TrelloConnector:
    return connect(settings(**changes), lambda: mappings, sleep=lambda s: None)


def card(card_id: str, list_name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": card_id,
        "name": f"Deal {card_id[-3:]}",
        "idBoard": BOARD,
        "idList": LISTS.get(list_name, list_name),
        "closed": False,
        "pos": 16384,
        "dateLastActivity": "2026-05-01T10:00:00.000Z",
        "due": None,
        "idMembers": [PERSON],
        "customFieldItems": [
            {"id": "5f00000000000000000000d1", "idCustomField": AMOUNT, "value": {"number": "1500.50"}}
        ],
    }
    body.update(changes)
    return body


def action(action_id: str, kind: str, card_id: str, *, creator: str = PERSON, **data: Any) -> dict[str, Any]:
    return {
        "id": action_id,
        "idMemberCreator": creator,
        "type": kind,
        "date": "2026-05-02T09:00:00.000Z",
        "data": {"card": {"id": card_id, "name": "Deal"}, "board": {"id": BOARD}, **data},
    }


def board_routes(router: respx.Router) -> None:
    router.get(f"{BASE}/1/boards/{BOARD}").respond(json={"id": BOARD, "name": "Sales Pipeline"})
    lists = [{"id": v, "name": k, "closed": False, "pos": 1000 * i} for i, (k, v) in enumerate(LISTS.items())]
    lists.append({"id": ARCHIVED_LIST, "name": "Old", "closed": True, "pos": 99999})
    router.get(f"{BASE}/1/boards/{BOARD}/lists").respond(json=lists)


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


# -- spec and auth -------------------------------------------------------------------------------


def test_spec_is_registered_with_documented_budgets_and_head_check() -> None:
    from sync_worker.plugins import registry

    assert registry()["trello"] is SPEC
    assert SPEC.answers_head and SPEC.webhooks and SPEC.full_stream == "cards"
    budgets = limits(settings())
    assert (budgets[KEY_BUCKET].requests, budgets[KEY_BUCKET].window_seconds) == (300, 10.0)
    assert (budgets[token_bucket(settings())].requests, budgets[MEMBERS_BUCKET].window_seconds) == (
        100,
        900.0,
    )
    assert TOKEN not in token_bucket(settings())
    assert SPEC.account(settings()) == (f"{BASE}/", settings().api_key)
    assert SPEC.echo_markers(settings()) == frozenset({BOT})
    assert not SPEC.enabled(TrelloSettings(api_key=KEY, token=TOKEN))


def test_missing_credentials_are_a_config_error(mappings: Mappings) -> None:
    with pytest.raises(ConfigError, match="SYNC_TRELLO__"):
        connect(TrelloSettings(api_key=KEY), lambda: mappings)


@respx.mock
def test_key_and_token_go_in_the_query_and_never_into_errors(mappings: Mappings) -> None:
    route = respx.get(f"{BASE}/1/boards/{BOARD}").respond(401, text="invalid token")
    trello = connector(mappings)
    assert isinstance(trello, Connector)
    with pytest.raises(AuthError) as caught:
        trello.list_stages()
    sent = route.calls.last.request
    assert query(sent)["key"] == KEY and query(sent)["token"] == TOKEN
    chain = f"{caught.value} {caught.value.__cause__} {trello!r}"
    assert KEY not in chain and TOKEN not in chain


# -- stages and pulls ----------------------------------------------------------------------------


@respx.mock
def test_open_lists_are_the_stages_in_board_order(mappings: Mappings) -> None:
    board_routes(respx.mock)
    stages = connector(mappings).list_stages()
    assert [s.stage_label for s in stages] == list(LISTS)
    assert [s.order for s in stages] == list(range(len(LISTS)))
    assert {s.pipeline_label for s in stages} == {"Sales Pipeline"}
    assert query(respx.calls[1].request)["filter"] == "all"


@respx.mock
def test_full_pull_lists_every_card_with_the_newest_action_as_cursor(mappings: Mappings) -> None:
    board_routes(respx.mock)
    feed = respx.get(f"{BASE}/1/boards/{BOARD}/actions").respond(
        json=[action("5f00000000000000000000f9", "updateCard", "x")]
    )
    cards = [
        card("5f0000000000000000000c01", "Negotiation"),
        card("5f0000000000000000000c02", "Leads", closed=True),
        card("5f0000000000000000000c03", ARCHIVED_LIST),
        card("5f0000000000000000000c04", "Won", closed=True),
        card("5f0000000000000000000c05", "Someday", customFieldItems=[], due="2026-07-01T12:00:00.000Z"),
    ]
    listing = respx.get(f"{BASE}/1/boards/{BOARD}/cards/all").respond(json=cards)
    pages = list(connector(mappings).pull_changes("cards", None))
    assert query(feed.calls.last.request)["limit"] == "1"
    assert query(listing.calls.last.request)["customFieldItems"] == "true"
    assert pages[-1].done and pages[-1].cursor == "5f00000000000000000000f9"
    records = {r.external_id[-3:]: r for p in pages for r in p.records}
    assert records["c01"].stage is StageKey.NEGOTIATION and records["c01"].status == "open"
    assert records["c01"].amount == Decimal("1500.50") and records["c01"].owner_id == PERSON
    assert records["c02"].status == "deleted"  # archived card in an open list left the funnel
    assert records["c03"].status == "deleted"  # its list is archived, the card still reads closed:false
    assert records["c04"].status == "won"  # archived in a won list stays won
    assert records["c05"].stage is None and records["c05"].unmapped is not None
    assert records["c05"].amount is None and records["c05"].close_date == date(2026, 7, 1)
    assert records["c01"].created_at == datetime.fromtimestamp(0x5F000000, UTC)


@respx.mock
def test_archived_status_may_be_lost(mappings: Mappings) -> None:
    board_routes(respx.mock)
    respx.get(f"{BASE}/1/boards/{BOARD}/actions").respond(json=[])
    respx.get(f"{BASE}/1/boards/{BOARD}/cards/all").respond(
        json=[card("5f0000000000000000000c02", "Leads", closed=True)]
    )
    trello = connector(mappings, archived_status="lost")
    (page,) = list(trello.pull_changes("cards", None))
    assert page.records[0].status == "lost" and page.cursor is not None


def _feed_side_effect(pages: list[list[dict[str, Any]]]) -> Any:
    calls = iter(pages)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(calls))

    return respond


@respx.mock
def test_incremental_pull_reads_the_feed_and_batches_the_touched_cards(mappings: Mappings) -> None:
    board_routes(respx.mock)
    move = action(
        "5f00000000000000000000a2",
        "updateCard",
        "5f0000000000000000000c01",
        listBefore={"id": LISTS["Leads"], "name": "Leads"},
        listAfter={"id": LISTS["Qualified"], "name": "Qualified"},
        old={"idList": LISTS["Leads"]},
    )
    gone = action(
        "5f00000000000000000000a3",
        "deleteCard",
        "5f0000000000000000000c09",
        list={"id": LISTS["Won"], "name": "Won"},
    )
    feed = respx.get(f"{BASE}/1/boards/{BOARD}/actions").respond(json=[gone, move])
    batch = respx.get(f"{BASE}/1/batch").respond(
        json=[{"200": card("5f0000000000000000000c01", "Qualified")}]
    )
    pages = list(connector(mappings).pull_changes("cards", "5f00000000000000000000a1"))
    sent = query(feed.calls.last.request)
    assert sent["since"] == "5f00000000000000000000a1" and sent["limit"] == "1000"
    assert "updateCard" in sent["filter"].split(",") and "deleteCard" in sent["filter"].split(",")
    assert query(batch.calls.last.request)["urls"] == "/cards/5f0000000000000000000c01?customFieldItems=true"
    records = [r for p in pages for r in p.records]
    assert [(r.external_id[-3:], r.status) for r in records] == [("c01", "open"), ("c09", "deleted")]
    moved = records[0]
    assert moved.stage is StageKey.QUALIFIED and moved.change_source == PERSON
    assert moved.stage_changed_at == datetime(2026, 5, 2, 9, tzinfo=UTC)
    assert records[1].stage is StageKey.WON
    assert pages[-1].cursor == "5f00000000000000000000a3"


@respx.mock
def test_a_full_feed_page_is_followed_back_with_before_and_many_cards_read_from_the_board(
    mappings: Mappings,
) -> None:
    board_routes(respx.mock)
    ids = [f"5f0000000000000000{n:06x}" for n in range(1, 1001)]
    first = [
        action(f"6f0000000000000000{n:06x}", "createCard", ids[(n - 1) % 12]) for n in range(1000, 0, -1)
    ]
    second = [action("5f0000000000000000000001", "createCard", ids[12])]
    feed = respx.get(f"{BASE}/1/boards/{BOARD}/actions").mock(side_effect=_feed_side_effect([first, second]))
    listing = respx.get(f"{BASE}/1/boards/{BOARD}/cards/all").respond(
        json=[card(i, "Leads") for i in ids[:13]]
    )
    pages = list(connector(mappings).pull_changes("cards", "2026-01-01T00:00:00Z"))
    assert query(feed.calls[1].request)["before"] == "6f0000000000000000000001"
    assert listing.called and feed.call_count == 2  # no /1/batch call: respx would refuse it
    assert len({r.external_id for p in pages for r in p.records}) == 13


@respx.mock
def test_batch_entries_are_read_bare_or_wrapped_and_errors_skipped(mappings: Mappings) -> None:
    board_routes(respx.mock)
    touched = ["5f0000000000000000000c01", "5f0000000000000000000c02", "5f0000000000000000000c03"]
    respx.get(f"{BASE}/1/boards/{BOARD}/actions").respond(
        json=[action(f"5f00000000000000000000b{i}", "updateCard", c) for i, c in enumerate(touched)]
    )
    respx.get(f"{BASE}/1/batch").respond(
        json=[{"200": card(touched[0], "Leads")}, card(touched[1], "Won"), {"404": "not found"}]
    )
    records = [
        r for p in connector(mappings).pull_changes("cards", "5f00000000000000000000a0") for r in p.records
    ]
    assert sorted(r.external_id for r in records) == touched[:2]


@respx.mock
def test_an_unknown_stream_is_refused(mappings: Mappings) -> None:
    with pytest.raises(ConfigError, match="cards"):
        list(connector(mappings).pull_changes("deals", None))


# -- pushes --------------------------------------------------------------------------------------


@respx.mock
def test_a_stage_is_pushed_as_idlist_and_the_amount_as_a_string_number(mappings: Mappings) -> None:
    board_routes(respx.mock)
    card_id = "5f0000000000000000000c01"
    put = respx.put(f"{BASE}/1/cards/{card_id}").respond(json=card(card_id, "Won"))
    item = respx.put(f"{BASE}/1/card/{card_id}/customField/{AMOUNT}/item").respond(json={})
    update = CanonicalUpdate(
        target="trello",
        idempotency_key="k1",
        origin="pipedrive",
        external_id=card_id,
        stage=StageKey.WON,
        amount=Decimal("1500"),
        close_date=date(2026, 8, 1),
    )
    (result,) = connector(mappings).apply_updates([update])
    assert result.ok and result.external_id == card_id
    sent = put.calls.last.request
    assert sent.method == "PUT" and sent.content == b""
    assert query(sent)["idList"] == LISTS["Won"] and query(sent)["due"] == "2026-08-01T12:00:00.000Z"
    assert json.loads(item.calls.last.request.content) == {"value": {"number": "1500"}}


@respx.mock
def test_a_lost_status_moves_to_the_lost_list_and_a_flag_is_a_comment(mappings: Mappings) -> None:
    board_routes(respx.mock)
    card_id = "5f0000000000000000000c01"
    put = respx.put(f"{BASE}/1/cards/{card_id}").respond(json=card(card_id, "Lost"))
    comment = respx.post(f"{BASE}/1/cards/{card_id}/actions/comments").respond(json={"id": "a"})
    flag = LeakFlag(rule="stalled", reason="no move for 40 days", stage=StageKey.PROPOSAL, days_in_stage=40)
    updates = [
        CanonicalUpdate(
            target="trello", idempotency_key="k1", origin="hubspot", external_id=card_id, status="lost"
        ),
        CanonicalUpdate(
            target="trello", idempotency_key="k2", origin="leaks", external_id=card_id, flag=flag
        ),
    ]
    results = connector(mappings).apply_updates(updates)
    assert [r.ok for r in results] == [True, True]
    assert query(put.calls.last.request)["idList"] == LISTS["Lost"] and put.call_count == 1
    text = query(comment.calls.last.request)["text"]
    assert "stalled" in text and "40" in text


@respx.mock
def test_what_a_board_cannot_hold_fails_alone_and_is_not_retried(mappings: Mappings) -> None:
    board_routes(respx.mock)
    card_id = "5f0000000000000000000c01"
    put = respx.put(f"{BASE}/1/cards/{card_id}").respond(json=card(card_id, "Negotiation"))
    updates = [
        CanonicalUpdate(
            target="trello", idempotency_key="k1", origin="x", external_id=card_id, status="deleted"
        ),
        CanonicalUpdate(target="trello", idempotency_key="k2", origin="x", title="no stage"),
        CanonicalUpdate(
            target="trello", idempotency_key="k3", origin="x", external_id=card_id, stage=StageKey.NEGOTIATION
        ),
    ]
    results = connector(mappings).apply_updates(updates)
    assert [(r.ok, r.retryable) for r in results] == [(False, False), (False, False), (True, False)]
    assert query(put.calls.last.request)["idList"] == LISTS["Negotiation"]


@respx.mock
def test_a_new_card_is_posted_with_list_and_name(mappings: Mappings) -> None:
    board_routes(respx.mock)
    post = respx.post(f"{BASE}/1/cards").respond(json=card("5f0000000000000000000c77", "Leads"))
    update = CanonicalUpdate(
        target="trello", idempotency_key="k1", origin="lgm", title="ACME", stage=StageKey.PROSPECT
    )
    (result,) = connector(mappings).apply_updates([update])
    assert result.ok and result.external_id == "5f0000000000000000000c77"
    assert query(post.calls.last.request)["idList"] == LISTS["Leads"]
    assert query(post.calls.last.request)["name"] == "ACME"


@pytest.mark.parametrize(
    ("error", "kind"), [("API_KEY_LIMIT_EXCEEDED", "key"), ("API_TOKEN_LIMIT_EXCEEDED", "token")]
)
@respx.mock
def test_a_429_blocks_the_budget_its_body_names_then_succeeds(
    mappings: Mappings, error: str, kind: str
) -> None:
    board_routes(respx.mock)
    card_id = "5f0000000000000000000c01"
    put = respx.put(f"{BASE}/1/cards/{card_id}")
    put.side_effect = [
        httpx.Response(429, json={"error": error, "message": "Rate limit exceeded"}),
        httpx.Response(200, json=card(card_id, "Won")),
    ]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    # A limiter on a fake clock that sleeping advances: the 10 s block costs no real time.
    limiter = LocalRateLimiter(limits(settings()), clock=lambda: sum(slept), sleep=sleep)
    trello = connect(settings(), lambda: mappings, limiter=limiter, sleep=sleep)
    update = CanonicalUpdate(
        target="trello", idempotency_key="k", origin="x", external_id=card_id, stage=StageKey.WON
    )
    (result,) = trello.apply_updates([update])
    assert result.ok and put.call_count == 2
    assert trello.pacer is not None and trello.pacer.limited == {kind: 1}
    assert sum(slept) >= BLOCK_SECONDS  # the block was waited out before the retry


# -- webhooks ------------------------------------------------------------------------------------


@respx.mock
def test_prepare_registers_the_webhook_once(mappings: Mappings) -> None:
    board_routes(respx.mock)
    url = "https://sync.example.com/webhooks/trello"
    tokens = respx.get(f"{BASE}/1/members/me/tokens").respond(json=[{"id": "t", "webhooks": []}])
    post = respx.post(f"{BASE}/1/webhooks").respond(json={"id": "w1"})
    trello = connect(settings(), lambda: mappings, callback_url=url)
    assert trello.prepare() == ["webhook for board Sales Pipeline"]
    assert query(tokens.calls.last.request)["webhooks"] == "true"
    assert json.loads(post.calls.last.request.content) == {
        "callbackURL": url,
        "idModel": BOARD,
        "description": "sync-worker",
        "active": True,
    }
    tokens.respond(json=[{"id": "t", "webhooks": [{"callbackURL": url, "idModel": BOARD}]}])
    assert trello.prepare() == [] and post.call_count == 1


@respx.mock
def test_httpx_request_log_lines_carry_neither_key_nor_token(
    mappings: Mappings, caplog: pytest.LogCaptureFixture
) -> None:
    board_routes(respx.mock)
    with caplog.at_level(logging.INFO, logger="httpx"):
        connector(mappings).list_stages()
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert lines and all(KEY not in line and TOKEN not in line for line in lines)
    assert any("key=REDACTED" in line for line in lines)
