"""LaGrowthMachine connector: pull, push, webhooks and pure translation, against respx route sets.

Fixtures are payloads shaped after what the vendor's own clients send and read
(``LaGrowthMachine/n8n-nodes-lagrowthmachine``, ``LaGrowthMachine/lgm-mcp-server``; see
fixtures/lagrowthmachine/README.md).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.lagrowthmachine import (
    STREAM_LEAD_STATUSES,
    STREAM_REPLIES,
    LaGrowthMachineConnector,
    from_canonical,
    from_settings,
    lead_to_canonical,
    reply_to_canonical,
    to_canonical,
)
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from sync_worker.canonical import CanonicalUpdate, PullPage, StageKey, UnmappedStage
from sync_worker.connector import WebhookRequest
from sync_worker.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    SignatureError,
    TransientError,
)
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.settings import Settings

BASE = "https://apiv2.lagrowthmachine.com/flow"
KEY = "lgm-secret-key-1234567890"
SECRET = "hook-shared-secret-abcdef"
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "lagrowthmachine"
MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
CAMPAIGN_A = "64b000000000000000000001"
CAMPAIGN_B = "64b000000000000000000002"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def connector(router: respx.Router, mappings: Mappings, sleeps: Sleeps) -> LaGrowthMachineConnector:
    settings = LaGrowthMachineSettings(api_key=SecretStr(KEY), webhook_secret=SecretStr(SECRET))
    conn = LaGrowthMachineConnector(
        settings,
        mappings,
        transport=httpx.MockTransport(router.handler),
        sleep=sleeps,
        clock=lambda: NOW,
        max_attempts=3,
    )
    yield conn
    conn.close()


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.url.query.decode())


def test_key_is_sent_as_a_bearer_header_and_nowhere_else(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/campaigns").respond(200, json={"campaigns": []})
    pages = list(connector.pull_changes(STREAM_LEAD_STATUSES, None))
    assert pages == [PullPage(STREAM_LEAD_STATUSES, (), None, True)]
    sent = route.calls.last.request
    assert sent.method == "GET" and sent.url.path == "/flow/campaigns"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert query(route.calls.last) == {"skip": ["0"], "limit": ["25"]}
    assert KEY not in str(sent.url)
    assert KEY not in repr(connector)


def test_campaign_pages_never_ask_for_more_than_25(
    router: respx.Router, mappings: Mappings, sleeps: Sleeps
) -> None:
    # The vendor's node: "The campaigns endpoint caps limit at 25 per page (higher values return empty)".
    conn = LaGrowthMachineConnector(
        LaGrowthMachineSettings(api_key=SecretStr(KEY)),
        mappings,
        transport=httpx.MockTransport(router.handler),
        sleep=sleeps,
        page_size=100,
    )
    route = router.get("/campaigns").respond(200, json={"campaigns": [{"id": "c1", "name": "A"}]})
    assert [c["id"] for c in conn.list_campaigns()] == ["c1"]
    conn.close()
    assert query(route.calls.last) == {"skip": ["0"], "limit": ["25"]}


# -- lead statuses ------------------------------------------------------------------------------


def test_lead_status_sweep_pages_to_the_end(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    router.get("/campaigns").respond(200, json=fixture("campaigns.json"))
    stats_a = router.get(f"/campaigns/{CAMPAIGN_A}/statsleads")
    stats_a.side_effect = [
        httpx.Response(200, json=fixture("statsleads_page1.json")),
        httpx.Response(200, json=fixture("statsleads_page2.json")),
    ]
    stats_b = router.get(f"/campaigns/{CAMPAIGN_B}/statsleads").respond(
        200, json=fixture("statsleads_other.json")
    )

    pages = list(connector.pull_changes(STREAM_LEAD_STATUSES, None))

    # Sent: campaign A first (sorted by id), then its next page from the last lead id, then B.
    assert [query(c) for c in stats_a.calls] == [
        {},
        {"getLeadsAfter": ["65a000000000000000000002"]},
    ]
    assert [query(c) for c in stats_b.calls] == [{}]
    assert [(p.cursor, p.done) for p in pages] == [
        (
            json.dumps({"after": "65a000000000000000000002", "campaign": CAMPAIGN_A}, separators=(",", ":")),
            False,
        ),
        (json.dumps({"after": None, "campaign": CAMPAIGN_B}, separators=(",", ":")), False),
        (None, True),
    ]
    # Page 1: Ava is INTERESTED with a HubSpot id; Ben has no status yet and is skipped.
    (ava,) = pages[0].records
    assert (ava.kind, ava.external_id, ava.stage, ava.status) == (
        "lead",
        "65a000000000000000000001",
        "qualified",
        "open",
    )
    assert ava.contact_email == "ava@example.com"
    assert ava.linkedin_url == "https://www.linkedin.com/in/ava-chen"
    assert ava.company == "Acme" and ava.title == "Ava Chen"
    assert ava.links == {"hubspot": "5123"}
    assert ava.pipeline_id == CAMPAIGN_A and ava.source_stage == "INTERESTED"
    assert ava.updated_at == NOW
    # Page 2: an unknown status is an error value, never a default; a removed lead is deleted.
    chloe, dan = pages[1].records
    assert chloe.stage is None
    assert chloe.unmapped == UnmappedStage("lagrowthmachine", None, "SOMETHING_NEW")
    assert chloe.links == {"pipedrive": "77"}
    assert dan.status == "deleted" and dan.external_id == "65a000000000000000000004"
    (eve,) = pages[2].records
    assert (eve.stage, eve.status, eve.pipeline_id) == (StageKey.WON, "won", CAMPAIGN_B)


def test_campaign_list_is_paged_with_skip_and_limit(
    router: respx.Router, mappings: Mappings, sleeps: Sleeps
) -> None:
    settings = LaGrowthMachineSettings(api_key=SecretStr(KEY))
    conn = LaGrowthMachineConnector(
        settings, mappings, transport=httpx.MockTransport(router.handler), sleep=sleeps, page_size=2
    )
    route = router.get("/campaigns")
    route.side_effect = [
        httpx.Response(200, json={"campaigns": [{"id": "c3", "name": "C"}, {"id": 1, "name": "A"}]}),
        httpx.Response(200, json={"campaigns": [{"id": "c2", "name": "B"}]}),
    ]
    campaigns = conn.list_campaigns()
    conn.close()
    assert [query(c)["skip"] for c in route.calls] == [["0"], ["2"]]
    assert [query(c)["limit"] for c in route.calls] == [["2"], ["2"]]
    assert [c["id"] for c in campaigns] == ["1", "c2", "c3"]


def test_lead_status_cursor_resumes_inside_a_campaign(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    router.get("/campaigns").respond(200, json=fixture("campaigns.json"))
    stats_a = router.get(f"/campaigns/{CAMPAIGN_A}/statsleads").respond(
        200, json=fixture("statsleads_page1.json")
    )
    stats_b = router.get(f"/campaigns/{CAMPAIGN_B}/statsleads").respond(
        200, json=fixture("statsleads_other.json")
    )
    cursor = json.dumps({"campaign": CAMPAIGN_B, "after": "65a000000000000000000009"})

    pages = list(connector.pull_changes(STREAM_LEAD_STATUSES, cursor))

    assert not stats_a.called
    assert query(stats_b.calls.last) == {"getLeadsAfter": ["65a000000000000000000009"]}
    assert [(p.cursor, p.done) for p in pages] == [(None, True)]
    assert [r.external_id for r in pages[0].records] == ["65a000000000000000000010"]


def test_bad_cursor_and_unknown_stream_are_config_errors(connector: LaGrowthMachineConnector) -> None:
    with pytest.raises(ConfigError, match="cursor"):
        list(connector.pull_changes(STREAM_LEAD_STATUSES, "not json"))
    with pytest.raises(ConfigError, match="unknown stream 'deals'"):
        list(connector.pull_changes("deals", None))


# -- replies ------------------------------------------------------------------------------------


SEARCH_QUERY = {"leadReplied": ["true"], "sortField": ["lastMessageAt"], "sortDirection": ["1"]}


def test_replies_follow_search_after_to_the_end(
    router: respx.Router, mappings: Mappings, sleeps: Sleeps
) -> None:
    conn = LaGrowthMachineConnector(
        LaGrowthMachineSettings(api_key=SecretStr(KEY)),
        mappings,
        transport=httpx.MockTransport(router.handler),
        sleep=sleeps,
        page_size=2,
    )
    route = router.get("/conversations/search")
    route.side_effect = [
        httpx.Response(200, json=fixture("conversation_search_page1.json")),
        httpx.Response(200, json=fixture("conversation_search_page2.json")),
    ]
    messages = router.get("/conversations/66b000000000000000000002/messages").respond(
        200, json=fixture("conversation_messages.json")
    )
    pages = list(conn.pull_changes(STREAM_REPLIES, None))
    conn.close()

    # Sent: the vendor's path, its filter and sort options, then searchAfter=<nextToken>.
    assert [c.request.url.path for c in route.calls] == ["/flow/conversations/search"] * 2
    assert [query(c) for c in route.calls] == [
        {"limit": ["2"], **SEARCH_QUERY},
        {"limit": ["2"], **SEARCH_QUERY, "searchAfter": ["WzE3MTcyMzYzMDAwMDAsIjY2YjAwMiJd"]},
    ]
    assert [(p.cursor, p.done) for p in pages] == [
        ("WzE3MTcyMzYzMDAwMDAsIjY2YjAwMiJd", False),
        ("WzE3MTczMTUyMDAwMDAsIjY2YjAwMyJd", True),
    ]
    # Ava's conversation ends with her message: a reply at lastMessageAt.
    ava, ben = pages[0].records
    assert ava.replied_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC) == ava.updated_at
    assert (ava.stage, ava.source_stage, ava.contact_email) == (
        StageKey.CONTACTED,
        "REPLIED",
        "ava@example.com",
    )
    assert ava.links == {"hubspot": "5123"} and ava.pipeline_id == CAMPAIGN_A
    # Ben replied, then was answered: his reply is dated from the conversation's messages.
    assert query(messages.calls.last) == {"page": ["0"]}
    assert (ben.external_id, ben.replied_at) == (
        "65a000000000000000000002",
        datetime(2024, 6, 1, 10, 2, tzinfo=UTC),
    )
    (eve,) = pages[1].records
    assert (eve.external_id, eve.links, eve.contact_email) == (
        "12345",
        {"pipedrive": "88"},
        "eve@example.com",
    )
    assert eve.replied_at == datetime(2024, 6, 2, 8, 0, tzinfo=UTC)


def test_replies_cursor_resumed_and_kept_when_nothing_is_new(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/conversations/search").respond(
        200, json={"data": [], "hasMore": False, "nextToken": None}
    )
    pages = list(connector.pull_changes(STREAM_REPLIES, "tok-41"))
    assert query(route.calls.last)["searchAfter"] == ["tok-41"]
    assert pages == [PullPage(STREAM_REPLIES, (), "tok-41", True)]


def test_replies_stop_when_has_more_is_false_even_with_a_token(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/conversations/search").respond(
        200, json={"data": [], "hasMore": False, "nextToken": "tok-2"}
    )
    pages = list(connector.pull_changes(STREAM_REPLIES, "tok-1"))
    assert route.call_count == 1
    assert pages == [PullPage(STREAM_REPLIES, (), "tok-2", True)]


def test_the_old_search_envelope_is_a_shape_error(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    router.get("/conversations/search").respond(200, json={"conversations": [], "searchAfter": None})
    with pytest.raises(PermanentError, match="unexpected response shape for GET /conversations/search"):
        list(connector.pull_changes(STREAM_REPLIES, None))


# -- HTTP failures ------------------------------------------------------------------------------


def test_429_with_retry_after_waits_what_was_asked(
    router: respx.Router, connector: LaGrowthMachineConnector, sleeps: Sleeps
) -> None:
    route = router.get("/campaigns")
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "Too many requests"}),
        httpx.Response(200, json={"campaigns": []}),
    ]
    assert connector.list_campaigns() == []
    assert route.call_count == 2
    assert sleeps == [7.0]


def test_429_without_retry_after_backs_off_briefly(
    router: respx.Router, connector: LaGrowthMachineConnector, sleeps: Sleeps
) -> None:
    route = router.get("/campaigns")
    route.side_effect = [httpx.Response(429), httpx.Response(200, json={"campaigns": []})]
    assert connector.list_campaigns() == []
    assert route.call_count == 2
    assert len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.5


def test_5xx_then_success(router: respx.Router, connector: LaGrowthMachineConnector) -> None:
    route = router.get("/conversations/search")
    route.side_effect = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(503, json={"message": "maintenance"}),
        httpx.Response(200, json={"data": [], "hasMore": False, "nextToken": None}),
    ]
    pages = list(connector.pull_changes(STREAM_REPLIES, None))
    assert route.call_count == 3 and pages[-1].done


def test_401_is_auth_error_without_the_key_anywhere(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/campaigns").respond(401, json={"message": "Invalid apikey"})
    with pytest.raises(AuthError) as info:
        connector.list_campaigns()
    assert route.call_count == 1
    exc = info.value
    assert "GET /campaigns: HTTP 401" in str(exc)
    chain = f"{exc!s} {exc!r} {exc.__cause__!s} {exc.__cause__!r}"
    assert KEY not in chain


def test_httpx_request_log_masks_the_key(
    router: respx.Router, connector: LaGrowthMachineConnector, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/campaigns").respond(200, json={"campaigns": []})
    with caplog.at_level(logging.DEBUG):
        connector.list_campaigns()
    messages = [r.getMessage() for r in caplog.records]
    assert any("/flow/campaigns" in m for m in messages)
    assert all(KEY not in m for m in messages)


def test_malformed_json_body_is_transient_and_retried(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/campaigns").respond(
        200, content=b'{"campaigns": [', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(TransientError, match="not JSON"):
        connector.list_campaigns()
    assert route.call_count == 3


def test_wrongly_shaped_body_is_permanent(router: respx.Router, connector: LaGrowthMachineConnector) -> None:
    router.get("/campaigns").respond(200, json={"campaigns": [{"id": "c1"}]})
    router.get("/campaigns/c1/statsleads").respond(200, json={"leads": "nope"})
    with pytest.raises(PermanentError, match="unexpected response shape"):
        list(connector.pull_changes(STREAM_LEAD_STATUSES, None))


# -- push ---------------------------------------------------------------------------------------


def update(key: str, **fields: Any) -> CanonicalUpdate:
    values: dict[str, Any] = {"target": "lagrowthmachine", "idempotency_key": key, "origin": "pipedrive"}
    values.update(fields)
    return CanonicalUpdate(**values)


def test_apply_updates_posts_form_encoded_lead_status(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    campaigns = router.get("/campaigns")
    post = router.post("/leads/status")
    post.side_effect = [
        httpx.Response(200, json=fixture("leads_status_response.json")),
        httpx.Response(
            200,
            json={
                "logs": [
                    {
                        "campaign": "Q3 founders",
                        "leadStatus": "CALL_BOOKED",
                        "leadUpdated": False,
                        "reason": "Lead not found",
                    }
                ]
            },
        ),
    ]
    results = connector.apply_updates(
        [
            update("k-won", external_id="65a1", stage=StageKey.WON, contact_email="ava@example.com"),
            update("k-proposal", stage=StageKey.PROPOSAL, contact_email="x@example.com"),
            update("k-no-email", status="lost"),
            update("k-lost", status="lost", contact_email="dan@example.com"),
        ]
    )

    assert [r.idempotency_key for r in results] == ["k-won", "k-proposal", "k-no-email", "k-lost"]
    assert [r.ok for r in results] == [True, False, False, False]
    assert results[0].external_id == "65a1" and results[0].updated_at == NOW
    assert "'proposal' has no lead status mapped" in (results[1].error or "")
    assert "e-mail" in (results[2].error or "")
    # Failure read from the documented answer, and the error says so.
    assert "from the documented answer" in (results[3].error or "")
    assert "Lead not found" in (results[3].error or "") and not results[3].retryable
    # Two POSTs only (the unrepresentable and the e-mail-less updates never left); no campaign list.
    assert post.call_count == 2 and not campaigns.called
    first = post.calls[0].request
    assert first.headers["content-type"] == "application/x-www-form-urlencoded"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert query(post.calls[0]) == {}
    # As the vendor's node sends it: `campaign` (here `all`), not `campaign[]`.
    assert parse_qs(first.content.decode()) == {
        "status": ["CONVERTED"],
        "proEmail": ["ava@example.com"],
        "campaign": ["all"],
    }
    assert parse_qs(post.calls[1].request.content.decode())["status"] == ["NOT_INTERESTED"]


def test_apply_updates_failures_become_results_but_auth_raises(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    post = router.post("/leads/status")
    post.side_effect = [httpx.Response(500)] * 3 + [
        httpx.Response(400, json={"message": "bad status"}),
        httpx.Response(404, text="Lead not found"),
    ]
    results = connector.apply_updates(
        [
            update("a", stage=StageKey.WON, contact_email="a@example.com"),
            update("b", stage=StageKey.LOST, contact_email="b@example.com"),
            update("c", stage=StageKey.LOST, contact_email="c@example.com"),
        ]
    )
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, False), (False, False)]
    assert all("from the HTTP status alone" in (r.error or "") for r in results)
    assert "bad status" in (results[1].error or "") and "HTTP 404" in (results[2].error or "")
    assert all(KEY not in (r.error or "") for r in results)

    post.side_effect = None
    post.respond(401, json={"message": "Invalid apikey"})
    with pytest.raises(AuthError):
        connector.apply_updates([update("c", stage=StageKey.WON, contact_email="c@example.com")])


@pytest.mark.parametrize("answer", [{"success": True}, [{"leadUpdated": True}], "OK"])
def test_a_2xx_answer_without_logs_is_judged_from_the_status_and_says_so(
    router: respx.Router,
    connector: LaGrowthMachineConnector,
    caplog: pytest.LogCaptureFixture,
    answer: object,
) -> None:
    router.post("/leads/status").respond(200, json=answer)
    with caplog.at_level(logging.INFO, logger="connectors.lagrowthmachine"):
        [result] = connector.apply_updates([update("a", stage=StageKey.WON, contact_email="a@example.com")])
    assert result.ok and result.updated_at == NOW
    assert any("judged from the HTTP status alone" in r.getMessage() for r in caplog.records)
    assert connector.apply_updates([]) == []


# -- webhooks -----------------------------------------------------------------------------------


def request(query_: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(
        "POST", "https://sync.example/webhooks/lagrowthmachine", headers or {}, b"{}", query_ or {}
    )


def test_verify_webhook_accepts_the_token_in_query_or_header(connector: LaGrowthMachineConnector) -> None:
    connector.verify_webhook(request(query_={"token": SECRET}))
    connector.verify_webhook(request(headers={"x-sync-token": SECRET}))


@pytest.mark.parametrize(
    ("query_", "headers", "message"),
    [
        ({}, {}, "missing webhook token"),
        ({"token": ""}, {}, "missing webhook token"),
        ({"token": SECRET + "x"}, {}, "does not match"),
        ({}, {"x-sync-token": "wrong"}, "does not match"),
        ({"token": "wrong"}, {"x-sync-token": SECRET}, "does not match"),
    ],
)
def test_verify_webhook_refuses_bad_or_missing_tokens(
    connector: LaGrowthMachineConnector, query_: dict[str, str], headers: dict[str, str], message: str
) -> None:
    with pytest.raises(SignatureError, match=message) as info:
        connector.verify_webhook(request(query_, headers))
    assert SECRET not in str(info.value) and info.value.status == 401


def test_verify_webhook_without_a_configured_secret_refuses(mappings: Mappings, router: respx.Router) -> None:
    conn = LaGrowthMachineConnector(
        LaGrowthMachineSettings(api_key=SecretStr(KEY)),
        mappings,
        transport=httpx.MockTransport(router.handler),
    )
    with pytest.raises(SignatureError, match="not configured"):
        conn.verify_webhook(request(query_={"token": "anything"}))
    conn.close()


def test_parse_webhook_published_inbox_message(connector: LaGrowthMachineConnector) -> None:
    (event,) = connector.parse_webhook((FIXTURES / "webhook_inbox_message.json").read_bytes())
    assert (event.object_type, event.object_id, event.action, event.handled, event.reason) == (
        "lead",
        "65a000000000000000000001",
        "reply_received",
        True,
        None,
    )
    # No top-level messageId: the id comes from messages[].
    assert event.dedupe_key == "lagrowthmachine:message:66c000000000000000000031"
    assert event.occurred_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert event.raw == fixture("webhook_inbox_message.json")


def test_inbox_message_with_both_directions_is_one_event_per_message(
    connector: LaGrowthMachineConnector,
) -> None:
    body = fixture("webhook_inbox_message.json")
    sent = {"id": "66c0a", "content": "Great", "direction": "OUTGOING", "createdAt": 1717236300000}
    body["messages"] = [*body["messages"], sent]
    reply, outgoing = connector.parse_webhook(json.dumps(body).encode())
    assert (reply.action, reply.handled) == ("reply_received", True)
    assert (outgoing.action, outgoing.handled, outgoing.dedupe_key) == (
        "message_sent",
        False,
        "lagrowthmachine:message:66c0a",
    )
    assert "outgoing" in (outgoing.reason or "")
    # Each event's raw is the body narrowed to its own message, so it translates on its own.
    assert reply.raw["messages"] == [fixture("webhook_inbox_message.json")["messages"][0]]
    assert outgoing.raw["messages"] == [sent] and outgoing.raw["lead"] == body["lead"]


def test_parse_webhook_flat_reply_and_outgoing(connector: LaGrowthMachineConnector) -> None:
    reply = (FIXTURES / "webhook_reply.json").read_bytes()
    outgoing = fixture("webhook_outgoing.json")
    (event,) = connector.parse_webhook(reply)
    assert (event.source, event.object_type, event.object_id, event.action, event.handled) == (
        "lagrowthmachine",
        "lead",
        "65a000000000000000000001",
        "reply_received",
        True,
    )
    assert event.dedupe_key == "lagrowthmachine:message:66c000000000000000000001"
    assert event.occurred_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert event.raw["conversationId"] == "66b000000000000000000001"

    both = connector.parse_webhook(json.dumps([json.loads(reply), outgoing]).encode())
    assert [(e.handled, e.action, e.object_id, e.dedupe_key) for e in both] == [
        (
            True,
            "reply_received",
            "65a000000000000000000001",
            "lagrowthmachine:message:66c000000000000000000001",
        ),
        (False, "message_sent", "9001", "lagrowthmachine:message:4711"),
    ]
    assert both[1].occurred_at == datetime(2024, 6, 1, 10, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "reason", "raw"),
    [
        (b"{not json", "not valid JSON", {"body": "{not json"}),
        (b"\xff\xfe", "not valid JSON", {"body": "\ufffd\ufffd"}),
        (b"[]", "empty list", {"body": "[]"}),
        (b'"text"', r"event\[0\]: expected a JSON object", {"body": '"text"'}),
        (b'{"leadId": "l1", "createdAt": 1}', "unrecognised shape", {"leadId": "l1", "createdAt": 1}),
        (b'{"type": "LEAD_EVENT"}', "unrecognised type 'LEAD_EVENT'", {"type": "LEAD_EVENT"}),
        (b'{"messageId": "m1", "createdAt": 1}', r"event\[0\]: no lead id", None),
        (b'{"messageId": "m1", "leadId": "l1"}', r"event\[0\]: no createdAt", None),
        (b'{"messageId": true, "leadId": "l1", "createdAt": 1}', r"event\[0\]\.id: expected an id", None),
        (b'{"messageId": "m1", "leadId": "l1", "createdAt": "yesterday"}', "not an ISO 8601", None),
        (b'{"type": "INBOX_MESSAGE", "lead": {"id": "l1"}, "messages": []}', "messages\\[\\] is empty", None),
        (
            b'{"type": "INBOX_MESSAGE", "messages": [{"id": "m1", "direction": "INCOMING", "createdAt": 1}]}',
            r"messages\[0\]: no lead id",
            None,
        ),
    ],
)
def test_an_unrecognised_delivery_is_kept_unhandled_never_refused(
    connector: LaGrowthMachineConnector, body: bytes, reason: str, raw: dict[str, Any] | None
) -> None:
    (event,) = connector.parse_webhook(body)
    assert (event.handled, event.action, event.source) == (False, "unrecognised", "lagrowthmachine")
    assert event.reason is not None and event.reason.startswith("lagrowthmachine: ")
    assert re.search(reason, event.reason), event.reason
    assert event.raw == (raw if raw is not None else json.loads(body))
    assert event.occurred_at == NOW
    # The same body is the same dead letter on redelivery.
    (again,) = connector.parse_webhook(body)
    assert again.dedupe_key == event.dedupe_key and event.dedupe_key.startswith(
        "lagrowthmachine:unrecognised:"
    )


def test_a_list_keeps_its_good_events_beside_the_unrecognised_one(
    connector: LaGrowthMachineConnector,
) -> None:
    good, bad = connector.parse_webhook(
        b'[{"messageId": "m1", "leadId": "l1", "createdAt": 1, "received": true}, 3]'
    )
    assert (good.handled, good.action) == (True, "reply_received")
    assert (bad.handled, bad.action, bad.raw) == (False, "unrecognised", {"body": "3"})
    assert "event[1]" in (bad.reason or "")


# -- pure translation ---------------------------------------------------------------------------


def test_reply_translation_from_the_webhook_payload(mappings: Mappings) -> None:
    record = reply_to_canonical(fixture("webhook_reply.json"), mappings)
    assert record == to_canonical(fixture("webhook_reply.json"), mappings, kind="message")
    assert (record.source, record.kind, record.external_id) == (
        "lagrowthmachine",
        "lead",
        "65a000000000000000000001",
    )
    assert record.stage == mappings.reply_stage("lagrowthmachine") == StageKey.CONTACTED
    assert record.replied_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert (record.contact_email, record.company, record.title) == ("ava@example.com", "Acme", "Ava Chen")
    with pytest.raises(PermanentError, match="not a reply"):
        reply_to_canonical(fixture("webhook_outgoing.json"), mappings)


def test_reply_translation_from_the_published_inbox_message(mappings: Mappings) -> None:
    # The published body names the lead by id, LinkedIn URL and e-mail only: no name, no campaign.
    record = reply_to_canonical(fixture("webhook_inbox_message.json"), mappings)
    assert (record.external_id, record.contact_email, record.linkedin_url) == (
        "65a000000000000000000001",
        "ava@example.com",
        "https://www.linkedin.com/in/ava-chen",
    )
    assert (record.title, record.pipeline_id, record.source_stage) == (None, None, "REPLIED")
    assert record.replied_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC) == record.updated_at
    outgoing = {**fixture("webhook_inbox_message.json"), "messages": [{"id": "x", "direction": "OUTGOING"}]}
    with pytest.raises(PermanentError, match="not a reply"):
        reply_to_canonical(outgoing, mappings)


def test_lead_translation_needs_an_observation_time(mappings: Mappings) -> None:
    row = fixture("statsleads_other.json")["leads"][0]
    with pytest.raises(PermanentError, match="observed_at"):
        to_canonical(row, mappings, kind="lead")
    record = lead_to_canonical(row, mappings, observed_at=NOW, campaign_id="c9")
    assert record == to_canonical(row, mappings, kind="lead", observed_at=NOW, campaign_id="c9")
    assert (record.stage, record.status, record.updated_at) == (StageKey.WON, "won", NOW)


def test_from_canonical_builds_the_documented_fields(mappings: Mappings) -> None:
    meeting = update("k", stage=StageKey.MEETING, contact_email="ava@example.com")
    assert from_canonical(meeting, mappings) == {
        "status": "CALL_BOOKED",
        "proEmail": "ava@example.com",
        "campaign": "all",
    }
    assert from_canonical(meeting, mappings, campaigns=["A", "B"])["campaign"] == ["A", "B"]
    with pytest.raises(PermanentError, match="no campaign"):
        from_canonical(update("k", stage=StageKey.WON, contact_email="a@example.com"), mappings, campaigns=[])
    with pytest.raises(PermanentError, match="only a stage"):
        from_canonical(update("k", status="deleted", contact_email="a@example.com"), mappings)


# -- construction -------------------------------------------------------------------------------


def test_from_settings_builds_a_connector_or_says_what_is_missing(
    mappings: Mappings, router: respx.Router
) -> None:
    with pytest.raises(ConfigError, match="SYNC_LAGROWTHMACHINE__API_KEY"):
        from_settings(Settings(), mappings)
    settings = Settings(lagrowthmachine=LaGrowthMachineSettings(api_key=SecretStr(KEY)))
    conn = from_settings(settings, mappings, transport=httpx.MockTransport(router.handler))
    assert conn.name == "lagrowthmachine"
    assert conn.rate_limit == (50, 10.0)
    stages = conn.list_stages()
    assert {s.stage_id for s in stages} >= {"INTERESTED", "CONVERTED", "NOT_INTERESTED"}
    assert all(s.source == "lagrowthmachine" and s.pipeline_id == "lead_status" for s in stages)
    conn.close()


def test_rate_limiter_is_asked_for_every_call(mappings: Mappings, router: respx.Router) -> None:
    class Limiter:
        def __init__(self) -> None:
            self.acquired: list[str] = []

        def acquire(self, bucket: str) -> None:
            self.acquired.append(bucket)

        def observe(self, bucket: str, headers: httpx.Headers) -> None:
            pass

    limiter = Limiter()
    router.get("/campaigns").respond(200, json={"campaigns": []})
    conn = LaGrowthMachineConnector(
        LaGrowthMachineSettings(api_key=SecretStr(KEY)),
        mappings,
        transport=httpx.MockTransport(router.handler),
        limiter=limiter,
    )
    conn.list_campaigns()
    conn.list_campaigns()
    conn.close()
    assert limiter.acquired == ["lagrowthmachine", "lagrowthmachine"]
