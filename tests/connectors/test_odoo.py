"""OdooConnector against respx route sets: what is sent on each transport and what comes back.

Payload shapes: tests/connectors/fixtures/odoo/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from connectors.odoo import OdooConnector, OdooSettings
from connectors.odoo.cursor import PullCursor
from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError, PermanentError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from tests.connectors.odoo_helpers import BASE, KEY, REPO, body, build, fixture, json2, rpc_result


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


Make = Callable[..., OdooConnector]


@pytest.fixture
def make(router: respx.Router, mappings: Mappings) -> Make:
    return lambda **settings: build(router, mappings, **settings)


def test_satisfies_the_connector_protocol(make: Make) -> None:
    assert isinstance(make(), Connector)


def test_json2_pull_sends_named_arguments_and_reads_archived_leads(router: respx.Router, make: Make) -> None:
    # Given Odoo 19 with three opportunities, one of them archived (lost)
    stages = json2(router, "crm.stage", "search_read", fixture("stages.json"))
    leads = json2(router, "crm.lead", "search_read", fixture("leads.json"))
    # When the connector pulls from the beginning
    pages = list(make().pull_changes("deals", None))
    # Then one search_read went out, by name, with active_test off and the documented order
    sent = leads.calls.last.request
    assert sent.headers["authorization"] == f"bearer {KEY}"
    assert sent.headers["x-odoo-database"] == "acme"
    assert sent.headers["content-type"].startswith("application/json")
    payload = body(sent)
    assert payload["domain"] == [["type", "=", "opportunity"]]
    assert payload["order"] == "write_date asc, id asc"
    assert payload["limit"] == 200
    assert payload["context"] == {"lang": "en_US", "active_test": False}
    assert "ids" not in payload and {"write_date", "write_uid", "active", "lost_reason_id"} <= set(
        payload["fields"]
    )
    assert body(stages.calls.last.request)["order"] == "sequence, name, id"
    # And the records say what Odoo means
    assert len(pages) == 1 and pages[0].done
    by_id = {r.external_id: r for r in pages[0].records}
    assert (by_id["5"].status, by_id["5"].stage, by_id["5"].amount) == (
        "open",
        StageKey.PROPOSAL,
        Decimal("5000.0"),
    )
    assert by_id["5"].close_date == date(2025, 4, 30) and by_id["5"].contact_email == "ada@deco.example.com"
    assert by_id["5"].change_source == "user:2" and by_id["5"].currency == "USD"
    assert (by_id["6"].status, by_id["6"].stage) == ("won", StageKey.WON)
    lost = by_id["7"]
    assert (lost.status, lost.stage, lost.lost_reason) == ("lost", StageKey.LOST, "Too expensive")
    assert lost.source_stage == "2"  # the stage stays where it was
    assert lost.updated_at == datetime(2025, 3, 1, 10, 16, 40, tzinfo=UTC)
    # The cursor is the newest second and the lead read in it
    assert pages[0].cursor == "2025-03-01 10:16:40|7"


def test_cursor_is_inclusive_without_reading_the_lead_at_the_cursor_twice(
    router: respx.Router, make: Make
) -> None:
    json2(router, "crm.stage", "search_read", fixture("stages.json"))
    leads = json2(router, "crm.lead", "search_read", [])
    pages = list(make().pull_changes("deals", "2025-03-01 10:15:02|5-6"))
    domain = body(leads.calls.last.request)["domain"]
    assert domain == [
        ["type", "=", "opportunity"],
        "|",
        ["write_date", ">=", "2025-03-01 10:15:03"],
        "&",
        ["write_date", ">=", "2025-03-01 10:15:02"],
        ["id", "not in", [5, 6]],
    ]
    assert pages[-1].cursor == "2025-03-01 10:15:02|5-6" and pages[-1].done


def test_full_pages_page_on_by_the_cursor(
    router: respx.Router, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connectors.odoo.client.PAGE_SIZE", 2)
    json2(router, "crm.stage", "search_read", fixture("stages.json"))
    first, second = fixture("leads.json")[:2], fixture("leads.json")[2:]
    leads = router.post("/json/2/crm.lead/search_read").mock(
        side_effect=[httpx.Response(200, json=first), httpx.Response(200, json=second)]
    )
    pages = list(make().pull_changes("deals", None))
    assert [len(p.records) for p in pages] == [2, 1] and [p.done for p in pages] == [False, True]
    assert body(leads.calls[1].request)["domain"][1:] == [
        "|",
        ["write_date", ">=", "2025-03-01 10:15:03"],
        "&",
        ["write_date", ">=", "2025-03-01 10:15:02"],
        ["id", "not in", [5, 6]],
    ]
    assert PullCursor.parse(pages[0].cursor or "").seen == {5, 6}


def test_jsonrpc_pull_sends_execute_kw(router: respx.Router, make: Make) -> None:
    calls: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        calls.append(sent)
        args = sent["params"]["args"]
        if sent["params"]["method"] == "authenticate":
            return rpc_result(6)
        return rpc_result(fixture("stages.json") if args[3] == "crm.stage" else fixture("leads.json"))

    router.post("/jsonrpc").mock(side_effect=answer)
    connector = make(transport="jsonrpc", login="sync-worker")
    records = [r for p in connector.pull_changes("deals", None) for r in p.records]
    assert len(records) == 3
    login, leads, stages = calls
    assert login["params"] == {
        "service": "common",
        "method": "authenticate",
        "args": ["acme", "sync-worker", KEY, {}],
    }
    assert login["jsonrpc"] == "2.0" and login["method"] == "call"
    db, uid, key, model, method, args, kw = leads["params"]["args"]
    assert (leads["params"]["service"], leads["params"]["method"]) == ("object", "execute_kw")
    assert (db, uid, key, model, method, args) == ("acme", 6, KEY, "crm.lead", "search_read", [])
    assert kw["domain"] == [["type", "=", "opportunity"]] and kw["context"]["active_test"] is False
    assert stages["params"]["args"][3:5] == ["crm.stage", "search_read"]
    assert connector.own_marker() == "user:6"


@pytest.mark.parametrize(
    ("name", "code", "error"),
    [
        ("builtins.AttributeError", 200, PermanentError),
        ("odoo.exceptions.AccessDenied", 200, AuthError),
        ("odoo.exceptions.AccessError", 200, AuthError),
        ("odoo.exceptions.ValidationError", 200, PermanentError),
        ("psycopg2.errors.SerializationFailure", 200, TransientError),
        ("odoo.http.SessionExpiredException", 100, AuthError),
    ],
)
def test_an_rpc_error_inside_http_200_becomes_the_projects_error(
    router: respx.Router, make: Make, name: str, code: int, error: type[Exception]
) -> None:
    answer = fixture("rpc_error.json")
    answer["error"]["code"] = code
    answer["error"]["data"]["name"] = name
    route = router.post("/jsonrpc").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(error) as caught:
        make(transport="jsonrpc", user_id=6).list_stages()
    assert route.call_count == 1  # inside HTTP 200: not a transport retry
    assert name in str(caught.value) and KEY not in str(caught.value)
    assert "Traceback" not in str(caught.value)
    if error is PermanentError:
        assert not isinstance(caught.value, AuthError)


def test_json2_401_is_an_auth_error_without_the_key(router: respx.Router, make: Make) -> None:
    json2(router, "crm.stage", "search_read", fixture("json2_error_401.json"), status=401)
    with pytest.raises(AuthError) as caught:
        make().list_stages()
    assert "Invalid apikey" in str(caught.value) and KEY not in str(caught.value)


def test_a_bare_string_error_body_is_survived(router: respx.Router, make: Make) -> None:
    json2(router, "crm.stage", "search_read", "Invalid apikey", status=401)
    with pytest.raises(AuthError):
        make().list_stages()


def test_version_is_detected_from_web_version_then_common_version(router: respx.Router, make: Make) -> None:
    router.get("/web/version").mock(return_value=httpx.Response(404, json={"message": "Not Found"}))
    rpc = router.post("/jsonrpc").mock(
        return_value=rpc_result({"server_version_info": [17, 0, 0, "final", 0, ""]})
    )
    assert make(transport="auto", user_id=6).transport == "jsonrpc"
    assert body(rpc.calls.last.request)["params"] == {"service": "common", "method": "version", "args": []}
    router.get("/web/version").mock(
        return_value=httpx.Response(200, json={"version_info": [19, 0, 0, "final", 0, ""], "version": "19.0"})
    )
    assert make(transport="auto").transport == "json2"
    assert make(transport="auto", version=18, user_id=6).transport == "jsonrpc"


def test_jsonrpc_needs_the_database(make: Make) -> None:
    with pytest.raises(ConfigError, match="DATABASE"):
        make(transport="jsonrpc", database=None, user_id=6)


def update(key: str, external_id: str | None, **fields: Any) -> CanonicalUpdate:
    return CanonicalUpdate(
        target="odoo", idempotency_key=key, origin="pipedrive", external_id=external_id, **fields
    )


def test_equal_values_are_written_in_one_call_and_lost_goes_through_action_set_lost(
    router: respx.Router, make: Make
) -> None:
    json2(router, "crm.stage", "search_read", fixture("stages.json"))
    writes = json2(router, "crm.lead", "write", True)
    lost = json2(router, "crm.lead", "action_set_lost", True)
    won = json2(router, "crm.lead", "action_set_won", True)
    reasons = json2(router, "crm.lost.reason", "search_read", [{"id": 3, "name": "Too expensive"}])
    created = json2(router, "crm.lead", "create", [40])
    json2(router, "crm.lead", "search_read", [{"id": 5, "write_date": "2025-03-02 08:00:00"}])
    results = make().apply_updates(
        [
            update("a", "5", stage=StageKey.QUALIFIED),
            update("b", "8", stage=StageKey.QUALIFIED),
            update("c", "9", stage=StageKey.NEGOTIATION, amount=Decimal("1200")),
            update("d", "10", status="lost", lost_reason="too expensive"),
            update("e", "11", stage=StageKey.WON),
            update("f", None, title="New deal", amount=Decimal("99.5")),
        ]
    )
    assert [r.ok for r in results] == [True] * 6
    assert results[0].updated_at == datetime(2025, 3, 2, 8, tzinfo=UTC)
    assert results[5].external_id == "40"
    sent = sorted((body(c.request) for c in writes.calls), key=lambda b: b["ids"])
    assert [s["ids"] for s in sent] == [[5, 8], [9]]
    assert sent[0]["vals"] == {"stage_id": 2}
    assert sent[1]["vals"] == {"stage_id": 5, "expected_revenue": 1200.0}
    assert body(lost.calls.last.request) == {
        "ids": [10],
        "lost_reason_id": 3,
        "context": {"lang": "en_US", "active_test": False},
    }
    assert "active" not in json.dumps([s["vals"] for s in sent]) and lost.call_count == 1
    assert body(reasons.calls.last.request)["domain"] == [["name", "=ilike", "too expensive"]]
    assert body(won.calls.last.request)["ids"] == [11]
    assert body(created.calls.last.request)["vals_list"] == [
        {"name": "New deal", "expected_revenue": 99.5, "type": "opportunity"}
    ]


def test_a_grouped_write_that_fails_is_retried_one_by_one(router: respx.Router, make: Make) -> None:
    json2(router, "crm.stage", "search_read", fixture("stages.json"))

    def write(request: httpx.Request) -> httpx.Response:
        ids = body(request)["ids"]
        if 8 in ids:
            return httpx.Response(
                404, json={"name": "odoo.exceptions.MissingError", "message": "Record does not exist"}
            )
        return httpx.Response(200, json=True)

    writes = router.post("/json/2/crm.lead/write").mock(side_effect=write)
    json2(router, "crm.lead", "search_read", [])
    results = make().apply_updates(
        [update(k, i, stage=StageKey.QUALIFIED) for k, i in (("a", "5"), ("b", "8"), ("c", "9"))]
    )
    assert [r.ok for r in results] == [True, False, True]
    assert "Record does not exist" in (results[1].error or "") and not results[1].retryable
    assert [body(c.request)["ids"] for c in writes.calls] == [[5, 8, 9], [5], [8], [9]]


def test_a_transient_failure_fails_its_group_as_retryable(router: respx.Router, make: Make) -> None:
    json2(router, "crm.lead", "action_set_won", {"message": "busy"}, status=503)
    json2(router, "crm.lead", "search_read", [])
    results = make().apply_updates([update("a", "5", status="won"), update("b", "6", status="won")])
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, True)]


def test_unwritable_updates_fail_alone(router: respx.Router, make: Make) -> None:
    json2(router, "crm.lead", "write", True)
    json2(router, "crm.lead", "search_read", [])
    results = make().apply_updates(
        [update("a", "5", status="deleted"), update("b", "x1"), update("c", "6", title="T")]
    )
    assert [r.ok for r in results] == [False, False, True]


def test_leak_flags_tag_and_note(router: respx.Router, make: Make) -> None:
    json2(router, "crm.tag", "search_read", [{"id": 1, "name": "Leak: stalled"}])
    tags = json2(router, "crm.tag", "create", [2, 3, 4])
    writes = json2(router, "crm.lead", "write", True)
    notes = json2(router, "crm.lead", "message_post", 77)
    json2(router, "crm.lead", "search_read", [])
    flag = LeakFlag(rule="dropped", reason="vanished from the pipeline", stage=StageKey.PROPOSAL)
    results = make().apply_updates([update("a", "5", flag=flag), update("b", "6", flag=flag)])
    assert all(r.ok for r in results)
    assert body(tags.calls.last.request)["vals_list"] == [
        {"name": f"Leak: {r}"} for r in ("regressed", "dropped", "unanswered")
    ]
    sent = body(writes.calls.last.request)
    assert sent["ids"] == [5, 6] and sent["vals"] == {"tag_ids": [[3, 1], [3, 2], [3, 4], [4, 3]]}
    posted = [body(c.request) for c in notes.calls]
    assert [p["ids"] for p in posted] == [[5], [6]]
    assert posted[0]["subtype_xmlid"] == "mail.mt_note" and "dropped" in posted[0]["body"]


def test_repr_and_settings_hide_the_key(make: Make) -> None:
    connector = make()
    assert KEY not in repr(connector) and KEY not in repr(OdooSettings(base_url=BASE, api_key=KEY))
