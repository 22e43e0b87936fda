"""The Trello connector against the live Trello sandbox started through its spec's ``sandbox`` factory.

Given a seeded board, the connector lists its lists, pulls every card (counts and amounts checked
against the sandbox's own state), resumes from the feed cursor after a person moves a card, pushes a
move the sandbox records (its own action, an echo), registers its webhook through Trello's HEAD
check, and verifies the signed deliveries (a forged one fails). The sandbox itself answers the
documented 429 bodies and refuses more than 1,000 actions a call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.trello import SPEC, TrelloConnector, TrelloSettings, connect
from connectors.trello.sandbox import LISTS, TrelloSandboxServer
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import PermanentError, SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.store.models import InboxEvent

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass
class Sink:
    """Answers HEAD with ``head_status`` and records POSTs as the receiver would build them."""

    handle: ServerHandle | None = None
    head_status: int = 200
    posts: list[WebhookRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, count: int, timeout: float = 10.0) -> list[WebhookRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} webhook posts within {timeout} s")


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    state = Sink()

    async def head(request: Request) -> Response:
        return Response(status_code=state.head_status)

    async def post(request: Request) -> Response:
        body = await request.body()
        req = WebhookRequest(
            "POST", str(request.url), {k.lower(): v for k, v in request.headers.items()}, body, {}
        )
        with state.lock:
            state.posts.append(req)
        return Response(status_code=200)

    app = Starlette(
        routes=[Route("/{path:path}", head, methods=["HEAD"]), Route("/{path:path}", post, methods=["POST"])]
    )
    state.handle = serve_in_thread(app)
    yield state
    state.handle.stop()


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture(scope="module")
def box(sink: Sink) -> Iterator[TrelloSandboxServer]:
    assert SPEC.sandbox is not None and sink.handle is not None
    server = SPEC.sandbox(
        SandboxOptions(seed=7, deals=60, now=NOW, webhook_base_url=sink.handle.url, time_scale=0.001)
    )
    assert isinstance(server, TrelloSandboxServer)
    yield server
    server.stop()


def section(box: TrelloSandboxServer) -> TrelloSettings:
    values = {k.removeprefix("SYNC_TRELLO__").lower(): v for k, v in box.env().items()}
    return TrelloSettings(**values)


_open: list[TrelloConnector] = []


@pytest.fixture(autouse=True)
def _close_connectors() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def trello(box: TrelloSandboxServer, mappings: Mappings, callback_url: str | None = None) -> TrelloConnector:
    connector = connect(section(box), lambda: mappings, callback_url=callback_url)
    _open.append(connector)
    return connector


def test_env_names_the_trello_variables_only(box: TrelloSandboxServer) -> None:
    env = box.env()
    assert set(env) >= {
        "SYNC_TRELLO__API_KEY",
        "SYNC_TRELLO__TOKEN",
        "SYNC_TRELLO__BOARD_ID",
        "SYNC_TRELLO__APP_SECRET",
    }
    assert all(name.startswith("SYNC_TRELLO__") for name in env)
    assert SPEC.enabled(section(box))


def test_stages_and_a_full_pull_match_the_sandbox_state(box: TrelloSandboxServer, mappings: Mappings) -> None:
    connector = trello(box, mappings)
    stages = connector.list_stages()
    assert [s.stage_label for s in stages if not s.is_closed] == list(LISTS)
    pages = list(connector.pull_changes("cards", None))
    assert pages[-1].done and pages[-1].cursor is not None
    records = {r.external_id: r for p in pages for r in p.records}
    assert set(records) == set(box.state.cards)
    for card_id, raw in box.state.cards.items():
        record = records[card_id]
        numbers = [i["value"]["number"] for i in raw["customFieldItems"]]
        assert record.amount == (Decimal(numbers[0]) if numbers else None)
        assert record.unmapped is None and record.stage is not None
        if raw["closed"] and record.stage not in (StageKey.WON, StageKey.LOST):
            assert record.status == "deleted"


def test_a_person_moving_a_card_is_pulled_from_the_feed_and_delivered_signed(
    box: TrelloSandboxServer, mappings: Mappings, sink: Sink
) -> None:
    connector = trello(box, mappings)
    cursor = list(connector.pull_changes("cards", None))[-1].cursor
    before = len(box.deliveries())
    moved = box.simulate_change()
    pages = list(connector.pull_changes("cards", cursor))
    records = [r for p in pages for r in p.records]
    assert [r.external_id for r in records] == [moved]
    expected = box.state.lists[box.state.cards[moved]["idList"]]["name"]
    assert records[0].source_stage == box.state.cards[moved]["idList"] and expected in LISTS
    assert records[0].change_source not in (None, box.env()["SYNC_TRELLO__MEMBER_ID"])
    again = list(connector.pull_changes("cards", pages[-1].cursor))
    assert [r for p in again for r in p.records] == []

    assert box.state.deliverer.wait_idle(10)
    delivery = box.deliveries()[before]
    request = WebhookRequest(
        "POST", delivery.url, {k.lower(): v for k, v in delivery.headers.items()}, delivery.body, {}
    )
    connector.verify_webhook(request)
    forged = box.forge(delivery)
    with pytest.raises(SignatureError):
        connector.verify_webhook(
            WebhookRequest(
                "POST", forged.url, {k.lower(): v for k, v in forged.headers.items()}, forged.body, {}
            )
        )
    (event,) = connector.parse_webhook(delivery.body)
    assert event.object_id == moved and event.property_name == "idList" and event.handled


def test_a_push_moves_the_card_and_its_webhook_is_an_echo(
    box: TrelloSandboxServer, mappings: Mappings
) -> None:
    connector = trello(box, mappings)
    card_id = next(c for c, raw in box.state.cards.items() if not raw["closed"])
    update = CanonicalUpdate(
        target="trello",
        idempotency_key="push-1",
        origin="pipedrive",
        external_id=card_id,
        stage=StageKey.NEGOTIATION,
        amount=Decimal("4321.5"),
    )
    before = len(box.deliveries())
    (result,) = connector.apply_updates([update])
    assert result.ok, result.error
    card = box.state.cards[card_id]
    assert box.state.lists[card["idList"]]["name"] == "Negotiation"
    assert [i["value"]["number"] for i in card["customFieldItems"]] == ["4321.5"]
    assert box.state.deliverer.wait_idle(10)
    events = [
        InboxEvent(
            id=n,
            source="trello",
            dedupe_key=e.dedupe_key,
            object_type=e.object_type,
            object_id=e.object_id,
            action=e.action,
            occurred_at=e.occurred_at,
            payload=dict(e.raw),
            received_at=NOW,
            property_name=e.property_name,
            property_value=e.property_value,
            change_source=e.change_source,
        )
        for n, d in enumerate(box.deliveries()[before:], start=1)
        for e in connector.parse_webhook(d.body)
    ]
    assert events
    ctx = NormaliseContext(
        mappings=mappings, lookup=lambda s, k, i: None, own_markers=SPEC.echo_markers(section(box))
    )
    out = connector.normalise_events(events, ctx)
    assert sorted(out.echo_ids) == [e.id for e in events] and out.records == []


def test_prepare_registers_through_the_head_check_once(
    box: TrelloSandboxServer, mappings: Mappings, sink: Sink
) -> None:
    assert sink.handle is not None
    callback = f"{sink.handle.url}/webhooks/trello-prepared"
    connector = trello(box, mappings, callback_url=callback)
    sink.head_status = 405
    try:
        with pytest.raises(PermanentError):
            connector.prepare()
    finally:
        sink.head_status = 200
    assert connector.prepare() == ["webhook for board Sales Pipeline"]
    assert connector.prepare() == []
    assert [h["callbackURL"] for h in box.state.webhooks.values()].count(callback) == 1


def test_the_sandbox_answers_the_documented_limits(box: TrelloSandboxServer) -> None:
    env = box.env()
    params = {"key": env["SYNC_TRELLO__API_KEY"], "token": env["SYNC_TRELLO__TOKEN"]}
    board = env["SYNC_TRELLO__BOARD_ID"]
    with httpx.Client(base_url=box.url) as client:
        assert client.get(f"/1/boards/{board}", params={**params, "token": "nope"}).status_code == 401
        too_many = client.get(f"/1/boards/{board}/actions", params={**params, "limit": 1001})
        assert too_many.status_code == 400
        answers = [client.get(f"/1/boards/{board}", params=params) for _ in range(101)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and limited[0].json() == {
        "error": "API_TOKEN_LIMIT_EXCEEDED",
        "message": "Rate limit exceeded",
    }
    assert box.rate_limited() >= len(limited)
    time.sleep(10.1)  # the token's window ends; later tests in this module need it


def test_the_key_budget_spans_tokens_and_200_refusals_lock_the_key_out() -> None:
    from connectors.trello.sandbox.app import TrelloApp
    from connectors.trello.sandbox.state import TrelloSandbox

    state = TrelloSandbox(api_key="k", app_secret="s")
    try:
        app = TrelloApp(state)
        # Given four tokens of one key: 100 each per window, 300 for the key
        answers = [app.check_limits("k", f"t{n % 4}", "/1/boards/b") for n in range(400)]
        refused = [r for r in answers if r is not None]
        assert len(refused) == 100
        assert b"API_KEY_LIMIT_EXCEEDED" in refused[0].body
        # When the key collects more than 200 refusals in the window
        for _ in range(101):
            app.check_limits("k", "t9", "/1/boards/b")
        # Then even a fresh token of that key is refused for the rest of the window
        locked = app.check_limits("k", "fresh", "/1/boards/b")
        assert locked is not None and b"API_KEY_LIMIT_EXCEEDED" in locked.body
        assert app.check_limits("other-key", "fresh", "/1/boards/b") is None
    finally:
        state.close()
