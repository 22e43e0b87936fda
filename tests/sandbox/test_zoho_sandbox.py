"""The Zoho connector against the live Zoho sandbox, answers checked against Zoho's OpenAPI documents."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connectors.zoho import SPEC, ZohoConnector, ZohoSettings
from connectors.zoho.sandbox import ZohoSandboxServer
from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.connector import NormaliseContext, WebhookRequest
from sync_worker.errors import SignatureError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import BuildContext, SandboxOptions
from sync_worker.store.models import InboxEvent
from tests.connectors.zoho_oas import validate
from tests.sandbox.conftest import Receiver

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _settings(server: ZohoSandboxServer, **extra: object) -> ZohoSettings:
    env = server.env()
    fields = {k.removeprefix("SYNC_ZOHO__").lower(): v for k, v in env.items()}
    return ZohoSettings.model_validate({**fields, **extra})


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS)


def _connector(server: ZohoSandboxServer, mappings: Mappings, **extra: object) -> ZohoConnector:
    ctx = BuildContext(
        section=_settings(server, **extra),
        settings=None,
        mappings=lambda: mappings,
        limiter=None,
        clock=lambda: datetime.now(UTC),
    )
    connector = SPEC.build(ctx)
    assert isinstance(connector, ZohoConnector)
    return connector


@pytest.fixture
def server() -> Iterator[ZohoSandboxServer]:
    assert SPEC.sandbox is not None
    box = SPEC.sandbox(SandboxOptions(seed=7, deals=30, now=NOW))
    assert isinstance(box, ZohoSandboxServer)
    yield box
    box.stop()


def _token(server: ZohoSandboxServer) -> str:
    env = server.env()
    form = {
        "grant_type": "refresh_token",
        "client_id": env["SYNC_ZOHO__CLIENT_ID"],
        "client_secret": env["SYNC_ZOHO__CLIENT_SECRET"],
        "refresh_token": env["SYNC_ZOHO__REFRESH_TOKEN"],
    }
    answer = httpx.post(f"{server.url}/oauth/v2/token", data=form).json()
    assert answer["api_domain"] == server.url
    return str(answer["access_token"])


def test_sandbox_answers_follow_zohos_openapi_documents(server: ZohoSandboxServer) -> None:
    headers = {"Authorization": f"Zoho-oauthtoken {_token(server)}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        layout = http.get("/crm/v8/settings/layouts", params={"module": "Deals"}).json()["layouts"][0]["id"]
        validate(
            http.get("/crm/v8/settings/pipeline", params={"layout_id": layout}).json(),
            "pipeline",
            "/components/schemas/Response_Wrapper",
        )
        listing = http.get("/crm/v8/Deals", params={"fields": "Deal_Name,Stage,Modified_Time", "per_page": 5})
        validate(listing.json(), "record", "/components/schemas/Response_Wrapper")
        assert listing.json()["info"]["more_records"] is True
        missing = http.get("/crm/v8/Deals")
        assert missing.status_code == 400
        validate(missing.json(), "record", "/components/schemas/API_Exception")
        assert missing.json()["code"] == "REQUIRED_PARAM_MISSING"
        too_deep = http.get("/crm/v8/Deals", params={"fields": "Stage", "page": 11})
        assert too_deep.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
        nobody = http.get(
            "/crm/v8/Deals",
            params={"fields": "Stage"},
            headers={"If-Modified-Since": "2099-01-01T00:00:00+00:00"},
        )
        assert (nobody.status_code, nobody.content) == (204, b"")
    anonymous = httpx.get(f"{server.url}/crm/v8/Deals", params={"fields": "Stage"})
    assert anonymous.status_code == 401
    validate(anonymous.json(), "record", "/components/schemas/API_Exception")


def test_stages_come_from_the_pipeline_with_forecast_types(
    server: ZohoSandboxServer, mappings: Mappings
) -> None:
    connector = _connector(server, mappings)
    stages = connector.list_stages()
    closed = {s.stage_label for s in stages if s.is_closed}
    # Labels are the stored (actual) values the mapping names, not the display values.
    assert closed == {"Closed Won", "Closed Lost", "Closed Lost to Competition"}
    assert "Id. Decision Makers" in {s.stage_label for s in stages}
    connector.close()


def test_full_pull_then_incremental_sees_a_change_once(server: ZohoSandboxServer, mappings: Mappings) -> None:
    connector = _connector(server, mappings)
    pages = list(connector.pull_changes("deals", None))
    records = [r for p in pages for r in p.records]
    assert sorted(r.external_id for r in records) == sorted(server.state.deals)
    assert all(r.stage is not None for r in records)
    assert all(r.contact_email and r.contact_email.endswith(".example.test") for r in records)
    cursor = pages[-1].cursor
    assert pages[-1].done
    # Given no change, when pulled from the cursor, then the record at the cursor is not new.
    assert [r for p in connector.pull_changes("deals", cursor) for r in p.records] == []
    time.sleep(1.05)  # a new second: Modified_Time has second precision
    changed = server.simulate_change()
    again = list(connector.pull_changes("deals", cursor))
    assert [r.external_id for p in again for r in p.records] == [changed]
    assert [r.change_source for p in again for r in p.records] == [server.state.person.id]
    assert [r for p in connector.pull_changes("deals", again[-1].cursor) for r in p.records] == []
    connector.close()


def test_one_second_of_changes_across_a_page_boundary_is_pulled_once(
    server: ZohoSandboxServer, mappings: Mappings
) -> None:
    connector = _connector(server, mappings)
    # Given 201 deals modified in one second after the 30 seeded ones: pages of 200 split that second
    second = NOW + timedelta(hours=1)
    burst = [
        server.state.seed_deal({"Deal_Name": f"Mass {n}", "Stage": "Qualification"}, at=second)
        for n in range(201)
    ]
    pages = list(connector.pull_changes("deals", None))
    assert [len(p.records) for p in pages] == [200, 31, 0]
    assert len({r.external_id for p in pages for r in p.records}) == 231
    # When a pull stopped after its first page, the next one reads the rest of that second only
    rest = [r.external_id for p in connector.pull_changes("deals", pages[0].cursor) for r in p.records]
    first = {r.external_id for r in pages[0].records}
    assert sorted(rest) == sorted(d["id"] for d in burst if d["id"] not in first)
    # When one more deal is modified in that same second after the pull, it alone is new
    late = server.state.seed_deal({"Deal_Name": "Late", "Stage": "Qualification"}, at=second)
    again = list(connector.pull_changes("deals", pages[-1].cursor))
    assert [r.external_id for p in again for r in p.records] == [late["id"]]
    assert [r for p in connector.pull_changes("deals", again[-1].cursor) for r in p.records] == []
    connector.close()


def test_push_reports_each_record_and_marks_its_own_writes(
    server: ZohoSandboxServer, mappings: Mappings
) -> None:
    connector = _connector(server, mappings)
    first, second = sorted(server.state.deals)[:2]
    flag = LeakFlag(rule="stalled", reason="no move", stage=StageKey.PROPOSAL, days_in_stage=30)
    updates = [
        CanonicalUpdate(
            target="zoho",
            idempotency_key="a",
            origin="hubspot",
            external_id=first,
            stage=StageKey.NEGOTIATION,
        ),
        CanonicalUpdate(
            target="zoho",
            idempotency_key="b",
            origin="hubspot",
            external_id="5725767999999999999",
            amount=Decimal(5),
        ),
        CanonicalUpdate(target="zoho", idempotency_key="c", origin="leaks", external_id=second, flag=flag),
    ]
    results = connector.apply_updates(updates)
    assert [(r.idempotency_key, r.ok) for r in results] == [("a", True), ("b", False), ("c", True)]
    assert results[1].error is not None and "INVALID_DATA" in results[1].error
    assert server.state.deals[first]["Stage"] == "Negotiation/Review"
    assert server.state.deals[second]["Leak_Flag"] == "stalled: no move (stage proposal, 30 days)"
    pulled = {r.external_id: r for p in connector.pull_changes("deals", None) for r in p.records}
    assert pulled[first].stage is StageKey.NEGOTIATION
    assert SPEC.echo_markers(_settings(server)) == {pulled[first].change_source}
    connector.close()


def test_a_batch_whose_only_record_fails_does_not_hide_the_others(
    server: ZohoSandboxServer, mappings: Mappings
) -> None:
    connector = _connector(server, mappings)
    deal = sorted(server.state.deals)[0]
    updates = [
        CanonicalUpdate(target="zoho", idempotency_key="x", origin="hubspot", external_id="1", title="nope"),
        CanonicalUpdate(target="zoho", idempotency_key="y", origin="hubspot", external_id="2", title="nope"),
    ]
    assert [r.ok for r in connector.apply_updates(updates)] == [False, False]
    ok = CanonicalUpdate(target="zoho", idempotency_key="z", origin="hubspot", external_id=deal, title="kept")
    assert [r.ok for r in connector.apply_updates([updates[0], ok])] == [False, True]
    assert server.state.deals[deal]["Deal_Name"] == "kept"
    connector.close()


def test_deleted_deals_come_from_the_deleted_list(server: ZohoSandboxServer, mappings: Mappings) -> None:
    connector = _connector(server, mappings)
    assert [r for p in connector.pull_changes("deals_deleted", None) for r in p.records] == []
    gone = sorted(server.state.deals)[3]
    server.state.delete(gone)
    pages = list(connector.pull_changes("deals_deleted", None))
    assert [(r.external_id, r.status) for p in pages for r in p.records] == [(gone, "deleted")]
    assert [r for p in connector.pull_changes("deals_deleted", pages[-1].cursor) for r in p.records] == []
    connector.close()


def test_an_expired_token_is_refreshed_once(server: ZohoSandboxServer, mappings: Mappings) -> None:
    connector = _connector(server, mappings)
    connector.list_stages()
    server.state.expire_tokens()
    assert len(connector.list_stages()) == 10
    connector.close()


def test_spent_credits_answer_429_and_are_retried_then_given_up(
    server: ZohoSandboxServer, mappings: Mappings
) -> None:
    connector = _connector(server, mappings)
    server.state.credits_per_day = server.state.credits_used
    with pytest.raises(TransientError):
        connector.list_stages()
    assert server.rate_limited() >= 2
    connector.close()


def test_watch_channel_callbacks_and_forgeries(receiver: Receiver, mappings: Mappings) -> None:
    assert SPEC.sandbox is not None
    box = SPEC.sandbox(SandboxOptions(seed=3, deals=5, webhook_base_url=receiver.url("")))
    assert isinstance(box, ZohoSandboxServer)
    try:
        connector = _connector(
            box, mappings, notify_url=receiver.url("/webhooks/zoho"), channel_id="1000000068002"
        )
        assert connector.prepare() == ["watch channel 1000000068002"]
        assert connector.prepare() == []
        headers = {"Authorization": f"Zoho-oauthtoken {_token(box)}"}
        listed = httpx.get(
            f"{box.url}/crm/v8/actions/watch", params={"channel_id": "1000000068002"}, headers=headers
        )
        validate(listed.json(), "notifications", "/components/schemas/Response_Wrapper")
        changed = box.simulate_change()
        deadline = time.monotonic() + 5
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        bodies = [json.loads(r.body) for r in receiver.received]
        assert {b["channel_id"] for b in bodies} == {"1000000068001", "1000000068002"}
        ours = next(r for r in receiver.received if json.loads(r.body)["channel_id"] == "1000000068001")
        connector.close()
        connector = _connector(box, mappings)
        request = WebhookRequest("POST", ours.url, {}, ours.body, {})
        connector.verify_webhook(request)
        forged = box.forge(box.deliveries()[0])
        with pytest.raises(SignatureError):
            connector.verify_webhook(WebhookRequest("POST", ours.url, {}, forged.body, {}))
        events = connector.parse_webhook(ours.body)
        assert [(e.object_id, e.action, e.property_name) for e in events] == [(changed, "update", "Stage")]
        assert "token" not in json.dumps(events[0].raw)
        inbox = [
            InboxEvent(
                id=1,
                source="zoho",
                dedupe_key=e.dedupe_key,
                object_type=e.object_type,
                object_id=e.object_id,
                action=e.action,
                occurred_at=e.occurred_at,
                payload=e.raw,
                received_at=e.occurred_at,
            )
            for e in events
        ]
        ctx = NormaliseContext(
            mappings=mappings, lookup=lambda *_: None, own_markers=SPEC.echo_markers(_settings(box))
        )
        connector.list_stages()  # the stage list is read once and kept
        result = connector.normalise_events(inbox, ctx)
        assert [(r.external_id, ids) for r, ids in result.records] == [(changed, (1,))]
        assert result.reads == 2  # the deal and its contact, one batch read each
        connector.close()
    finally:
        box.stop()
