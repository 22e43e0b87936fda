"""HubSpot connector against respx route sets: what is sent, and what comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.hubspot import HubSpotConnector, from_canonical, from_settings, to_canonical
from connectors.hubspot.settings import HubSpotSettings
from sync_worker.canonical import CanonicalUpdate, LeakFlag, RemovalMode, StageKey
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError, PermanentError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.settings import Settings

from .provider_oas import validate_request, validate_response
from .removals import removal

FIXTURES = Path(__file__).parent / "fixtures" / "hubspot"
BASE = "https://api.hubapi.com"
SEARCH = f"{BASE}/crm/v3/objects/deals/search"
ASSOCIATIONS = f"{BASE}/crm/v4/associations/deals/contacts/batch/read"


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deal(deal_id: str, modified_ms: int, stage: str = "qualifiedtobuy") -> dict[str, Any]:
    return {
        "id": deal_id,
        "properties": {
            "dealname": f"Deal {deal_id}",
            "dealstage": stage,
            "pipeline": "default",
            "hs_lastmodifieddate": _iso(modified_ms),
        },
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": _iso(modified_ms),
        "archived": False,
    }


class RecordingLimiter:
    def __init__(self) -> None:
        self.buckets: list[str] = []

    def acquire(self, bucket: str) -> None:
        self.buckets.append(bucket)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        return None


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(Path(__file__).resolve().parents[2] / "mappings")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def hub(mappings: Mappings, sleeps: list[float], limiter: RecordingLimiter) -> Iterator[HubSpotConnector]:
    connector = HubSpotConnector(
        mappings, token=SecretStr("pat-na1-secret"), sleep=sleeps.append, limiter=limiter, max_attempts=3
    )
    yield connector
    connector.close()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True) as mock:
        yield mock


def _json(call: Any) -> Any:
    return json.loads(call.request.content)


def _no_contacts(router: respx.MockRouter) -> respx.Route:
    """Deals without associated contacts: the associations batch read finds none."""
    return router.post(ASSOCIATIONS).respond(200, json={"status": "COMPLETE", "results": []})


# -- stages and translation -------------------------------------------------------------------------


def test_list_stages_sends_bearer_and_parses_string_metadata(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    route = router.get(f"{BASE}/crm/v3/pipelines/deals").respond(200, json=_fixture("pipelines_deals.json"))
    stages = hub.list_stages()
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer pat-na1-secret"
    assert request.headers["user-agent"].startswith("sync-worker/")
    assert [s.stage_id for s in stages][:2] == ["appointmentscheduled", "qualifiedtobuy"]
    won = next(s for s in stages if s.stage_id == "closedwon")
    assert won.probability == 1.0 and won.is_closed and won.pipeline_label == "Sales Pipeline"
    assert stages[0].probability == 0.2 and not stages[0].is_closed
    assert isinstance(hub, Connector)


def test_to_canonical_doc_search_results(mappings: Mappings) -> None:
    first, second = _fixture("deals_search.json")["results"]
    record = to_canonical(first, mappings)
    assert record.external_id == "512" and record.source == "hubspot" and record.kind == "deal"
    assert record.stage is StageKey.MEETING and record.status == "open" and record.unmapped is None
    assert record.amount == Decimal("1500.00") and record.currency == "EUR"
    assert record.close_date == date(2019, 12, 7)
    assert record.updated_at == datetime(2019, 12, 7, 16, 50, 6, 678000, tzinfo=UTC)
    assert record.owner_id == "910901" and record.title == "Custom data integrations"
    unknown = to_canonical(second, mappings)
    assert unknown.stage is None and unknown.amount is None and unknown.close_date is None
    assert unknown.unmapped is not None and unknown.unmapped.stage == "12345678"
    assert unknown.status == "open"
    won = to_canonical({**first, "properties": {**first["properties"], "dealstage": "closedwon"}}, mappings)
    assert won.stage is StageKey.WON and won.status == "won"


def test_from_canonical_writes_mapped_stage_amount_string_and_iso_closedate(mappings: Mappings) -> None:
    update = CanonicalUpdate(
        target="hubspot",
        idempotency_key="k1",
        origin="pipedrive",
        external_id="512",
        stage=StageKey.NEGOTIATION,
        amount=Decimal("1234.50"),
        close_date=date(2024, 3, 31),
        title="T",
    )
    assert from_canonical(update, mappings) == {
        "dealstage": "contractsent",
        "pipeline": "default",
        "dealname": "T",
        "amount": "1234.50",
        "closedate": "2024-03-31T00:00:00.000Z",
    }
    lost = CanonicalUpdate(
        target="hubspot", idempotency_key="k2", origin="x", status="lost", lost_reason="price"
    )
    assert from_canonical(lost, mappings) == {
        "dealstage": "closedlost",
        "pipeline": "default",
        "closed_lost_reason": "price",
    }
    with pytest.raises(PermanentError, match="deleting"):
        from_canonical(
            CanonicalUpdate(target="hubspot", idempotency_key="k3", origin="x", status="deleted"), mappings
        )


# -- incremental pull -------------------------------------------------------------------------------


def test_pull_pages_to_the_end_with_after_on_the_search_bucket(
    hub: HubSpotConnector, router: respx.MockRouter, limiter: RecordingLimiter
) -> None:
    _no_contacts(router)
    t0 = _ms("2024-03-01T10:00:00+00:00")
    route = router.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "total": 3,
                    "results": [_deal("1", t0), _deal("2", t0 + 5)],
                    "paging": {"next": {"after": "2"}},
                },
            ),
            httpx.Response(200, json={"total": 3, "results": [_deal("3", t0 + 9, "closedwon")]}),
        ]
    )
    pages = list(hub.pull_changes("deals", None))
    assert [p.done for p in pages] == [False, True]
    assert [r.external_id for p in pages for r in p.records] == ["1", "2", "3"]
    assert pages[1].records[0].status == "won"
    first, second = (_json(c) for c in route.calls)
    assert first == {
        "filterGroups": [
            {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}
        ],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": first["properties"],
        "limit": 200,
    }
    assert {"hs_lastmodifieddate", "dealstage", "pipeline", "amount", "closedate"} <= set(first["properties"])
    assert second["after"] == "2" and second["filterGroups"] == first["filterGroups"]
    assert json.loads(pages[0].cursor or "") == {"ts": t0 + 5, "ids": ["2"]}
    assert json.loads(pages[1].cursor or "") == {"ts": t0 + 9, "ids": ["3"]}
    assert limiter.buckets == ["search", "default", "search", "default"]  # associations: default bucket


def test_pull_resumes_from_cursor_and_skips_ids_seen_at_that_instant(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    _no_contacts(router)
    t0 = _ms("2024-03-01T10:00:00+00:00")
    route = router.post(SEARCH).respond(
        200, json={"results": [_deal("1", t0), _deal("4", t0), _deal("5", t0 + 1)]}
    )
    cursor = json.dumps({"ts": t0, "ids": ["1"]})
    (page,) = hub.pull_changes("deals", cursor)
    assert _json(route.calls.last)["filterGroups"][0]["filters"][0]["value"] == str(t0)
    assert [r.external_id for r in page.records] == ["4", "5"]
    assert page.done and json.loads(page.cursor or "") == {"ts": t0 + 1, "ids": ["5"]}
    # A bare millisecond string is a valid cursor too.
    (again,) = hub.pull_changes("deals", str(t0 + 1))
    assert _json(route.calls.last)["filterGroups"][0]["filters"][0]["value"] == str(t0 + 1)
    assert [r.external_id for r in again.records] == ["5"]  # older than the cursor: not re-delivered


def test_pull_reslices_the_window_at_10000_results(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    _no_contacts(router)
    t0 = _ms("2024-03-01T10:00:00+00:00")
    route = router.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "results": [_deal("1", t0), _deal("2", t0 + 7)],
                    "paging": {"next": {"after": "10000"}},
                },
            ),
            # The new window starts at t0+7 and returns deal 2 again: it is not delivered twice.
            httpx.Response(
                200, json={"results": [_deal("2", t0 + 7), _deal("3", t0 + 7), _deal("4", t0 + 8)]}
            ),
        ]
    )
    pages = list(hub.pull_changes("deals", None))
    assert [[r.external_id for r in p.records] for p in pages] == [["1", "2"], ["3", "4"]]
    second = _json(route.calls[1])
    assert "after" not in second
    assert second["filterGroups"][0]["filters"][0]["value"] == str(t0 + 7)


def test_pull_reslices_when_hubspot_answers_400_past_the_limit(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    _no_contacts(router)
    t0 = _ms("2024-03-01T10:00:00+00:00")
    route = router.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                200, json={"results": [_deal("1", t0 + 3)], "paging": {"next": {"after": "opaque"}}}
            ),
            httpx.Response(
                400, json={"status": "error", "message": "too many results", "category": "VALIDATION_ERROR"}
            ),
            httpx.Response(200, json={"results": [_deal("1", t0 + 3), _deal("9", t0 + 4)]}),
        ]
    )
    pages = list(hub.pull_changes("deals", None))
    assert [r.external_id for p in pages for r in p.records] == ["1", "9"]
    assert _json(route.calls[1])["after"] == "opaque"
    assert "after" not in _json(route.calls[2])


def test_unknown_stream_and_bad_cursor(hub: HubSpotConnector) -> None:
    with pytest.raises(PermanentError, match="unknown stream"):
        hub.pull_changes("tickets", None)
    with pytest.raises(PermanentError, match="cursor"):
        list(hub.pull_changes("deals", "{nope"))


def test_archived_deals_stream_yields_deleted_records(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    old, new = _ms("2024-01-01T00:00:00+00:00"), _ms("2024-03-01T00:00:00+00:00")

    def archived(deal_id: str, at: int) -> dict[str, Any]:
        return {**_deal(deal_id, at - 1000), "archived": True, "archivedAt": _iso(at)}

    route = router.get(f"{BASE}/crm/v3/objects/deals").mock(
        side_effect=[
            httpx.Response(200, json={"results": [archived("7", old)], "paging": {"next": {"after": "7"}}}),
            httpx.Response(200, json={"results": [archived("8", new)]}),
            httpx.Response(200, json={"results": [archived("7", old), archived("8", new)]}),
        ]
    )
    pages = list(hub.pull_changes("deals_archived", None))
    records = [r for p in pages for r in p.records]
    assert [(r.external_id, r.status) for r in records] == [("7", "deleted"), ("8", "deleted")]
    assert records[1].updated_at == datetime(2024, 3, 1, tzinfo=UTC)
    first = parse_qs(route.calls[0].request.url.query.decode())
    assert first["archived"] == ["true"] and first["limit"] == ["100"] and "after" not in first
    assert "dealstage" in first["properties"][0].split(",")
    assert parse_qs(route.calls[1].request.url.query.decode())["after"] == ["7"]
    assert json.loads(pages[-1].cursor or "") == {"since": new}
    # Next run: only deals archived since the cursor come back.
    (again,) = hub.pull_changes("deals_archived", pages[-1].cursor)
    assert [r.external_id for r in again.records] == ["8"]


# -- HTTP failures ----------------------------------------------------------------------------------


def test_429_with_retry_after_waits_that_long(
    hub: HubSpotConnector, router: respx.MockRouter, sleeps: list[float]
) -> None:
    route = router.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                429, headers={"Retry-After": "7"}, json={"status": "error", "category": "RATE_LIMITS"}
            ),
            httpx.Response(200, json={"results": []}),
        ]
    )
    (page,) = hub.pull_changes("deals", None)
    assert page.done and route.call_count == 2 and sleeps and sleeps[0] >= 7


def test_429_without_retry_after_backs_off_briefly(
    hub: HubSpotConnector, router: respx.MockRouter, sleeps: list[float]
) -> None:
    route = router.post(SEARCH).mock(
        side_effect=[httpx.Response(429), httpx.Response(200, json={"results": []})]
    )
    list(hub.pull_changes("deals", None))
    assert route.call_count == 2 and len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_5xx_then_success(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/crm/v3/pipelines/deals").mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(200, json=_fixture("pipelines_deals.json")),
        ]
    )
    assert len(hub.list_stages()) == 7 and route.call_count == 3


def test_401_with_a_static_token_is_an_auth_error_without_retry(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    route = router.get(f"{BASE}/crm/v3/pipelines/deals").respond(
        401, json={"status": "error", "message": "expired"}
    )
    with pytest.raises(AuthError) as caught:
        hub.list_stages()
    assert route.call_count == 1 and "pat-na1-secret" not in str(caught.value)


def test_malformed_json_body_is_transient_after_bounded_retries(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    route = router.post(SEARCH).respond(
        200, content=b"{truncated", headers={"content-type": "application/json"}
    )
    with pytest.raises(TransientError, match="not JSON"):
        list(hub.pull_changes("deals", None))
    assert route.call_count == 3


# -- push -------------------------------------------------------------------------------------------


def test_apply_updates_splits_a_207_and_matches_creates_by_trace_id(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.get(f"{BASE}/crm/v3/pipelines/deals").respond(200, json=_fixture("pipelines_deals.json"))
    update_route = router.post(f"{BASE}/crm/v3/objects/deals/batch/update").respond(
        207, json=_fixture("batch_update_207.json")
    )
    create_route = router.post(f"{BASE}/crm/v3/objects/deals/batch/create").respond(
        201,
        json={
            "status": "COMPLETE",
            "results": [
                {
                    "id": "777",
                    "objectWriteTraceId": "k-create",
                    "properties": {},
                    "updatedAt": "2024-03-01T10:00:01.000Z",
                    "createdAt": "2024-03-01T10:00:01.000Z",
                    "archived": False,
                }
            ],
        },
    )
    updates = [
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-ok",
            origin="pipedrive",
            external_id="512",
            stage=StageKey.NEGOTIATION,
            amount=Decimal("10"),
        ),
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-create",
            origin="pipedrive",
            title="New deal",
            stage=StageKey.PROPOSAL,
        ),
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-gone",
            origin="pipedrive",
            external_id="999",
            close_date=date(2024, 5, 1),
        ),
    ]
    results = hub.apply_updates(updates)
    assert [(r.idempotency_key, r.ok, r.external_id) for r in results] == [
        ("k-ok", True, "512"),
        ("k-create", True, "777"),
        ("k-gone", False, "999"),
    ]
    assert results[0].updated_at == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert "OBJECT_NOT_FOUND" in (results[2].error or "") and not results[2].retryable
    assert _json(update_route.calls.last) == {
        "inputs": [
            {
                "id": "512",
                "properties": {"dealstage": "contractsent", "pipeline": "default", "amount": "10"},
                "objectWriteTraceId": "k-ok",
            },
            {
                "id": "999",
                "properties": {"closedate": "2024-05-01T00:00:00.000Z"},
                "objectWriteTraceId": "k-gone",
            },
        ]
    }
    assert _json(create_route.calls.last) == {
        "inputs": [
            {
                "properties": {
                    "dealstage": "decisionmakerboughtin",
                    "pipeline": "default",
                    "dealname": "New deal",
                },
                "objectWriteTraceId": "k-create",
            },
        ]
    }
    assert update_route.call_count == 1  # a 207 is never retried whole


def test_apply_updates_batches_by_100_and_never_twice_the_same_id(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        return httpx.Response(
            200,
            json={
                "status": "COMPLETE",
                "results": [
                    {"id": i["id"], "objectWriteTraceId": i["objectWriteTraceId"], "properties": {}}
                    for i in inputs
                ],
            },
        )

    route = router.post(f"{BASE}/crm/v3/objects/deals/batch/update").mock(side_effect=echo)
    updates = [
        CanonicalUpdate(target="hubspot", idempotency_key=f"k{i}", origin="x", external_id=str(i), title="t")
        for i in range(150)
    ]
    updates.append(
        CanonicalUpdate(target="hubspot", idempotency_key="dup", origin="x", external_id="3", title="u")
    )
    results = hub.apply_updates(updates)
    assert all(r.ok for r in results) and [r.idempotency_key for r in results][-1] == "dup"
    sizes = [len(_json(c)["inputs"]) for c in route.calls]
    assert sizes == [100, 51]
    for call in route.calls:
        ids = [i["id"] for i in _json(call)["inputs"]]
        assert len(ids) == len(set(ids))


def test_whole_batch_failures_become_per_update_results(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.post(f"{BASE}/crm/v3/objects/deals/batch/update").mock(
        side_effect=[
            httpx.Response(
                400,
                json={
                    "status": "error",
                    "message": "Property values were not valid",
                    "category": "VALIDATION_ERROR",
                },
            )
        ]
    )
    results = hub.apply_updates(
        [CanonicalUpdate(target="hubspot", idempotency_key="a", origin="x", external_id="1", title="t")]
    )
    assert not results[0].ok and not results[0].retryable and "not valid" in (results[0].error or "")


def test_leak_flag_set_and_cleared(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/crm/v3/objects/deals/batch/update").respond(
        200, json={"status": "COMPLETE", "results": []}
    )
    since = datetime(2024, 2, 1, 9, 30, tzinfo=UTC)
    flag = LeakFlag(
        rule="stalled", reason="42 days in Proposal", stage=StageKey.PROPOSAL, since=since, days_in_stage=42
    )
    hub.apply_updates(
        [
            CanonicalUpdate(
                target="hubspot", idempotency_key="f1", origin="leaks", external_id="1", flag=flag
            ),
            CanonicalUpdate(
                target="hubspot",
                idempotency_key="f2",
                origin="leaks",
                external_id="2",
                flag=LeakFlag(rule=None),
            ),
        ]
    )
    set_props, clear_props = (i["properties"] for i in _json(route.calls.last)["inputs"])
    assert set_props == {
        "sync_worker_leak_status": "stalled",
        "sync_worker_leak_reason": "42 days in Proposal",
        "sync_worker_leak_stage": "proposal",
        "sync_worker_leak_since": "2024-02-01T09:30:00.000Z",
        "sync_worker_leak_days": "42",
    }
    assert set(clear_props.values()) == {""} and len(clear_props) == 5


def test_ensure_flag_properties_creates_only_what_is_missing(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.get(f"{BASE}/crm/v3/properties/deals/groups").respond(
        200, json={"results": [{"name": "dealinformation"}]}
    )
    group_post = router.post(f"{BASE}/crm/v3/properties/deals/groups").respond(
        201, json={"name": "sync_worker"}
    )
    router.get(f"{BASE}/crm/v3/properties/deals").respond(
        200, json={"results": [{"name": "dealname"}, {"name": "sync_worker_leak_status"}]}
    )
    created_names: list[str] = []

    def create(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["name"] == "sync_worker_leak_days":
            return httpx.Response(
                409, json={"status": "error", "message": "already exists", "category": "CONFLICT"}
            )
        created_names.append(body["name"])
        assert body["groupName"] == "sync_worker" and body["type"] and body["fieldType"]
        return httpx.Response(201, json=body)

    router.post(f"{BASE}/crm/v3/properties/deals").mock(side_effect=create)
    created = hub.ensure_flag_properties()
    assert _json(group_post.calls.last) == {"name": "sync_worker", "label": "Sync worker", "displayOrder": -1}
    assert created == [
        "group:sync_worker",
        "sync_worker_leak_reason",
        "sync_worker_leak_stage",
        "sync_worker_leak_since",
    ]
    assert created_names == created[1:]


def test_read_deals_uses_batch_read(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    _no_contacts(router)
    route = router.post(f"{BASE}/crm/v3/objects/deals/batch/read").respond(
        200, json={"status": "COMPLETE", "results": [_deal("5", 1_700_000_000_000)]}
    )
    (record,) = hub.read_deals(["5"])
    assert record.external_id == "5" and record.stage is StageKey.QUALIFIED
    body = _json(route.calls.last)
    assert body["inputs"] == [{"id": "5"}] and "dealstage" in body["properties"]


# -- OAuth ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _oauth(mappings: Mappings, clock: Clock) -> HubSpotConnector:
    return HubSpotConnector(
        mappings,
        client_id="cid",
        client_secret=SecretStr("csecret"),
        refresh_token=SecretStr("rt-1"),
        clock=clock,
        sleep=lambda s: None,
    )


def _token(access: str, refresh: str = "rt-2", expires_in: int = 1800) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in,
        },
    )


def test_oauth_refreshes_ahead_of_expiry(mappings: Mappings, router: respx.MockRouter) -> None:
    clock = Clock()
    hub = _oauth(mappings, clock)
    token_route = router.post(f"{BASE}/oauth/v1/token").mock(
        side_effect=[_token("at-1"), _token("at-2", "rt-3")]
    )
    api = router.get(f"{BASE}/crm/v3/pipelines/deals").respond(200, json={"results": []})
    hub.list_stages()
    assert parse_qs(token_route.calls[0].request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "client_id": ["cid"],
        "client_secret": ["csecret"],
        "refresh_token": ["rt-1"],
    }
    assert token_route.calls[0].request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert api.calls.last.request.headers["authorization"] == "Bearer at-1"
    clock.now += timedelta(seconds=1800 - 61)
    hub.list_stages()
    assert token_route.call_count == 1  # still more than the 60 s margin left
    clock.now += timedelta(seconds=2)
    hub.list_stages()
    assert token_route.call_count == 2 and api.calls.last.request.headers["authorization"] == "Bearer at-2"
    assert parse_qs(token_route.calls[1].request.content.decode())["refresh_token"] == ["rt-2"]
    hub.close()


def test_oauth_refreshes_once_after_a_401(mappings: Mappings, router: respx.MockRouter) -> None:
    hub = _oauth(mappings, Clock())
    token_route = router.post(f"{BASE}/oauth/v1/token").mock(side_effect=[_token("at-1"), _token("at-2")])
    api = router.get(f"{BASE}/crm/v3/pipelines/deals").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={"results": []})]
    )
    hub.list_stages()
    assert token_route.call_count == 2
    assert [c.request.headers["authorization"] for c in api.calls] == ["Bearer at-1", "Bearer at-2"]
    hub.close()


def test_oauth_refused_refresh_is_an_auth_error(mappings: Mappings, router: respx.MockRouter) -> None:
    hub = _oauth(mappings, Clock())
    router.post(f"{BASE}/oauth/v1/token").respond(
        400, json={"status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token"}
    )
    with pytest.raises(AuthError, match="refused") as caught:
        hub.list_stages()
    assert "rt-1" not in str(caught.value) and "csecret" not in str(caught.value)
    hub.close()


# -- settings ---------------------------------------------------------------------------------------


def test_from_settings(mappings: Mappings, router: respx.MockRouter) -> None:
    settings = Settings(
        hubspot=HubSpotSettings(token=SecretStr("pat-xyz"), base_url="https://sandbox.test:9000")
    )
    router.get("https://sandbox.test:9000/crm/v3/pipelines/deals").respond(200, json={"results": []})
    hub = from_settings(settings, mappings)
    assert hub.list_stages() == [] and "pat-xyz" not in repr(hub)
    hub.close()
    with pytest.raises(ConfigError, match="SYNC_HUBSPOT__TOKEN"):
        from_settings(Settings(), mappings)
    with pytest.raises(ConfigError, match="CLIENT_ID"):
        from_settings(Settings(hubspot=HubSpotSettings(refresh_token=SecretStr("r"))), mappings)


# -- removals (a route's on_delete) -----------------------------------------------------------------

ARCHIVE = f"{BASE}/crm/v3/objects/deals/batch/archive"


@pytest.mark.parametrize("mode", ["delete", "archive"])
def test_removals_archive_in_batches_of_100_as_the_spec_says(
    hub: HubSpotConnector, router: respx.MockRouter, mode: RemovalMode
) -> None:
    route = router.post(ARCHIVE).respond(204)
    ids = [str(1000 + n) for n in range(101)]
    results = hub.remove_records([removal("hubspot", i, mode) for i in ids])
    # Both modes archive (HubSpot's delete is an archive): two calls, 100 inputs then 1
    assert [len(_json(call)["inputs"]) for call in route.calls] == [100, 1]
    sent = [item["id"] for call in route.calls for item in _json(call)["inputs"]]
    assert sent == ids
    for call in route.calls:
        validate_request("hubspot", "/crm/v3/objects/deals/batch/archive", "POST", _json(call))
        validate_response(
            "hubspot", "/crm/v3/objects/deals/batch/archive", "POST", call.response.status_code, None
        )
    assert [(r.ok, r.external_id, r.idempotency_key) for r in results] == [
        (True, i, f"remove-{i}") for i in ids
    ]


def test_a_refused_batch_is_archived_deal_by_deal_and_a_gone_deal_counts_as_removed(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.post(ARCHIVE).respond(
        400, json={"status": "error", "message": "Invalid input", "category": "VALIDATION_ERROR"}
    )
    one = router.delete(f"{BASE}/crm/v3/objects/deals/15").respond(204)
    gone = router.delete(f"{BASE}/crm/v3/objects/deals/16").respond(404, json={"message": "Object not found"})
    bad = router.delete(f"{BASE}/crm/v3/objects/deals/17").respond(400, json={"message": "bad id"})
    results = hub.remove_records(
        [
            removal("hubspot", "15"),
            removal("hubspot", "16"),
            removal("hubspot", "17"),
            removal("hubspot", "x1"),
        ]
    )
    assert one.call_count == gone.call_count == bad.call_count == 1
    validate_response("hubspot", "/crm/v3/objects/deals/{dealId}", "DELETE", 204, None)
    assert [r.ok for r in results] == [True, True, False, False]
    assert not any(r.retryable for r in results)
    assert results[2].error is not None and "400" in results[2].error
    assert results[3].error is not None and "deals by id only" in results[3].error


def test_a_removal_batch_that_keeps_failing_is_retryable_and_auth_propagates(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    route = router.post(ARCHIVE).mock(side_effect=[httpx.Response(503)] * 3 + [httpx.Response(401)])
    (result,) = hub.remove_records([removal("hubspot", "15")])
    assert route.call_count == 3 and not result.ok and result.retryable
    with pytest.raises(AuthError):
        hub.remove_records([removal("hubspot", "15")])
