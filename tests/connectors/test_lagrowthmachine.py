"""LaGrowthMachine connector: pull, push, webhooks and pure translation, against respx route sets.

Fixtures are payloads shaped after the provider docs (see fixtures/lagrowthmachine/README.md).
"""

from __future__ import annotations

import json
import logging
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
from sync_worker.connector import Connector, WebhookRequest
from sync_worker.errors import (
    AuthError,
    ConfigError,
    PayloadError,
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


def test_key_is_sent_as_apikey_query_parameter_and_nowhere_else(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    route = router.get("/campaigns").respond(200, json={"campaigns": []})
    pages = list(connector.pull_changes(STREAM_LEAD_STATUSES, None))
    assert pages == [PullPage(STREAM_LEAD_STATUSES, (), None, True)]
    sent = route.calls.last.request
    assert sent.method == "GET" and sent.url.path == "/flow/campaigns"
    assert query(route.calls.last) == {"apikey": [KEY], "skip": ["0"], "limit": ["25"]}
    assert KEY not in str(sent.headers)
    assert KEY not in repr(connector)


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
        {"apikey": [KEY]},
        {"apikey": [KEY], "getLeadsAfter": ["65a000000000000000000002"]},
    ]
    assert [query(c) for c in stats_b.calls] == [{"apikey": [KEY]}]
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
    assert query(stats_b.calls.last) == {"apikey": [KEY], "getLeadsAfter": ["65a000000000000000000009"]}
    assert [(p.cursor, p.done) for p in pages] == [(None, True)]
    assert [r.external_id for r in pages[0].records] == ["65a000000000000000000010"]


def test_bad_cursor_and_unknown_stream_are_config_errors(connector: LaGrowthMachineConnector) -> None:
    with pytest.raises(ConfigError, match="cursor"):
        list(connector.pull_changes(STREAM_LEAD_STATUSES, "not json"))
    with pytest.raises(ConfigError, match="unknown stream 'deals'"):
        list(connector.pull_changes("deals", None))


# -- replies ------------------------------------------------------------------------------------


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
    route = router.get("/inbox/conversations/search")
    route.side_effect = [
        httpx.Response(200, json=fixture("conversations_page1.json")),
        httpx.Response(200, json=fixture("conversations_page2.json")),
    ]
    pages = list(conn.pull_changes(STREAM_REPLIES, None))
    conn.close()

    assert [query(c) for c in route.calls] == [
        {"apikey": [KEY], "limit": ["2"]},
        {"apikey": [KEY], "limit": ["2"], "searchAfter": ["WzE3MTcyMzYzMDAwMDAsIjY2YjAwMiJd"]},
    ]
    assert [(p.cursor, p.done) for p in pages] == [
        ("WzE3MTcyMzYzMDAwMDAsIjY2YjAwMiJd", False),
        ("WzE3MTczMTUyMDAwMDAsIjY2YjAwMyJd", True),
    ]
    # The outgoing LinkedIn message of page 1 is not a reply.
    (ava,) = pages[0].records
    assert ava.replied_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC) == ava.updated_at
    assert (ava.stage, ava.source_stage, ava.contact_email) == (
        StageKey.CONTACTED,
        "REPLIED",
        "ava@example.com",
    )
    assert ava.links == {"hubspot": "5123"} and ava.pipeline_id == CAMPAIGN_A
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
    route = router.get("/inbox/conversations/search").respond(
        200, json={"conversations": [], "searchAfter": None}
    )
    pages = list(connector.pull_changes(STREAM_REPLIES, "tok-41"))
    assert query(route.calls.last)["searchAfter"] == ["tok-41"]
    assert pages == [PullPage(STREAM_REPLIES, (), "tok-41", True)]


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
    route = router.get("/inbox/conversations/search")
    route.side_effect = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(503, json={"message": "maintenance"}),
        httpx.Response(200, json={"conversations": [], "searchAfter": None}),
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
    assert "apikey=REDACTED" in str(exc.__cause__)  # httpx's own message, key masked


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
    router.get("/campaigns").respond(200, json=fixture("campaigns.json"))
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
    assert "Lead not found" in (results[3].error or "") and not results[3].retryable
    # Two POSTs only (the unrepresentable and the e-mail-less updates never left).
    assert post.call_count == 2
    first = post.calls[0].request
    assert first.headers["content-type"] == "application/x-www-form-urlencoded"
    assert query(post.calls[0]) == {"apikey": [KEY]}
    assert parse_qs(first.content.decode()) == {
        "status": ["CONVERTED"],
        "proEmail": ["ava@example.com"],
        "campaign[]": ["Heads of sales FR", "Q3 founders"],
    }
    assert parse_qs(post.calls[1].request.content.decode())["status"] == ["NOT_INTERESTED"]


