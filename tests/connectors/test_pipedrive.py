"""PipedriveConnector against respx route sets: what is sent and what comes back.

Payloads come from Pipedrive's documentation examples (see fixtures/pipedrive/README.md).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connectors.pipedrive import PipedriveConnector, from_settings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.canonical import (
    CanonicalUpdate,
    LeakFlag,
    StageKey,
    UnmappedStage,
)
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError, PermanentError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.ratelimit import Limit, LocalRateLimiter
from sync_worker.settings import Settings

from .provider_oas import validate_request, validate_response
from .removals import removal

BASE = "https://acme.pipedrive.com"
FIXTURES = Path(__file__).parent / "fixtures" / "pipedrive"
REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-abc123-secret"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def page(items: list[dict[str, Any]], next_cursor: str | None = None) -> dict[str, Any]:
    return {"success": True, "data": items, "additional_data": {"next_cursor": next_cursor}}


def deal(deal_id: int, update_time: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(fixture("deal_v2.json"))
    body.update({"id": deal_id, "update_time": update_time, "status": "open", **changes})
    return body


@pytest.fixture(scope="module")
def stock_mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture(scope="module")
def id_mappings(tmp_path_factory: pytest.TempPathFactory) -> Mappings:
    directory = tmp_path_factory.mktemp("mappings")
    shutil.copy(REPO / "mappings" / "canonical.yaml", directory / "canonical.yaml")
    (directory / "pipedrive.yaml").write_text(
        "statuses:\n"
        "  - {status: won, canonical: won}\n"
        "  - {status: lost, canonical: lost}\n"
        "pipelines:\n"
        "  - id: '1'\n"
        "    stages:\n"
        "      - {id: '1', canonical: prospect}\n"
        "      - {id: '2', canonical: contacted}\n"
        "      - {id: '3', canonical: proposal}\n"
    )
    return load_mappings(directory)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(
    router: respx.Router, sleeps: list[float], stock_mappings: Mappings
) -> Callable[..., PipedriveConnector]:
    now = [0.0]

    def sleep(seconds: float) -> None:  # a clock that moves only when someone waits
        sleeps.append(seconds)
        now[0] += seconds

    def build(mappings: Mappings | None = None, **pd: Any) -> PipedriveConnector:
        values: dict[str, Any] = {"api_token": TOKEN, "base_url": BASE, **pd}
        settings = Settings(_env_file=None, pipedrive=PipedriveSettings(**values))
        limiter = LocalRateLimiter(
            {"default": Limit(settings.pipedrive.rate_limit_per_2s, 2.0)}, clock=lambda: now[0], sleep=sleep
        )
        return from_settings(
            settings,
            mappings or stock_mappings,
            transport=httpx.MockTransport(router.handler),
            sleep=sleep,
            limiter=limiter,
        )

    return build


def mock_stages(router: respx.Router) -> tuple[respx.Route, respx.Route]:
    pipelines = router.get("/api/v2/pipelines").mock(
        return_value=httpx.Response(200, json=fixture("pipelines_v2.json"))
    )
    stage_page = fixture("stages_v2.json")
    last = page([{**stage_page["data"][0], "id": 4, "order_nr": 1, "name": "Gone", "is_deleted": True}])
    stages = router.get("/api/v2/stages").mock(
        side_effect=[httpx.Response(200, json=stage_page), httpx.Response(200, json=last)]
    )
    return pipelines, stages


# -- stages ------------------------------------------------------------------------------


def test_list_stages_pages_to_the_end_and_translates(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    pipelines, stages = mock_stages(router)
    result = make().list_stages()

    assert [s.stage_label for s in result] == ["Qualified", "Contact Made", "Demo Scheduled"]
    contact = result[1]
    assert (contact.pipeline_id, contact.pipeline_label, contact.stage_id, contact.order) == (
        "1",
        "Pipeline",
        "2",
        2,
    )
    assert contact.probability == pytest.approx(0.2)
    assert contact.days_to_rotten == 14
    assert result[0].days_to_rotten is None  # rotting disabled: days ignored
    first, second = stages.calls
    assert first.request.url.params["limit"] == "500"
    assert "cursor" not in first.request.url.params
    assert second.request.url.params["cursor"] == "eyJzdGFnZSI6M30"
    assert first.request.headers["x-api-token"] == TOKEN
    assert "authorization" not in first.request.headers
    assert pipelines.call_count == 1


# -- pulls -------------------------------------------------------------------------------


def test_pull_pages_to_the_end_with_one_persons_call_per_page(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    mock_stages(router)
    deals = router.get("/api/v2/deals").mock(
        side_effect=[
            httpx.Response(
                200, json=page([deal(1, "2024-07-01T11:29:32Z"), deal(2, "2024-07-01T12:00:00.500Z")], "c2")
            ),
            httpx.Response(200, json=page([deal(3, "2024-07-02T08:00:00Z", stage_id=3, person_id=7)])),
        ]
    )
    person = fixture("person_v2.json")
    persons = router.get("/api/v2/persons").mock(
        side_effect=[
            httpx.Response(200, json=page([person])),
            httpx.Response(200, json=page([{**person, "id": 7, "emails": [{"value": "p7@example.com"}]}])),
        ]
    )

    pages = list(make().pull_changes("deals", "2024-06-30T00:00:00Z"))

    assert [p.done for p in pages] == [False, True]
    assert [r.external_id for p in pages for r in p.records] == ["1", "2", "3"]
    assert pages[0].cursor == "2024-07-01T12:00:00Z"  # floored: resuming re-reads, never skips
    assert pages[1].cursor == "2024-07-02T08:00:00Z"
    first, second = (c.request.url.params for c in deals.calls)
    assert dict(first) == {
        "sort_by": "update_time",
        "sort_direction": "asc",
        "updated_since": "2024-06-30T00:00:00Z",
        "limit": "500",
    }
    assert second["cursor"] == "c2" and second["updated_since"] == "2024-06-30T00:00:00Z"
    assert persons.call_count == 2
    assert persons.calls[0].request.url.params["ids"] == "1"
    record = pages[0].records[0]
    assert record.contact_email == "first.last@example.com"  # the primary address
    assert record.stage == StageKey.CONTACTED  # "Contact Made", matched by name via the stage cache
    assert record.pipeline_id == "1" and record.source_stage == "2"
    assert pages[1].records[0].stage == StageKey.MEETING
    assert pages[1].records[0].contact_email == "p7@example.com"


def test_pull_from_scratch_sends_no_updated_since_and_keeps_cursor_on_empty(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    deals = router.get("/api/v2/deals").mock(
        return_value=httpx.Response(200, json={"success": True, "data": None})
    )
    mock_stages(router)
    persons = router.get("/api/v2/persons")

    pages = list(make().pull_changes("deals", None))

    assert len(pages) == 1 and pages[0].records == () and pages[0].cursor is None and pages[0].done
    assert "updated_since" not in deals.calls[0].request.url.params
    assert persons.call_count == 0


def test_resumed_cursor_is_kept_when_nothing_newer(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.get("/api/v2/deals").mock(return_value=httpx.Response(200, json=page([])))
    mock_stages(router)
    pages = list(make().pull_changes("deals", "2024-07-01T12:00:00Z"))
    assert pages[0].cursor == "2024-07-01T12:00:00Z"


def test_deleted_stream_asks_for_status_deleted(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    mock_stages(router)
    deals = router.get("/api/v2/deals").mock(
        return_value=httpx.Response(
            200, json=page([deal(5, "2024-07-03T10:00:00Z", status="deleted", is_deleted=True)])
        )
    )
    router.get("/api/v2/persons").mock(return_value=httpx.Response(200, json=page([])))

    (only,) = list(make().pull_changes("deals_deleted", "2024-07-01T00:00:00Z"))

    assert deals.calls[0].request.url.params["status"] == "deleted"
    assert only.records[0].status == "deleted"
    assert only.records[0].stage == StageKey.CONTACTED  # the stage it was dropped from


def test_archived_stream_uses_archived_endpoint(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    mock_stages(router)
    archived = router.get("/api/v2/deals/archived").mock(return_value=httpx.Response(200, json=page([])))
    list(make().pull_changes("deals_archived", None))
    assert archived.call_count == 1
    assert archived.calls[0].request.url.params["sort_by"] == "update_time"


def test_unknown_stream_is_a_config_error(make: Callable[..., PipedriveConnector]) -> None:
    with pytest.raises(ConfigError, match="unknown stream 'leads'"):
        list(make().pull_changes("leads", None))


def test_unknown_stage_refreshes_cache_once_then_is_unmapped(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    pipelines = router.get("/api/v2/pipelines").mock(
        return_value=httpx.Response(200, json=fixture("pipelines_v2.json"))
    )
    stages = router.get("/api/v2/stages").mock(
        return_value=httpx.Response(
            200, json={**fixture("stages_v2.json"), "additional_data": {"next_cursor": None}}
        )
    )
    router.get("/api/v2/deals").mock(
        side_effect=[
            httpx.Response(200, json=page([deal(8, "2024-07-03T10:00:00Z", stage_id=99)], "next")),
            httpx.Response(200, json=page([deal(9, "2024-07-03T11:00:00Z", stage_id=98)])),
        ]
    )
    router.get("/api/v2/persons").mock(return_value=httpx.Response(200, json=page([])))

    pages = list(make().pull_changes("deals", None))

    records = [r for p in pages for r in p.records]
    assert [r.stage for r in records] == [None, None]
    assert records[0].unmapped == UnmappedStage("pipedrive", "1", "99")
    assert stages.call_count == 2 and pipelines.call_count == 2  # initial load + one refresh per pull


def test_won_status_wins_over_stage(router: respx.Router, make: Callable[..., PipedriveConnector]) -> None:
    mock_stages(router)
    router.get("/api/v2/deals").mock(
        return_value=httpx.Response(
            200, json=page([deal(1, "2024-07-01T11:29:32Z", status="lost", lost_reason="Budget")])
        )
    )
    router.get("/api/v2/persons").mock(return_value=httpx.Response(200, json=page([])))
    (only,) = list(make().pull_changes("deals", None))
    assert only.records[0].stage == StageKey.LOST
    assert only.records[0].lost_reason == "Budget"


# -- HTTP failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_min"),
    [({"Retry-After": "3"}, 3.0), ({}, 0.0)],
    ids=["with-retry-after", "without-retry-after"],
)
def test_429_is_retried(
    router: respx.Router,
    make: Callable[..., PipedriveConnector],
    sleeps: list[float],
    headers: dict[str, str],
    expected_min: float,
) -> None:
    route = router.get("/api/v2/pipelines").mock(
        side_effect=[
            httpx.Response(429, json=fixture("error_429.json"), headers=headers),
            httpx.Response(200, json=page([])),
        ]
    )
    router.get("/api/v2/stages").mock(return_value=httpx.Response(200, json=page([])))
    assert make().list_stages() == []
    assert route.call_count == 2
    assert len(sleeps) == 1 and sleeps[0] >= expected_min
    if not headers:
        assert sleeps[0] < 3.0


def test_5xx_then_success(router: respx.Router, make: Callable[..., PipedriveConnector]) -> None:
    route = router.get("/api/v2/pipelines").mock(
        side_effect=[
            httpx.Response(502, text="bad gateway"),
            httpx.Response(200, json=fixture("pipelines_v2.json")),
        ]
    )
    router.get("/api/v2/stages").mock(return_value=httpx.Response(200, json=page([])))
    make().list_stages()
    assert route.call_count == 2


def test_401_is_auth_error_without_the_token(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.get("/api/v2/pipelines").mock(return_value=httpx.Response(401, json=fixture("error_401.json")))
    with pytest.raises(AuthError) as caught:
        make().list_stages()
    assert "unauthorized access" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_malformed_json_body_is_transient_after_retries(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    route = router.get("/api/v2/deals").mock(return_value=httpx.Response(200, text="{not json"))
    with pytest.raises(TransientError, match="not JSON"):
        list(make().pull_changes("deals", None))
    assert route.call_count == 4


def test_wrongly_shaped_body_is_permanent(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.get("/api/v2/deals").mock(
        return_value=httpx.Response(200, json={"success": True, "data": {"id": 1}})
    )
    with pytest.raises(PermanentError, match="data is not a list"):
        list(make().pull_changes("deals", None))


# -- pushes ------------------------------------------------------------------------------


def test_patch_sends_v2_typed_json(
    router: respx.Router, make: Callable[..., PipedriveConnector], id_mappings: Mappings
) -> None:
    mock_stages(router)
    router.get("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "x")})
    )
    patch = router.patch("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "2024-07-05T10:00:00Z")})
    )
    update = CanonicalUpdate(
        target="pipedrive",
        idempotency_key="k1",
        origin="hubspot",
        external_id="1",
        stage=StageKey.PROPOSAL,
        amount=Decimal("1500.50"),
        currency="EUR",
        close_date=date(2024, 8, 1),
        lost_reason="ignored: not lost",
        title="Renamed",
    )
    (result,) = make(id_mappings).apply_updates([update])

    assert result.ok and result.external_id == "1" and result.idempotency_key == "k1"
    assert result.updated_at == datetime(2024, 7, 5, 10, tzinfo=UTC)
    sent = json.loads(patch.calls[0].request.content)
    assert sent == {
        "stage_id": 3,
        "pipeline_id": 1,
        "title": "Renamed",
        "value": 1500.5,
        "currency": "EUR",
        "expected_close_date": "2024-08-01",
    }
    assert patch.calls[0].request.headers["content-type"] == "application/json"


def test_stage_by_name_in_the_deals_pipeline_and_lost_reason_with_lost(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    mock_stages(router)
    router.get("/api/v2/deals/7").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(7, "x")})
    )
    patch = router.patch("/api/v2/deals/7").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(7, "2024-07-05T10:00:00Z")})
    )
    connector = make()
    stage_push = CanonicalUpdate(
        target="pipedrive", idempotency_key="a", origin="hubspot", external_id="7", stage=StageKey.MEETING
    )
    lost_push = CanonicalUpdate(
        target="pipedrive", idempotency_key="b", origin="hubspot", external_id="7",
        stage=StageKey.LOST, lost_reason="Went with a competitor", amount=Decimal("2000"),
    )  # fmt: skip
    results = connector.apply_updates([stage_push, lost_push])

    assert [r.ok for r in results] == [True, True]
    first, second = (json.loads(c.request.content) for c in patch.calls)
    assert first == {"stage_id": 3, "pipeline_id": 1}  # "Demo Scheduled" found by name in "Pipeline"
    assert second == {"status": "lost", "lost_reason": "Went with a competitor", "value": 2000}
    assert isinstance(second["value"], int)


def test_create_posts_and_failures_do_not_hide_others(
    router: respx.Router, make: Callable[..., PipedriveConnector], id_mappings: Mappings
) -> None:
    mock_stages(router)
    post = router.post("/api/v2/deals").mock(
        return_value=httpx.Response(201, json={"success": True, "data": deal(55, "2024-07-06T09:00:00Z")})
    )
    router.get("/api/v2/deals/9").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(9, "x")})
    )
    router.patch("/api/v2/deals/9").mock(return_value=httpx.Response(503, text="down"))
    updates = [
        CanonicalUpdate(
            target="pipedrive", idempotency_key="new", origin="lagrowthmachine",
            title="ACME", stage=StageKey.PROSPECT, status="open",
        ),
        CanonicalUpdate(target="pipedrive", idempotency_key="nomap", origin="hubspot", external_id="9",
                        stage=StageKey.NURTURE),
        CanonicalUpdate(target="pipedrive", idempotency_key="down", origin="hubspot", external_id="9",
                        title="x"),
        CanonicalUpdate(target="pipedrive", idempotency_key="notitle", origin="hubspot", amount=Decimal(1)),
    ]  # fmt: skip
    results = make(id_mappings).apply_updates(updates)

    assert [r.idempotency_key for r in results] == ["new", "nomap", "down", "notitle"]
    assert results[0].ok and results[0].external_id == "55"
    assert json.loads(post.calls[0].request.content) == {
        "stage_id": 1,
        "pipeline_id": 1,
        "status": "open",
        "title": "ACME",
    }
    assert (
        not results[1].ok
        and not results[1].retryable
        and "'nurture' has no mapping" in (results[1].error or "")
    )
    assert not results[2].ok and results[2].retryable
    assert not results[3].ok and "needs a title" in (results[3].error or "")
    assert post.call_count == 1


# -- leak flags --------------------------------------------------------------------------


def test_leak_flag_writes_note_and_creates_missing_label(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.get("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "x", label_ids=[1, 9])})
    )
    fields = router.get("/api/v1/dealFields").mock(
        return_value=httpx.Response(200, json=fixture("deal_fields_v1.json"))
    )
    existing = fixture("deal_fields_v1.json")["data"][1]
    created = {
        **existing,
        "options": [*existing["options"], {"id": 10, "label": "Leak: dropped", "color": "green"}],
    }
    put = router.put("/api/v1/dealFields/17").mock(
        return_value=httpx.Response(200, json={"success": True, "data": created})
    )
    patch = router.patch("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "2024-07-07T00:00:00Z")})
    )
    note = router.post("/api/v1/notes").mock(return_value=httpx.Response(201, json=fixture("note_v1.json")))
    flag = LeakFlag(rule="dropped", reason="Lost <silently>", stage=StageKey.PROPOSAL, days_in_stage=40)
    update = CanonicalUpdate(
        target="pipedrive", idempotency_key="f", origin="sync", external_id="1", flag=flag
    )

    (result,) = make().apply_updates([update])

    assert result.ok, result.error
    sent_options = json.loads(put.calls[0].request.content)["options"]
    assert sent_options == [
        {"id": 1, "label": "Hot"},
        {"id": 2, "label": "Warm"},
        {"id": 9, "label": "Leak: stalled"},
        {"label": "Leak: dropped"},
    ]
    assert json.loads(patch.calls[0].request.content) == {"label_ids": [1, 10]}  # old leak label replaced
    note_body = json.loads(note.calls[0].request.content)
    assert note_body["deal_id"] == 1
    assert "dropped" in note_body["content"] and "Lost &lt;silently&gt;" in note_body["content"]
    assert "Days in stage: 40" in note_body["content"]
    assert fields.call_count == 2  # cached options, then one refresh before creating


def test_clearing_a_flag_removes_leak_labels_and_writes_no_note(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.get("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "x", label_ids=[2, 9])})
    )
    router.get("/api/v1/dealFields").mock(
        return_value=httpx.Response(200, json=fixture("deal_fields_v1.json"))
    )
    patch = router.patch("/api/v2/deals/1").mock(
        return_value=httpx.Response(200, json={"success": True, "data": deal(1, "2024-07-07T00:00:00Z")})
    )
    note = router.post("/api/v1/notes")
    update = CanonicalUpdate(
        target="pipedrive", idempotency_key="c", origin="sync", external_id="1", flag=LeakFlag(rule=None)
    )
    (result,) = make().apply_updates([update])
    assert result.ok
    assert json.loads(patch.calls[0].request.content) == {"label_ids": [2]}
    assert note.call_count == 0


# -- settings, auth, limiter -------------------------------------------------------------


def test_from_settings_requires_a_credential(stock_mappings: Mappings) -> None:
    with pytest.raises(ConfigError, match="SYNC_PIPEDRIVE__API_TOKEN"):
        from_settings(Settings(_env_file=None), stock_mappings)


def test_oauth_token_goes_in_bearer_header_and_never_in_repr(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    route = router.get("/api/v2/pipelines").mock(return_value=httpx.Response(200, json=page([])))
    router.get("/api/v2/stages").mock(return_value=httpx.Response(200, json=page([])))
    connector = make(api_token=None, oauth_token="oauth-secret-xyz")
    connector.list_stages()
    assert route.calls[0].request.headers["authorization"] == "Bearer oauth-secret-xyz"
    assert "x-api-token" not in route.calls[0].request.headers
    assert "secret" not in repr(connector)
    assert isinstance(connector, Connector) and connector.name == "pipedrive"


def test_default_limiter_paces_to_the_pipedrive_window_and_obeys_reset_headers() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = LocalRateLimiter({"default": Limit(2, 2.0)}, clock=lambda: now[0], sleep=sleep, safety=1.0)
    limiter.acquire("default")
    limiter.acquire("default")
    assert slept == []
    limiter.acquire("default")  # third in the same 2 s window waits for the first to age out
    assert slept == [pytest.approx(2.0)]

    limiter.observe("default", httpx.Headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1.5"}))
    limiter.acquire("default")
    assert slept[-1] == pytest.approx(1.5, abs=0.51)


# -- removals (a route's on_delete) ---------------------------------------------------------------


def test_delete_sends_delete_and_archive_patches_is_archived(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    deleted = {"success": True, "data": {"id": 34}}
    delete = router.delete("/api/v2/deals/34").mock(return_value=httpx.Response(200, json=deleted))
    archived = {"success": True, "data": deal(35, "2024-07-05T10:00:00Z", is_archived=True)}
    patch = router.patch("/api/v2/deals/35").mock(return_value=httpx.Response(200, json=archived))
    results = make().remove_records(
        [removal("pipedrive", "34", "delete"), removal("pipedrive", "35", "archive")]
    )
    assert [(r.ok, r.external_id, r.idempotency_key) for r in results] == [
        (True, "34", "remove-34"),
        (True, "35", "remove-35"),
    ]
    assert delete.call_count == 1 and delete.calls[0].request.content == b""
    assert delete.calls[0].request.headers["x-api-token"] == TOKEN
    validate_response("pipedrive", "/api/v2/deals/{id}", "DELETE", 200, deleted)
    sent = json.loads(patch.calls[0].request.content)
    assert sent == {"is_archived": True}
    validate_request("pipedrive", "/api/v2/deals/{id}", "PATCH", sent)


def test_a_gone_deal_counts_as_removed_and_other_failures_say_whether_to_retry(
    router: respx.Router, make: Callable[..., PipedriveConnector]
) -> None:
    router.delete("/api/v2/deals/1").mock(return_value=httpx.Response(404, json={"success": False}))
    router.delete("/api/v2/deals/2").mock(return_value=httpx.Response(503, text="down"))
    router.delete("/api/v2/deals/3").mock(return_value=httpx.Response(400, json={"error": "bad"}))
    results = make().remove_records(
        [
            removal("pipedrive", "1", "delete"),
            removal("pipedrive", "2", "delete"),
            removal("pipedrive", "3", "delete"),
            removal("pipedrive", "x", "delete"),
        ]
    )
    assert [(r.ok, r.retryable) for r in results] == [
        (True, False),
        (False, True),
        (False, False),
        (False, False),
    ]
    assert results[3].error is not None and "not numeric" in results[3].error
    # A 401 is no answer about the deal: it propagates (the push is retried with the message)
    router.delete("/api/v2/deals/4").mock(return_value=httpx.Response(401, json={"success": False}))
    with pytest.raises(AuthError):
        make().remove_records([removal("pipedrive", "4", "delete")])
