"""The Zoho connector's requests, asserted with respx and checked against Zoho's OpenAPI documents.

Answers are built from the documented samples (Get Records, Update Records, Deleted Records,
Get Pipelines, the token answer and the notification callback) in
``../shared/research/crm-apis-zoho-salesforce-odoo-trello-clinchpad.md`` section 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.zoho import SPEC, ZohoConnector, ZohoSettings
from connectors.zoho.webhooks import watch_body
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import BuildContext
from tests.connectors.zoho_oas import validate

API = "https://www.zohoapis.com"
EU = "https://www.zohoapis.eu"
ACCOUNTS = "https://accounts.zoho.com"
MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
USER = "554023000000235011"
PIPELINE = {
    "pipeline": [
        {
            "display_value": "Standard (Standard)",
            "default": True,
            "actual_value": "Standard (Standard)",
            "id": "3652397000003097001",
            "child_available": False,
            "maps": [
                {
                    "display_value": name,
                    "sequence_number": n,
                    "actual_value": actual,
                    "id": f"36523970000000068{n:02d}",
                    "forecast_category": {"name": "Pipeline", "id": "3652397000000006787"},
                    "forecast_type": kind,
                }
                for n, (name, actual, kind) in enumerate(
                    [
                        ("Qualification", "Qualification", "Open"),
                        ("Identify Decision Makers", "Id. Decision Makers", "Open"),
                        ("Negotiation/Review", "Negotiation/Review", "Open"),
                        ("Closed Won", "Closed Won", "Closed Won"),
                        ("Closed Lost", "Closed Lost", "Closed Lost"),
                        ("Closed-Lost to Competition", "Closed Lost to Competition", "Closed Lost"),
                    ],
                    start=1,
                )
            ],
        }
    ]
}


def _build(section: ZohoSettings, mappings: Mappings) -> ZohoConnector:
    ctx = BuildContext(section, None, lambda: mappings, None, lambda: datetime.now(UTC))
    connector = SPEC.build(ctx)
    assert isinstance(connector, ZohoConnector)
    return connector


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS)


@pytest.fixture
def zoho(mappings: Mappings) -> Iterator[tuple[ZohoConnector, respx.MockRouter]]:
    section = ZohoSettings(
        client_id="1000.CLIENT",
        client_secret=SecretStr("s3cret"),
        refresh_token=SecretStr("1000.refresh"),
        user_id=USER,
    )
    ctx = BuildContext(
        section=section,
        settings=None,
        mappings=lambda: mappings,
        limiter=None,
        clock=lambda: datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
    )
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{ACCOUNTS}/oauth/v2/token").respond(
            json={
                "access_token": "1000.access",
                "scope": "ZohoCRM.modules.ALL",
                "api_domain": API,
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )
        router.get(f"{API}/crm/v8/settings/layouts").respond(
            json={"layouts": [{"id": "3652397000000091055", "name": "Standard"}]}
        )
        router.get(f"{API}/crm/v8/settings/pipeline").respond(json=PIPELINE)
        connector = SPEC.build(ctx)
        assert isinstance(connector, ZohoConnector)
        yield connector, router
        connector.close()


def _deal(n: int, *, stage: str = "Qualification", at: str = "2026-10-01T11:17:33+05:30") -> dict[str, Any]:
    return {
        "id": f"5540230000{n:09d}",
        "Deal_Name": f"Deal {n}",
        "Stage": stage,
        "Pipeline": "Standard (Standard)",
        "Amount": 1500.5,
        "Closing_Date": "2026-12-09",
        "Modified_Time": at,
        "Created_Time": at,
        "Owner": {"name": "Patricia Boyle", "id": USER},
        "Modified_By": {"name": "Patricia Boyle", "id": "1"},
    }


def _page(rows: list[dict[str, Any]], *, more: bool, token: str | None, page: int) -> dict[str, Any]:
    return {
        "data": rows,
        "info": {
            "call": False,
            "per_page": 200,
            "next_page_token": token,
            "count": len(rows),
            "sort_by": "Modified_Time",
            "page": page,
            "previous_page_token": None,
            "page_token_expiry": "2026-11-03T15:08:14+05:30",
            "sort_order": "asc",
            "email": False,
            "more_records": more,
        },
    }


def test_the_token_is_refreshed_and_its_api_domain_used(mappings: Mappings) -> None:
    section = ZohoSettings(
        client_id="1000.CLIENT",
        client_secret=SecretStr("s3cret"),
        refresh_token=SecretStr("1000.r"),
        data_centre="eu",
    )
    with respx.mock(assert_all_called=True) as router:
        token = router.post("https://accounts.zoho.eu/oauth/v2/token").respond(
            json={
                "access_token": "1000.eu",
                "api_domain": "https://eu-moved.zohoapis.eu",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )
        layouts = router.get("https://eu-moved.zohoapis.eu/crm/v8/settings/layouts").respond(
            json={"layouts": [{"id": "9"}]}
        )
        router.get("https://eu-moved.zohoapis.eu/crm/v8/settings/pipeline").respond(json=PIPELINE)
        connector = _build(section, mappings)
        assert len(connector.list_stages()) == 6
        form = parse_qs(token.calls[0].request.content.decode())
        assert form == {
            "refresh_token": ["1000.r"],
            "client_id": ["1000.CLIENT"],
            "client_secret": ["s3cret"],
            "grant_type": ["refresh_token"],
        }
        assert layouts.calls[0].request.headers["Authorization"] == "Zoho-oauthtoken 1000.eu"
        assert "s3cret" not in repr(connector) and "1000.eu" not in repr(connector)
        connector.close()


def test_a_401_refreshes_once_and_resends(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    router.get(f"{API}/crm/v8/settings/layouts").mock(
        side_effect=[
            httpx.Response(
                401,
                json={
                    "code": "INVALID_TOKEN",
                    "details": {},
                    "message": "invalid oauth token",
                    "status": "error",
                },
            ),
            httpx.Response(200, json={"layouts": [{"id": "1"}]}),
        ]
    )
    assert len(connector.list_stages()) == 6
    assert router.routes[0].call_count == 2


def test_a_full_pull_pages_past_2000_records_with_page_token(
    zoho: tuple[ZohoConnector, respx.MockRouter],
) -> None:
    connector, router = zoho
    pages = [
        [_deal(p * 200 + i, at=f"2026-10-01T10:{p:02d}:{i % 60:02d}+00:00") for i in range(200)]
        for p in range(11)
    ]
    answers = [
        httpx.Response(
            200, json=_page(rows, more=p < 10, token=f"tok{p + 1}" if p < 10 else None, page=p + 1)
        )
        for p, rows in enumerate(pages)
    ]
    for answer in answers:
        validate(json.loads(answer.content), "record", "/components/schemas/Response_Wrapper")
    route = router.get(f"{API}/crm/v8/Deals").mock(side_effect=answers)
    result = list(connector.pull_changes("deals", None))
    assert sum(len(p.records) for p in result) == 2200 and result[-1].done
    sent = [dict(call.request.url.params) for call in route.calls]
    assert sent[0] == {
        "fields": "Deal_Name,Stage,Pipeline,Amount,Closing_Date,Owner,Contact_Name,Account_Name,"
        "Created_Time,Modified_Time,Modified_By",
        "per_page": "200",
        "sort_by": "Modified_Time",
        "sort_order": "asc",
        "page": "1",
    }
    assert [s.get("page_token") for s in sent[1:]] == [f"tok{n}" for n in range(1, 11)]
    assert all("page" not in s and s["fields"] == sent[0]["fields"] for s in sent[1:])
    assert all("If-Modified-Since" not in call.request.headers for call in route.calls)
    assert route.calls[0].request.headers["Authorization"] == "Zoho-oauthtoken 1000.access"


def test_204_is_no_rows_and_the_cursor_stays(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    route = router.get(f"{API}/crm/v8/Deals").respond(204)
    cursor = "2026-10-01T05:47:33+00:00|554023000000000001"
    result = list(connector.pull_changes("deals", cursor))
    assert [p.records for p in result] == [(), ()] and result[-1].cursor == cursor and result[-1].done
    assert route.calls[0].request.headers["If-Modified-Since"] == "2026-10-01T05:47:32+00:00"


def test_the_record_at_the_cursor_is_not_a_new_change(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    at = "2026-10-01T11:17:33+05:30"  # 05:47:33 UTC
    router.get(f"{API}/crm/v8/Deals").respond(
        json=_page([_deal(1, at=at), _deal(2, at=at)], more=False, token=None, page=1)
    )
    cursor = f"2026-10-01T05:47:33+00:00|{_deal(1)['id']}"
    records = [r for p in connector.pull_changes("deals", cursor) for r in p.records]
    assert [r.external_id for r in records] == [_deal(2)["id"]]
    assert records[0].stage is StageKey.QUALIFIED and records[0].amount == Decimal("1500.5")


class _SameSecondZoho:
    """``GET /crm/v8/Deals`` over ``deals``, sorted by ``Modified_Time`` (ties in no promised order),
    paged ``per_page`` at a time with ``page_token``, ``If-Modified-Since`` compared with ``inclusive``
    ``>=`` or ``>`` (Zoho does not document which)."""

    def __init__(self, *, inclusive: bool, per_page: int = 2) -> None:
        self.deals: list[dict[str, Any]] = []
        self.inclusive = inclusive
        self.per_page = per_page

    def __call__(self, request: httpx.Request) -> httpx.Response:
        rows = sorted(self.deals, key=lambda d: datetime.fromisoformat(d["Modified_Time"]))
        since = request.headers.get("If-Modified-Since")
        if since is not None:
            moment = datetime.fromisoformat(since)
            after = (lambda t: t >= moment) if self.inclusive else (lambda t: t > moment)
            rows = [d for d in rows if after(datetime.fromisoformat(d["Modified_Time"]))]
        start = int(request.url.params.get("page_token") or 0)
        chunk = rows[start : start + self.per_page]
        if not chunk:
            return httpx.Response(204)
        more = start + self.per_page < len(rows)
        token = str(start + self.per_page) if more else None
        return httpx.Response(200, json=_page(chunk, more=more, token=token, page=start // self.per_page + 1))


@pytest.fixture(params=[True, False], ids=["since>=", "since>"])
def same_second(
    zoho: tuple[ZohoConnector, respx.MockRouter], request: pytest.FixtureRequest
) -> tuple[ZohoConnector, _SameSecondZoho, respx.Route]:
    connector, router = zoho
    fake = _SameSecondZoho(inclusive=request.param)
    return connector, fake, router.get(f"{API}/crm/v8/Deals").mock(side_effect=fake)


def test_deals_modified_in_the_same_second_are_each_pulled_once(
    same_second: tuple[ZohoConnector, _SameSecondZoho, respx.Route],
) -> None:
    connector, fake, _ = same_second
    t1, t2, t3 = "2026-10-01T10:00:00+00:00", "2026-10-01T10:00:01+00:00", "2026-10-01T10:00:02+00:00"
    # ids out of order within the second: Zoho promises no tie order
    a, b, c, d, e = (_deal(n, at=t) for n, t in ((1, t1), (5, t2), (3, t2), (4, t2), (2, t3)))

    def pulled(cursor: str | None) -> tuple[list[str], str | None]:
        pages = list(connector.pull_changes("deals", cursor))
        assert pages[-1].done
        return [r.external_id for p in pages for r in p.records], pages[-1].cursor

    # Given A at t1, then B and C in the same second t2, split by the page boundary [A, B] | [C]
    fake.deals = [a, b, c]
    pages = list(connector.pull_changes("deals", None))
    assert [[r.external_id for r in p.records] for p in pages] == [[a["id"], b["id"]], [c["id"]], []]
    first_page, last = pages[0].cursor, pages[-1].cursor
    # When the pull stopped after its first page, the next one resumes with C only
    assert pulled(first_page)[0] == [c["id"]]
    # When nothing changed, the records at the cursor (B and C, at t2) are not changes again
    assert pulled(last) == ([], last)
    # When D is modified in the same second t2 after that poll, and E later, each is pulled once
    fake.deals = [a, b, c, d, e]
    ids, cursor = pulled(last)
    assert ids == [d["id"], e["id"]]
    assert pulled(cursor)[0] == []
    # And the first page's cursor still yields everything after it exactly once
    assert sorted(pulled(first_page)[0]) == sorted([c["id"], d["id"], e["id"]])


def test_a_deal_changed_again_in_the_cursors_second_is_pulled_again(
    same_second: tuple[ZohoConnector, _SameSecondZoho, respx.Route],
) -> None:
    connector, fake, route = same_second
    at = "2026-10-01T11:17:33+05:30"  # 05:47:33 UTC; Modified_Time has second precision

    def pulled(cursor: str | None) -> tuple[list[tuple[str, StageKey | None]], str | None]:
        pages = list(connector.pull_changes("deals", cursor))
        assert pages[-1].done
        return [(r.external_id, r.stage) for p in pages for r in p.records], pages[-1].cursor

    # Given deals 1 and 2 pulled at one second
    one, two = _deal(1, at=at), _deal(2, at=at)
    fake.deals = [one, two]
    first, cursor = pulled(None)
    assert first == [(one["id"], StageKey.QUALIFIED), (two["id"], StageKey.QUALIFIED)]
    assert cursor is not None and cursor.startswith("2026-10-01T05:47:33+00:00|")
    # When nothing changed, neither record at the cursor is a change again
    assert pulled(cursor) == ([], cursor)
    # When deal 1 moves on later in that same second (same Modified_Time, another stage)
    fake.deals = [{**one, "Stage": "Negotiation/Review"}, two]
    again, moved = pulled(cursor)
    # Then it is pulled once with its new stage, deal 2 is not, and the next poll finds nothing
    assert again == [(one["id"], StageKey.NEGOTIATION)]
    assert pulled(moved) == ([], moved)
    assert {call.request.headers["If-Modified-Since"] for call in route.calls[2:]} == {
        "2026-10-01T05:47:32+00:00"
    }


def test_a_cursor_of_bare_ids_still_holds_back_the_records_at_it(
    zoho: tuple[ZohoConnector, respx.MockRouter],
) -> None:
    connector, router = zoho
    at = "2026-10-01T11:17:33+05:30"
    moved = {**_deal(1, at=at), "Stage": "Negotiation/Review"}
    router.get(f"{API}/crm/v8/Deals").respond(
        json=_page([moved, _deal(2, at=at)], more=False, token=None, page=1)
    )
    # A cursor written before digests were kept (or by the deleted stream) names ids only
    pages = list(connector.pull_changes("deals", f"2026-10-01T05:47:33+00:00|{moved['id']}"))
    assert [r.external_id for p in pages for r in p.records] == [_deal(2)["id"]]
    assert pages[-1].cursor is not None and f"|{moved['id']}," in pages[-1].cursor


def test_the_stage_clock_starts_no_later_than_modified_time(
    zoho: tuple[ZohoConnector, respx.MockRouter],
) -> None:
    connector, router = zoho
    router.get(f"{API}/crm/v8/Deals").respond(
        json=_page([_deal(1, at="2026-08-01T09:00:00+05:30")], more=False, token=None, page=1)
    )
    (record,) = [r for p in connector.pull_changes("deals", None) for r in p.records]
    assert record.stage_changed_at == record.updated_at == datetime(2026, 8, 1, 3, 30, tzinfo=UTC)


def test_display_and_stored_stage_values_and_several_lost_stages(
    zoho: tuple[ZohoConnector, respx.MockRouter],
) -> None:
    connector, router = zoho
    rows = [
        _deal(1, stage="Identify Decision Makers"),
        _deal(2, stage="Id. Decision Makers"),
        _deal(3, stage="Closed-Lost to Competition"),
        _deal(4, stage="Closed Won"),
    ]
    router.get(f"{API}/crm/v8/Deals").respond(json=_page(rows, more=False, token=None, page=1))
    records = [r for p in connector.pull_changes("deals", None) for r in p.records]
    assert [(r.stage, r.status) for r in records] == [
        (StageKey.PROPOSAL, "open"),
        (StageKey.PROPOSAL, "open"),
        (StageKey.LOST, "lost"),
        (StageKey.WON, "won"),
    ]


def test_a_deleted_deal_comes_from_the_deleted_list(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    body = {
        "data": [
            {
                "deleted_by": {"name": "Patricia Boyle", "id": "1"},
                "id": "554023000000527003",
                "display_name": "Deal 3",
                "type": "recycle",
                "created_by": {"name": "Patricia Boyle", "id": "1"},
                "deleted_time": "2026-10-02T11:17:33+05:30",
            }
        ],
        "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
    }
    validate(body, "record", "/components/schemas/Deleted_Records_Wrapper")
    route = router.get(f"{API}/crm/v8/Deals/deleted").respond(json=body)
    result = list(connector.pull_changes("deals_deleted", "2026-10-01T00:00:00+00:00"))
    records = [r for p in result for r in p.records]
    assert [(r.external_id, r.status, r.updated_at) for r in records] == [
        ("554023000000527003", "deleted", datetime(2026, 10, 2, 5, 47, 33, tzinfo=UTC))
    ]
    assert dict(route.calls[0].request.url.params) == {"type": "all", "page": "1", "per_page": "200"}
    assert route.calls[0].request.headers["If-Modified-Since"] == "2026-09-30T23:59:59+00:00"
    assert result[-1].cursor == "2026-10-02T05:47:33+00:00|554023000000527003"


def test_a_partial_batch_failure_fails_only_its_record(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    answer = {
        "data": [
            {
                "code": "SUCCESS",
                "details": {
                    "Modified_Time": "2026-10-02T11:17:33+05:30",
                    "Modified_By": {"name": "Sync", "id": USER},
                    "Created_Time": "2026-05-02T11:17:33+05:30",
                    "id": "554023000000527003",
                    "Created_By": {"name": "Sync", "id": USER},
                },
                "message": "record updated",
                "status": "success",
            },
            {
                "code": "INVALID_DATA",
                "details": {"id": "554023000000497021"},
                "message": "the id given seems to be invalid",
                "status": "error",
            },
        ]
    }
    # The PUT answer's own schema is a oneOf that any object with "data" matches twice (API_Exception
    # has no required keys), so each per-record answer is checked against its branch instead.
    validate(answer["data"][0], "record", "/components/schemas/Success_Response")
    validate(answer["data"][1], "record", "/components/schemas/API_Exception")
    route = router.put(f"{API}/crm/v8/Deals").respond(json=answer)
    updates = [
        CanonicalUpdate(
            target="zoho",
            idempotency_key="k1",
            origin="hubspot",
            external_id="554023000000527003",
            stage=StageKey.WON,
            amount=Decimal("20"),
        ),
        CanonicalUpdate(
            target="zoho", idempotency_key="k2", origin="hubspot", external_id="554023000000497021", title="T"
        ),
    ]
    results = connector.apply_updates(updates)
    sent = json.loads(route.calls[0].request.content)
    validate(sent, "record", "/components/schemas/Body_Wrapper")
    assert sent == {
        "data": [
            {
                "id": "554023000000527003",
                "Pipeline": "Standard (Standard)",
                "Stage": "Closed Won",
                "Amount": 20,
            },
            {"id": "554023000000497021", "Deal_Name": "T"},
        ]
    }
    assert route.calls[0].request.headers["content-type"] == "application/json"
    assert [(r.idempotency_key, r.ok, r.retryable) for r in results] == [
        ("k1", True, False),
        ("k2", False, False),
    ]
    assert results[0].updated_at == datetime(2026, 10, 2, 5, 47, 33, tzinfo=UTC)
    assert results[1].error is not None and "INVALID_DATA" in results[1].error


def test_pushes_go_in_batches_of_100(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho

    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["data"]
        ok = {"code": "SUCCESS", "message": "record updated", "status": "success"}
        return httpx.Response(200, json={"data": [{**ok, "details": {"id": i["id"]}} for i in items]})

    route = router.put(f"{API}/crm/v8/Deals").mock(side_effect=answer)
    updates = [
        CanonicalUpdate(
            target="zoho", idempotency_key=str(n), origin="hubspot", external_id=str(n), title="x"
        )
        for n in range(150)
    ]
    results = connector.apply_updates(updates)
    assert [len(json.loads(c.request.content)["data"]) for c in route.calls] == [100, 50]
    assert [r.external_id for r in results] == [str(n) for n in range(150)] and all(r.ok for r in results)


def test_a_429_is_retried_after_backing_off(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, router = zoho
    limited = {"code": "TOO_MANY_REQUESTS", "details": {}, "message": "too many requests", "status": "error"}
    route = router.get(f"{API}/crm/v8/Deals").mock(
        side_effect=[
            httpx.Response(429, json=limited),
            httpx.Response(
                200,
                json=_page([_deal(1)], more=False, token=None, page=1),
                headers={"X-API-CREDITS-REMAINING": "24000"},
            ),
        ]
    )
    records = [r for p in connector.pull_changes("deals", None) for r in p.records]
    assert route.call_count == 2 and len(records) == 1
    assert connector.credits_remaining == 24000


CALLBACK = {
    "server_time": 1718115953625,
    "affected_values": [{"record_id": "5725767000003000010", "values": {"Stage": "Closed Won"}}],
    "query_params": {},
    "module": "Deals",
    "resource_uri": "https://www.zohoapis.com/crm/v2/Deals",
    "ids": ["5725767000003000010"],
    "affected_fields": [{"5725767000003000010": ["Stage"]}],
    "operation": "update",
    "channel_id": "1000000068001",
    "token": "TOKEN_FOR_VERIFICATION_OF_1000000068001",
}


@pytest.mark.parametrize(
    ("token", "channel", "ok"),
    [
        ("TOKEN_FOR_VERIFICATION_OF_1000000068001", "1000000068001", True),
        ("TOKEN_FOR_VERIFICATION_OF_1000000068002", "1000000068001", False),
        ("TOKEN_FOR_VERIFICATION_OF_1000000068001", "1000000068009", False),
    ],
)
def test_callbacks_are_checked_by_token_and_channel(
    mappings: Mappings, token: str, channel: str, ok: bool
) -> None:
    section = ZohoSettings(refresh_token=SecretStr("r"), webhook_token=SecretStr(token), channel_id=channel)
    connector = _build(section, mappings)
    request = WebhookRequest(
        "POST", "https://sync.example.test/webhooks/zoho", {}, json.dumps(CALLBACK).encode(), {}
    )
    if ok:
        connector.verify_webhook(request)
    else:
        with pytest.raises(SignatureError):
            connector.verify_webhook(request)
    connector.close()


def test_callbacks_parse_into_one_event_per_id(zoho: tuple[ZohoConnector, respx.MockRouter]) -> None:
    connector, _ = zoho
    events = connector.parse_webhook(
        json.dumps({**CALLBACK, "ids": ["1", "2"], "affected_fields": [{"1": ["Stage"]}]}).encode()
    )
    assert [(e.object_id, e.action, e.property_name, e.handled) for e in events] == [
        ("1", "update", "Stage", True),
        ("2", "update", None, True),
    ]
    assert events[0].occurred_at == datetime.fromtimestamp(1718115953.625, UTC)
    leads = connector.parse_webhook(json.dumps({**CALLBACK, "module": "Leads"}).encode())
    assert not leads[0].handled and leads[0].reason
    with pytest.raises(PayloadError):
        connector.parse_webhook(b'{"module": "Deals", "operation": "update"}')


def test_the_watch_body_follows_the_notifications_document() -> None:
    expiry = datetime(2026, 11, 2, 9, 0, tzinfo=UTC) + timedelta(days=6)
    body = watch_body(
        channel_id="1000000068001",
        notify_url="https://sync.example.test/webhooks/zoho",
        token=SecretStr("t" * 50),
        expiry=expiry,
    )
    validate(body, "notifications", "/components/schemas/Body_Wrapper")
    assert body["watch"][0]["channel_expiry"] == "2026-11-08T09:00:00+00:00"
    with pytest.raises(PayloadError):
        watch_body(channel_id="1", notify_url="https://x.test", token=SecretStr("t" * 51), expiry=expiry)