def test_apply_updates_failures_become_results_but_auth_raises(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    router.get("/campaigns").respond(200, json=fixture("campaigns.json"))
    post = router.post("/leads/status")
    post.side_effect = [httpx.Response(500)] * 3 + [httpx.Response(400, json={"message": "bad status"})]
    results = connector.apply_updates(
        [
            update("a", stage=StageKey.WON, contact_email="a@example.com"),
            update("b", stage=StageKey.LOST, contact_email="b@example.com"),
        ]
    )
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, False)]
    assert "bad status" in (results[1].error or "")
    assert all(KEY not in (r.error or "") for r in results)

    post.side_effect = None
    post.respond(401, json={"message": "Invalid apikey"})
    with pytest.raises(AuthError):
        connector.apply_updates([update("c", stage=StageKey.WON, contact_email="c@example.com")])


def test_apply_updates_when_the_campaign_list_fails(
    router: respx.Router, connector: LaGrowthMachineConnector
) -> None:
    router.get("/campaigns").respond(503)
    post = router.post("/leads/status")
    results = connector.apply_updates([update("a", stage=StageKey.WON, contact_email="a@example.com")])
    assert [(r.ok, r.retryable) for r in results] == [(False, True)]
    assert not post.called
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


def test_parse_webhook_reply_and_outgoing(connector: LaGrowthMachineConnector) -> None:
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
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "empty list"),
        (b'"text"', r"event\[0\]: expected a JSON object"),
        (b'{"leadId": "l1", "createdAt": 1}', r"event\[0\]: missing messageId"),
        (b'{"messageId": "m1", "createdAt": 1}', r"event\[0\]: missing leadId"),
        (b'{"messageId": "m1", "leadId": "l1"}', r"event\[0\]: missing createdAt"),
        (b'{"messageId": true, "leadId": "l1", "createdAt": 1}', r"event\[0\]\.messageId: expected an id"),
        (b'{"messageId": "m1", "leadId": "l1", "createdAt": "yesterday"}', "not an ISO 8601"),
        (b'[{"messageId": "m1", "leadId": "l1", "createdAt": 1}, 3]', r"event\[1\]: expected a JSON object"),
    ],
)
def test_parse_webhook_rejects_malformed_bodies(
    connector: LaGrowthMachineConnector, body: bytes, message: str
) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        connector.parse_webhook(body)
    assert info.value.status == 400
    assert str(info.value).startswith("lagrowthmachine: ")


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


def test_lead_translation_needs_an_observation_time(mappings: Mappings) -> None:
    row = fixture("statsleads_other.json")["leads"][0]
    with pytest.raises(PermanentError, match="observed_at"):
        to_canonical(row, mappings, kind="lead")
    record = lead_to_canonical(row, mappings, observed_at=NOW, campaign_id="c9")
    assert record == to_canonical(row, mappings, kind="lead", observed_at=NOW, campaign_id="c9")
    assert (record.stage, record.status, record.updated_at) == (StageKey.WON, "won", NOW)


def test_from_canonical_builds_the_documented_fields(mappings: Mappings) -> None:
    form = from_canonical(
        update("k", stage=StageKey.MEETING, contact_email="ava@example.com"), mappings, campaigns=["A", "B"]
    )
    assert form == {"status": "CALL_BOOKED", "proEmail": "ava@example.com", "campaign[]": ["A", "B"]}
    with pytest.raises(PermanentError, match="no campaign"):
        from_canonical(update("k", stage=StageKey.WON, contact_email="a@example.com"), mappings, campaigns=[])
    with pytest.raises(PermanentError, match="only a stage"):
        from_canonical(
            update("k", status="deleted", contact_email="a@example.com"), mappings, campaigns=["A"]
        )


# -- construction -------------------------------------------------------------------------------


def test_from_settings_builds_a_connector_or_says_what_is_missing(
    mappings: Mappings, router: respx.Router
) -> None:
    with pytest.raises(ConfigError, match="SYNC_LAGROWTHMACHINE__API_KEY"):
        from_settings(Settings(), mappings)
    settings = Settings(lagrowthmachine=LaGrowthMachineSettings(api_key=SecretStr(KEY)))
    conn = from_settings(settings, mappings, transport=httpx.MockTransport(router.handler))
    assert isinstance(conn, Connector)
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
