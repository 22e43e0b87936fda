"""The Pipedrive sandbox speaks the documented v2 wire format: paging, filters, typing, limits, webhooks."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.pipedrive import DEFAULT_STAGES, PipedriveSandbox, create_app
from tests.sandbox.conftest import Receiver

TOKEN = "pd-test-token"


class Clock:
    """Both clocks the sandbox takes: monotonic seconds (rate limits) and wall time (update_time)."""

    def __init__(self) -> None:
        self.seconds = 100.0
        self.wall = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[PipedriveSandbox]:
    box = PipedriveSandbox(
        api_token=TOKEN,
        oauth_token="pd-oauth",
        clock=clock.monotonic,
        now=clock.now,
        rate_limit=1000,
        time_scale=0.005,
    )
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def base_url(sandbox: PipedriveSandbox) -> Iterator[str]:
    with serve_in_thread(create_app(sandbox)) as handle:
        yield handle.url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"x-api-token": TOKEN}) as http:
        yield http


def _deals(sandbox: PipedriveSandbox, n: int) -> list[dict[str, Any]]:
    return [sandbox.create_deal({"title": f"Deal {i}", "value": 100 * i}, notify=False) for i in range(n)]


def test_stock_pipeline_and_stage_fields(client: httpx.Client) -> None:
    pipelines = client.get("/api/v2/pipelines").json()
    assert pipelines["success"] is True
    assert [p["name"] for p in pipelines["data"]] == ["Pipeline"]
    pipeline_id = pipelines["data"][0]["id"]
    body = client.get("/api/v2/stages", params={"pipeline_id": pipeline_id}).json()
    assert [s["name"] for s in body["data"]] == list(DEFAULT_STAGES)
    expected = {"id", "order_nr", "name", "pipeline_id", "deal_probability", "is_deal_rot_enabled"}
    assert expected | {"days_to_rotten", "add_time", "update_time", "is_deleted"} <= set(body["data"][0])
    assert body["additional_data"] == {"next_cursor": None}
    assert client.get("/api/v2/stages", params={"pipeline_id": 999}).json()["data"] == []


def test_deal_paging_ends_and_cursors_resume(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    created = _deals(sandbox, 7)
    seen: list[int] = []
    cursors: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v2/deals", params=params).json()
        seen += [d["id"] for d in body["data"]]
        cursor = body["additional_data"]["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert seen == [d["id"] for d in created]
    assert len(cursors) == 2
    again = client.get("/api/v2/deals", params={"limit": 3, "cursor": cursors[0]}).json()
    assert [d["id"] for d in again["data"]] == seen[3:6]
    bad = client.get("/api/v2/deals", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["success"] is False
    assert client.get("/api/v2/deals", params={"limit": 501}).status_code == 400


def test_updated_since_and_update_time_sort(
    client: httpx.Client, sandbox: PipedriveSandbox, clock: Clock
) -> None:
    deals = _deals(sandbox, 3)
    clock.advance(3600)
    since = clock.wall.strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(60)
    sandbox.update_deal(deals[2]["id"], {"title": "renamed"})
    clock.advance(60)
    sandbox.update_deal(deals[0]["id"], {"value": 5})
    body = client.get(
        "/api/v2/deals", params={"updated_since": since, "sort_by": "update_time", "sort_direction": "asc"}
    ).json()
    assert [d["id"] for d in body["data"]] == [deals[2]["id"], deals[0]["id"]]
    assert body["data"][0]["update_time"] == "2025-03-01T10:01:00Z"
    assert client.get("/api/v2/deals", params={"updated_since": "yesterday"}).status_code == 400


def test_status_filter_deleted_and_archived(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    open_deal, won, lost, gone, shelved = _deals(sandbox, 5)
    sandbox.update_deal(won["id"], {"status": "won"})
    sandbox.update_deal(lost["id"], {"status": "lost", "lost_reason": "Budget"})
    assert client.delete(f"/api/v2/deals/{gone['id']}").json() == {
        "success": True,
        "data": {"id": gone["id"]},
        "additional_data": None,
    }
    client.patch(f"/api/v2/deals/{shelved['id']}", json={"is_archived": True})

    def ids(**params: Any) -> set[int]:
        return {d["id"] for d in client.get("/api/v2/deals", params=params).json()["data"]}

    assert ids() == {open_deal["id"], won["id"], lost["id"]}
    assert ids(status="won,lost") == {won["id"], lost["id"]}
    assert ids(status="deleted") == {gone["id"]}
    assert client.get("/api/v2/deals", params={"status": "closed"}).status_code == 400
    archived = client.get("/api/v2/deals/archived").json()["data"]
    assert [(d["id"], d["is_archived"]) for d in archived] == [(shelved["id"], True)]
    fetched = client.get(f"/api/v2/deals/{gone['id']}").json()["data"]
    assert fetched["is_deleted"] is True
    assert client.get("/api/v2/deals/9999").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": "100"}, "value"),
        ({"stage_id": "2"}, "stage_id"),
        ({"stage_id": True}, "stage_id"),
        ({"status": 1}, "status"),
        ({"label_ids": ["hot"]}, "label_ids"),
        ({"status": "closed"}, "status"),
        ({"stage_id": 999}, "stage_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_v2_typing_errors_answer_400(
    client: httpx.Client, sandbox: PipedriveSandbox, body: dict[str, Any], field: str
) -> None:
    deal = _deals(sandbox, 1)[0]
    response = client.patch(f"/api/v2/deals/{deal['id']}", json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False and payload["data"] is None and field in payload["error"]
    assert "error_info" in payload
    assert sandbox.get_deal(deal["id"]) == deal


def test_lost_reason_only_with_status_lost(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    deal = _deals(sandbox, 1)[0]
    refused = client.patch(f"/api/v2/deals/{deal['id']}", json={"lost_reason": "Too expensive"})
    assert refused.status_code == 400 and "lost_reason" in refused.json()["error"]
    ok = client.patch(f"/api/v2/deals/{deal['id']}", json={"status": "lost", "lost_reason": "Too expensive"})
    data = ok.json()["data"]
    assert (data["status"], data["lost_reason"]) == ("lost", "Too expensive")
    assert data["lost_time"] is not None and data["close_time"] == data["lost_time"]
    reopened = client.patch(f"/api/v2/deals/{deal['id']}", json={"status": "open"}).json()["data"]
    assert reopened["lost_reason"] is None and reopened["close_time"] is None


def test_create_deal_with_numbers_and_stage(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    stage = next(s for s in sandbox.stages.values() if s["name"] == "Proposal Made")
    response = client.post(
        "/api/v2/deals", json={"title": "ACME", "value": 1200.5, "currency": "EUR", "stage_id": stage["id"]}
    )
    data = response.json()["data"]
    assert (data["value"], data["stage_id"], data["pipeline_id"]) == (
        1200.5,
        stage["id"],
        stage["pipeline_id"],
    )
    assert client.post("/api/v2/deals", json={"value": 1}).status_code == 400


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {}, 401),
        ({"x-api-token": "wrong"}, {}, 401),
        ({"x-api-token": TOKEN}, {}, 200),
        ({}, {"api_token": TOKEN}, 200),
        ({"authorization": "Bearer pd-oauth"}, {}, 200),
    ],
)
def test_auth(base_url: str, headers: dict[str, str], params: dict[str, str], status: int) -> None:
    response = httpx.get(base_url + "/api/v2/deals", headers=headers, params=params)
    assert response.status_code == status
    if status == 401:
        assert response.json()["success"] is False and response.json()["errorCode"] == 401


def test_rate_limit_headers_and_429_within_two_seconds(clock: Clock) -> None:
    box = PipedriveSandbox(api_token=TOKEN, clock=clock.monotonic, now=clock.now, rate_limit=3)
    with (
        serve_in_thread(create_app(box)) as handle,
        httpx.Client(base_url=handle.url, headers={"x-api-token": TOKEN}) as client,
    ):
        answers = [client.get("/api/v2/stages") for _ in range(3)]
        assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0"]
        assert answers[0].headers["x-ratelimit-limit"] == "3"
        assert answers[0].headers["x-ratelimit-reset"] == "2"
        clock.advance(1.5)
        refused = client.get("/api/v2/stages")
        assert refused.status_code == 429
        assert refused.json()["success"] is False
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "1"
        clock.advance(0.5)
        assert client.get("/api/v2/stages").status_code == 200
        assert box.calls.by_status[429] == 1 and box.calls.by_path["/api/v2/stages"] == 5
    box.close()


def _hook(client: httpx.Client, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    body = {
        "subscription_url": receiver.url("/webhooks/pipedrive"),
        "event_action": "*",
        "event_object": "deal",
        "http_auth_user": "pd-user",
        "http_auth_password": "pd-pass",
        "version": "2.0",
        **extra,
    }
    response = client.post("/api/v1/webhooks", json=body)
    assert response.status_code == 201
    return dict(response.json()["data"])


def test_webhook_v2_delivery_with_basic_auth_and_previous(
    client: httpx.Client, sandbox: PipedriveSandbox, receiver: Receiver, clock: Clock
) -> None:
    hook = _hook(client, receiver)
    stages = sorted(sandbox.stages.values(), key=lambda s: s["order_nr"])
    deal = client.post("/api/v2/deals", json={"title": "Globex", "value": 10}).json()["data"]
    clock.advance(60)
    client.patch(f"/api/v2/deals/{deal['id']}", json={"stage_id": stages[2]["id"]})
    clock.advance(60)
    sandbox.simulate_user_change(deal["id"], value=20)
    assert sandbox.deliverer.wait_idle(10)
    assert len(receiver.received) == 3
    expected_auth = "Basic " + base64.b64encode(b"pd-user:pd-pass").decode()
    assert all(r.headers["authorization"] == expected_auth for r in receiver.received)
    # deliveries run concurrently: identify them by what they say, not by arrival order
    bodies = {
        (b["meta"]["action"], b["meta"]["change_source"]): b
        for b in map(json.loads, (r.body for r in receiver.received))
    }
    created, moved, edited = bodies[("create", "api")], bodies[("change", "api")], bodies[("change", "app")]
    assert created["meta"]["action"] == "create" and created["previous"] is None
    meta = moved["meta"]
    assert (meta["action"], meta["entity"], meta["entity_id"], meta["change_source"]) == (
        "change",
        "deal",
        str(deal["id"]),
        "api",
    )
    assert (meta["version"], meta["attempt"], meta["webhook_id"]) == ("2.0", 1, str(hook["id"]))
    assert set(moved["previous"]) == {"stage_id", "stage_change_time", "update_time"}
    assert moved["previous"]["stage_id"] == stages[0]["id"]
    assert moved["data"]["stage_id"] == stages[2]["id"]
    assert edited["meta"]["change_source"] == "app"
    assert set(edited["previous"]) == {"value", "update_time"} and edited["previous"]["value"] == 10
    assert len({created["meta"]["id"], moved["meta"]["id"], edited["meta"]["id"]}) == 3


def test_delete_webhook_carries_last_state(
    client: httpx.Client, sandbox: PipedriveSandbox, receiver: Receiver
) -> None:
    _hook(client, receiver, event_action="delete")
    deal = _deals(sandbox, 1)[0]
    client.delete(f"/api/v2/deals/{deal['id']}")
    assert sandbox.deliverer.wait_idle(10)
    (only,) = receiver.received
    body = json.loads(only.body)
    assert body["meta"]["action"] == "delete" and body["data"] is None
    assert body["previous"]["title"] == deal["title"]


def test_webhook_retries_after_3_30_150_seconds_time_scaled(
    client: httpx.Client, sandbox: PipedriveSandbox, receiver: Receiver
) -> None:
    _hook(client, receiver, event_action="create")
    receiver.statuses = [500, 503, 500]
    client.post("/api/v2/deals", json={"title": "Retry me"})
    assert sandbox.deliverer.wait_idle(20)
    attempts = sorted(sandbox.deliverer.deliveries, key=lambda d: d.attempt)
    assert [d.attempt for d in attempts] == [1, 2, 3, 4]
    assert [d.status for d in attempts] == [500, 503, 500, 200]
    assert [json.loads(d.body)["meta"]["attempt"] for d in attempts] == [1, 2, 3, 4]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, (3, 30, 150), strict=True):
        assert gap >= delay * 0.005 * 0.9


def test_webhook_subscription_list_and_delete(client: httpx.Client, receiver: Receiver) -> None:
    hook = _hook(client, receiver)
    listed = client.get("/api/v1/webhooks").json()["data"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert client.delete(f"/api/v1/webhooks/{hook['id']}").json()["success"] is True
    assert client.get("/api/v1/webhooks").json()["data"] == []
    bad = client.post(
        "/api/v1/webhooks", json={"subscription_url": "x", "event_action": "*", "event_object": "deal"}
    )
    assert bad.status_code == 400


def test_persons_notes_and_labels(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    person = sandbox.add_person("Ada Lovelace", ["ada@example.com"])
    deal = sandbox.create_deal({"title": "Engine", "person_id": person["id"]}, notify=False)
    fetched = client.get(f"/api/v2/persons/{person['id']}").json()["data"]
    assert fetched["emails"] == [{"value": "ada@example.com", "primary": True, "label": "work"}]

    note = client.post("/api/v1/notes", json={"content": "Flagged: stalled", "deal_id": deal["id"]})
    assert note.status_code == 201
    listed = client.get("/api/v1/notes", params={"deal_id": deal["id"]}).json()
    assert [n["content"] for n in listed["data"]] == ["Flagged: stalled"]
    assert listed["additional_data"]["pagination"]["more_items_in_collection"] is False

    field = client.get("/api/v1/dealFields").json()["data"][0]
    assert field["key"] == "label" and field["options"] == []
    updated = client.put(
        f"/api/v1/dealFields/{field['id']}", json={"options": [{"label": "Leaked", "color": "red"}]}
    )
    option = updated.json()["data"]["options"][0]
    assert option["label"] == "Leaked"
    tagged = client.patch(f"/api/v2/deals/{deal['id']}", json={"label_ids": [option["id"]]})
    assert tagged.json()["data"]["label_ids"] == [option["id"]]
    assert client.patch(f"/api/v2/deals/{deal['id']}", json={"label_ids": [424242]}).status_code == 400


def test_calls_are_counted_but_admin_routes_are_not(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    deal = _deals(sandbox, 1)[0]
    client.get("/api/v2/deals")
    client.get("/api/v2/deals/424242")
    response = client.post(f"/_sandbox/deals/{deal['id']}/user-change", json={"title": "From the UI"})
    assert response.json()["title"] == "From the UI"
    assert sandbox.calls.by_path_status[("/api/v2/deals", 200)] == 1
    assert sandbox.calls.by_path_status[("/api/v2/deals/{id}", 404)] == 1
    assert sandbox.calls.total == 2


def test_injected_faults_use_documented_error_bodies(client: httpx.Client) -> None:
    assert client.post("/_sandbox/faults", json={"error_rate": 1.0, "seed": 4}).status_code == 200
    failed = client.get("/api/v2/deals")
    assert failed.status_code in {500, 502, 503}
    assert failed.json()["success"] is False and failed.json()["data"] is None
    client.post("/_sandbox/faults", json={"burst_429_rate": 1.0})
    limited = client.get("/api/v2/deals")
    assert limited.status_code == 429 and limited.headers["x-ratelimit-remaining"] == "0"
    client.post("/_sandbox/faults", json={})
    assert client.get("/api/v2/deals").status_code == 200
    assert client.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 400


def test_ids_filter_on_persons_and_deals(client: httpx.Client, sandbox: PipedriveSandbox) -> None:
    people = [sandbox.add_person(f"Person {i}", [f"p{i}@example.com"]) for i in range(4)]
    deals = _deals(sandbox, 3)
    wanted = f"{people[1]['id']},{people[3]['id']},999"
    found = client.get("/api/v2/persons", params={"ids": wanted}).json()["data"]
    assert [p["emails"][0]["value"] for p in found] == ["p1@example.com", "p3@example.com"]
    picked = client.get("/api/v2/deals", params={"ids": str(deals[2]["id"])}).json()["data"]
    assert [d["id"] for d in picked] == [deals[2]["id"]]
    too_many = ",".join(str(i) for i in range(101))
    assert client.get("/api/v2/persons", params={"ids": too_many}).status_code == 400
