from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sync_worker.sandbox.common import FaultConfig, Faults, serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_app
from sync_worker.sandbox.pipedrive import PipedriveSandbox
from sync_worker.sandbox.seed import seed_sandboxes
from tests.sandbox.conftest import Receiver

TOKEN = "pat-na1-test"
SECRET = "app-secret-for-tests"
DEALS = "/crm/v3/objects/deals"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def running(sandbox: HubSpotSandbox, token: str | None = TOKEN) -> Iterator[httpx.Client]:
    handle = serve_in_thread(create_app(sandbox))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=handle.url, headers=headers, timeout=10) as client:
            yield client
    finally:
        handle.stop()
        sandbox.close()


def make(**overrides: Any) -> HubSpotSandbox:
    clock = overrides.pop("clock", time.time)
    faults = overrides.pop("faults", None)
    overrides.setdefault("time_scale", 0.001)
    config = HubSpotSandboxConfig(private_app_tokens=frozenset({TOKEN}), client_secret=SECRET, **overrides)
    return HubSpotSandbox(config, faults=faults, clock=clock)


@pytest.fixture
def sandbox() -> HubSpotSandbox:
    return make(rate_limit_per_10s=10_000, search_rate_limit_per_s=1_000)


@pytest.fixture
def client(sandbox: HubSpotSandbox) -> Iterator[httpx.Client]:
    with running(sandbox) as c:
        yield c


# -- pipelines, reading, paging ------------------------------------------------------------------------------


def test_stock_pipeline_and_a_custom_one(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    sandbox.add_pipeline("12345", "Partners", [("1001", "Intro", 0.1, False), ("1002", "Signed", 1.0, True)])
    body = client.get("/crm/v3/pipelines/deals").json()
    default, custom = body["results"]
    assert default["id"] == "default"
    stages = {s["id"]: s["metadata"] for s in default["stages"]}
    assert list(stages) == [
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "decisionmakerboughtin",
        "contractsent",
        "closedwon",
        "closedlost",
    ]
    assert stages["appointmentscheduled"] == {"isClosed": "false", "probability": "0.2"}
    assert stages["closedwon"] == {"isClosed": "true", "probability": "1.0"}
    assert stages["closedlost"] == {"isClosed": "true", "probability": "0.0"}
    assert [s["id"] for s in custom["stages"]] == ["1001", "1002"]
    assert client.get("/crm/v3/pipelines/deals/12345").json()["label"] == "Partners"


def test_list_pages_until_the_end(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    seeded = [sandbox.put_deal({"dealname": f"d{i}", "dealstage": "qualifiedtobuy"}) for i in range(25)]
    archived = sandbox.put_deal({"dealname": "gone"}, archived=True)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10, "properties": "dealname,dealstage"}
    pages = 0
    while True:
        body = client.get(DEALS, params=params).json()
        pages += 1
        seen += [r["id"] for r in body["results"]]
        assert set(body["results"][0]["properties"]) >= {"dealname", "dealstage", "hs_object_id"}
        if "paging" not in body:
            break
        params["after"] = body["paging"]["next"]["after"]
    assert pages == 3
    assert seen == seeded
    only_archived = client.get(DEALS, params={"archived": "true"}).json()["results"]
    assert [r["id"] for r in only_archived] == [archived]
    assert only_archived[0]["archived"] is True and "archivedAt" in only_archived[0]


def test_get_one_deal_and_not_found(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    deal_id = sandbox.put_deal({"dealname": "Acme", "amount": "1200.50"})
    body = client.get(f"{DEALS}/{deal_id}").json()
    assert body["properties"]["amount"] == "1200.50"
    assert body["properties"]["pipeline"] == "default"
    missing = client.get(f"{DEALS}/999")
    assert missing.status_code == 404
    error = missing.json()
    assert error["status"] == "error" and error["category"] == "OBJECT_NOT_FOUND"
    assert error["correlationId"] and error["message"]


# -- search --------------------------------------------------------------------------------------------------


def _search(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(f"{DEALS}/search", json=body)


def _lastmod(op: str, value: int, high: int | None = None) -> dict[str, Any]:
    flt: dict[str, Any] = {"propertyName": "hs_lastmodifieddate", "operator": op, "value": str(value)}
    if high is not None:
        flt["highValue"] = str(high)
    return {"filters": [flt]}


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (_lastmod("GT", 3000), [4, 5]),
        (_lastmod("GTE", 3000), [3, 4, 5]),
        (_lastmod("LT", 3000), [1, 2]),
        (_lastmod("LTE", 3000), [1, 2, 3]),
        (_lastmod("EQ", 3000), [3]),
        (_lastmod("BETWEEN", 2000, 4000), [2, 3, 4]),
    ],
)
def test_search_filters_on_last_modified(
    sandbox: HubSpotSandbox, client: httpx.Client, group: dict[str, Any], expected: list[int]
) -> None:
    base = 1_700_000_000_000
    ids = {n: sandbox.put_deal({"dealname": f"d{n}"}, modified_ms=base + n * 1000) for n in range(1, 6)}
    for filt in group["filters"]:
        filt["value"] = str(base + int(filt["value"]))
        if "highValue" in filt:
            filt["highValue"] = str(base + int(filt["highValue"]))
    body = _search(client, filterGroups=[group], limit=100).json()
    assert [r["id"] for r in body["results"]] == [ids[n] for n in expected]
    assert body["total"] == len(expected)


def test_search_sorts_pages_and_reports_total(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    base = 1_700_000_000_000
    for n in range(7):
        sandbox.put_deal({"dealname": f"d{n}"}, modified_ms=base + (n * 37 % 7) * 1000)
    sorts = [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}]
    first = _search(client, sorts=sorts, limit=4, properties=["hs_lastmodifieddate"]).json()
    assert first["total"] == 7 and first["paging"]["next"]["after"] == "4"
    second = _search(client, sorts=sorts, limit=4, after="4", properties=["hs_lastmodifieddate"]).json()
    assert "paging" not in second
    stamps = [r["properties"]["hs_lastmodifieddate"] for r in first["results"] + second["results"]]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 7
    too_big = _search(client, limit=201)
    assert too_big.status_code == 400 and too_big.json()["category"] == "VALIDATION_ERROR"


def test_search_stops_at_ten_thousand_results(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    for n in range(10_050):
        sandbox.put_deal({"dealname": f"d{n}"})
    near_end = _search(client, limit=100, after="9900").json()
    assert near_end["total"] == 10_050
    assert near_end["paging"]["next"]["after"] == "10000"
    past = _search(client, limit=100, after=near_end["paging"]["next"]["after"])
    assert past.status_code == 400
    assert past.json()["status"] == "error" and past.json()["category"] == "VALIDATION_ERROR"


# -- batch ---------------------------------------------------------------------------------------------------


def test_batch_update_partial_failure_is_207(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    a = sandbox.put_deal({"dealname": "a", "dealstage": "appointmentscheduled"})
    b = sandbox.put_deal({"dealname": "b", "dealstage": "appointmentscheduled"})
    inputs = [
        {"id": a, "properties": {"dealstage": "contractsent"}},
        {"id": "424242", "properties": {"dealstage": "contractsent"}},
        {"id": b, "properties": {"amount": "10"}},
    ]
    response = client.post(f"{DEALS}/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE" and body["numErrors"] == 1
    assert sorted(r["id"] for r in body["results"]) == sorted([a, b])
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"]["ids"] == ["424242"]
    assert sandbox.deal_properties(a)["dealstage"] == "contractsent"  # type: ignore[index]
    assert sandbox.deal_properties(b)["amount"] == "10"  # type: ignore[index]

    read = client.post(
        f"{DEALS}/batch/read", json={"inputs": [{"id": a}, {"id": "1"}], "properties": ["dealstage"]}
    )
    assert read.status_code == 207 and read.json()["results"][0]["properties"]["dealstage"] == "contractsent"
    ok = client.post(f"{DEALS}/batch/read", json={"inputs": [{"id": a}]})
    assert ok.status_code == 200 and "errors" not in ok.json()


def test_batch_rejects_more_than_100_inputs(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    inputs = [{"id": str(i), "properties": {"amount": "1"}} for i in range(101)]
    for action in ("update", "read", "create", "archive"):
        response = client.post(f"{DEALS}/batch/{action}", json={"inputs": inputs})
        assert response.status_code == 400, action
        assert response.json()["category"] == "VALIDATION_ERROR"


def test_batch_create_and_archive(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    created = client.post(f"{DEALS}/batch/create", json={"inputs": [{"properties": {"dealname": "n"}}] * 3})
    assert created.status_code == 201
    ids = [r["id"] for r in created.json()["results"]]
    assert len(set(ids)) == 3
    bad = client.post(f"{DEALS}/batch/create", json={"inputs": [{"properties": {"nope": "1"}}]})
    assert bad.status_code == 400 and "PROPERTY_DOESNT_EXIST" in bad.json()["message"]
    gone = client.post(f"{DEALS}/batch/archive", json={"inputs": [{"id": ids[0]}]})
    assert gone.status_code == 204
    assert sandbox.is_archived(ids[0])
    assert client.get(f"{DEALS}/{ids[0]}").status_code == 404
    assert client.get(f"{DEALS}/{ids[0]}", params={"archived": "true"}).status_code == 200


# -- properties and validation -------------------------------------------------------------------------------


def test_custom_properties_and_unknown_property_errors(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    group = client.post("/crm/v3/properties/deals/groups", json={"name": "sync", "label": "Sync"})
    assert group.status_code == 201
    assert (
        client.post("/crm/v3/properties/deals/groups", json={"name": "sync", "label": "Sync"}).status_code
        == 409
    )
    definition = {
        "name": "sync_leak_reason",
        "label": "Leak reason",
        "type": "string",
        "fieldType": "text",
        "groupName": "sync",
    }
    created = client.post("/crm/v3/properties/deals", json=definition)
    assert created.status_code == 201 and created.json()["name"] == "sync_leak_reason"
    duplicate = client.post("/crm/v3/properties/deals", json=definition)
    assert duplicate.status_code == 409 and duplicate.json()["status"] == "error"
    names = {p["name"] for p in client.get("/crm/v3/properties/deals").json()["results"]}
    assert {"sync_leak_reason", "dealstage", "hs_date_entered_closedwon"} <= names

    deal_id = sandbox.put_deal({"dealname": "x"})
    ok = client.patch(f"{DEALS}/{deal_id}", json={"properties": {"sync_leak_reason": "stalled"}})
    assert ok.status_code == 200 and ok.json()["properties"]["sync_leak_reason"] == "stalled"

    unknown = client.patch(f"{DEALS}/{deal_id}", json={"properties": {"no_such_prop": "1"}})
    assert unknown.status_code == 400
    body = unknown.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    detail = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert detail[0]["error"] == "PROPERTY_DOESNT_EXIST" and detail[0]["name"] == "no_such_prop"

    bad_stage = client.patch(f"{DEALS}/{deal_id}", json={"properties": {"dealstage": "nowhere"}})
    assert bad_stage.status_code == 400 and "INVALID_OPTION" in bad_stage.json()["message"]


def test_stage_change_maintains_calculated_properties() -> None:
    clock = FakeClock()
    sandbox = make(clock=clock)
    deal_id = sandbox.put_deal({"dealname": "x", "dealstage": "appointmentscheduled"})
    clock.now += 60
    sandbox.update_deal(deal_id, {"dealstage": "closedwon"}, source="API", source_id="1")
    props = sandbox.deal_properties(deal_id)
    assert props is not None
    assert props["hs_lastmodifieddate"] == "2023-11-14T22:14:20.000Z"
    assert props["hs_date_entered_closedwon"] == props["hs_lastmodifieddate"]
    assert props["hs_v2_date_entered_current_stage"] == props["hs_lastmodifieddate"]
    assert props["hs_date_exited_appointmentscheduled"] == props["hs_lastmodifieddate"]
    assert props["hs_is_closed_won"] == "true" and props["hs_deal_stage_probability"] == "1.0"


# -- limits and auth -----------------------------------------------------------------------------------------


def test_429_after_the_ten_second_limit() -> None:
    clock = FakeClock()
    sandbox = make(clock=clock, rate_limit_per_10s=3)
    deal_id = sandbox.put_deal({"dealname": "x"})
    with running(sandbox) as client:
        remaining = []
        for _ in range(3):
            response = client.get(f"{DEALS}/{deal_id}")
            assert response.status_code == 200
            remaining.append(response.headers["X-HubSpot-RateLimit-Remaining"])
            assert response.headers["X-HubSpot-RateLimit-Max"] == "3"
            assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
            assert response.headers["X-HubSpot-RateLimit-Daily"] == "500000"
            assert "X-HubSpot-RateLimit-Secondly" in response.headers
        assert remaining == ["2", "1", "0"]
        limited = client.get(f"{DEALS}/{deal_id}")
        assert limited.status_code == 429
        body = limited.json()
        assert body["status"] == "error"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["correlationId"] and body["requestId"]
        assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        clock.now += 10
        assert client.get(f"{DEALS}/{deal_id}").status_code == 200
        assert sandbox.calls.by_path_status[(DEALS + "/{dealId}", 429)] == 1
        assert sandbox.calls.by_path[DEALS + "/{dealId}"] == 5


def test_search_has_its_own_limit_and_no_standard_headers() -> None:
    clock = FakeClock()
    sandbox = make(clock=clock, search_rate_limit_per_s=5)
    with running(sandbox) as client:
        responses = [_search(client) for _ in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert all(not any(h.lower().startswith("x-hubspot-ratelimit") for h in r.headers) for r in responses)
        assert responses[-1].json()["policyName"] == "SECONDLY"
        assert client.get(DEALS).status_code == 200  # the general limit is separate
        clock.now += 1
        assert _search(client).status_code == 200


def test_oauth_code_refresh_and_expiry() -> None:
    clock = FakeClock()
    sandbox = make(clock=clock, access_token_ttl=60)
    code = sandbox.access.issue_authorization_code()
    config = sandbox.config
    with running(sandbox, token=None) as client:
        form = {
            "grant_type": "authorization_code",
            "client_id": config.client_id,
            "client_secret": SECRET,
            "redirect_uri": "http://localhost/cb",
            "code": code,
        }
        granted = client.post("/oauth/v1/token", data=form)
        assert granted.status_code == 200
        tokens = granted.json()
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 60
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        ok = client.get(DEALS, headers=auth)
        assert ok.status_code == 200
        assert "X-HubSpot-RateLimit-Daily" not in ok.headers  # no daily limit for OAuth
        assert (
            client.post("/oauth/v1/token", data=form).json()["status"] == "BAD_AUTH_CODE"
        )  # codes are single-use

        clock.now += 61
        expired = client.get(DEALS, headers=auth)
        assert expired.status_code == 401
        assert expired.json()["category"] == "EXPIRED_AUTHENTICATION"
        assert tokens["access_token"] not in expired.text

        refresh = {
            "grant_type": "refresh_token",
            "client_id": config.client_id,
            "client_secret": SECRET,
            "refresh_token": tokens["refresh_token"],
        }
        renewed = client.post("/oauth/v1/token", data=refresh).json()
        assert renewed["access_token"] != tokens["access_token"]
        assert renewed["refresh_token"] == tokens["refresh_token"]
        assert (
            client.get(DEALS, headers={"Authorization": f"Bearer {renewed['access_token']}"}).status_code
            == 200
        )

        bad = client.post("/oauth/v1/token", data={**refresh, "refresh_token": "nope"})
        assert bad.status_code == 400 and bad.json()["status"] == "BAD_REFRESH_TOKEN"
        wrong_secret = client.post("/oauth/v1/token", data={**refresh, "client_secret": "x"})
        assert wrong_secret.status_code == 400 and SECRET not in wrong_secret.text
        unknown = client.get(DEALS, headers={"Authorization": "Bearer who-knows"})
        assert unknown.status_code == 401 and unknown.json()["category"] == "INVALID_AUTHENTICATION"
        assert client.get(DEALS).status_code == 401


# -- webhooks ------------------------------------------------------------------------------------------------


def _verify_v3(secret: str, request_url: str, body: bytes, headers: dict[str, str]) -> bool:
    # Independent of the sandbox: the documented definition of signature v3.
    source = "POST" + request_url + body.decode() + headers["x-hubspot-request-timestamp"]
    expected = base64.b64encode(hmac.new(secret.encode(), source.encode(), hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, headers["x-hubspot-signature-v3"])


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_api_and_user_changes_send_signed_webhooks(receiver: Receiver) -> None:
    sandbox = make(webhook_url=receiver.url("/webhooks/hubspot?portal=1"), signature_v1=True)
    deal_id = sandbox.put_deal({"dealname": "x", "dealstage": "appointmentscheduled"})
    with running(sandbox) as client:
        assert (
            client.patch(f"{DEALS}/{deal_id}", json={"properties": {"dealstage": "contractsent"}}).status_code
            == 200
        )
        sandbox.simulate_user_change(deal_id, {"amount": "99"}, user_id=42)
        assert sandbox.deliverer.wait_idle(5)
    assert len(receiver.received) == 2
    for request in receiver.received:
        assert _verify_v3(SECRET, request.url, request.body, request.headers)
        assert (
            request.headers["x-hubspot-signature"]
            == hashlib.sha256(SECRET.encode() + request.body).hexdigest()
        )
        assert request.headers["x-hubspot-signature-version"] == "v1"
        assert not _verify_v3("other-secret", request.url, request.body, request.headers)
    # Delivery order is not guaranteed (HubSpot says the same); tell the two apart by source.
    events = sorted(
        (json.loads(r.body)[0] for r in receiver.received), key=lambda e: e["changeSource"] == "CRM_UI"
    )
    api_event, ui_event = events
    assert api_event["subscriptionType"] == "deal.propertyChange"
    assert api_event["propertyName"] == "dealstage" and api_event["propertyValue"] == "contractsent"
    assert api_event["objectId"] == int(deal_id)
    assert api_event["changeSource"] == "INTEGRATION" and api_event["sourceId"] == str(sandbox.config.app_id)
    assert api_event["portalId"] == sandbox.config.portal_id and api_event["attemptNumber"] == 0
    assert isinstance(api_event["occurredAt"], int) and isinstance(api_event["eventId"], int)
    assert ui_event["changeSource"] == "CRM_UI" and ui_event["sourceId"] == "userId:42"
    assert ui_event["propertyName"] == "amount" and ui_event["propertyValue"] == "99"


def test_webhook_events_are_batched_by_100(receiver: Receiver) -> None:
    sandbox = make(webhook_url=receiver.url("/hook"))
    ids = [sandbox.put_deal({"dealname": f"d{i}", "amount": "1"}) for i in range(60)]
    with running(sandbox) as client:
        inputs = [{"id": i, "properties": {"amount": "2", "dealname": "renamed"}} for i in ids]
        assert client.post(f"{DEALS}/batch/update", json={"inputs": inputs}).status_code == 200
        created = client.post(DEALS, json={"properties": {"dealname": "new"}})
        assert created.status_code == 201
        client.delete(f"{DEALS}/{ids[0]}")
        assert sandbox.deliverer.wait_idle(5)
    sizes = sorted(len(json.loads(r.body)) for r in receiver.received)
    assert sizes == [1, 2, 20, 100]  # 120 property changes; creation + dealname; deletion
    types = {e["subscriptionType"] for r in receiver.received for e in json.loads(r.body)}
    assert types == {"deal.propertyChange", "deal.creation", "deal.deletion"}


def test_webhook_retries_follow_the_schedule_until_2xx(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 204]
    sandbox = make(webhook_url=receiver.url("/hook"), retry_delays=(100.0, 200.0, 400.0), time_scale=0.001)
    deal_id = sandbox.put_deal({"dealname": "x"})
    try:
        sandbox.simulate_user_change(deal_id, {"amount": "5"})
        assert sandbox.deliverer.wait_idle(5)
        attempts = sandbox.deliverer.deliveries
    finally:
        sandbox.close()
    assert [d.status for d in attempts] == [500, 503, 204]
    assert attempts[1].at - attempts[0].at >= 0.1 * 0.95
    assert attempts[2].at - attempts[1].at >= 0.2 * 0.95
    bodies = [json.loads(r.body) for r in receiver.received]
    assert [b[0]["attemptNumber"] for b in bodies] == [0, 1, 2]
    assert len({b[0]["eventId"] for b in bodies}) == 1  # the same event, redelivered
    for request in receiver.received:
        assert _verify_v3(SECRET, request.url, request.body, request.headers)


def test_default_retry_schedule_is_ten_retries_within_a_day() -> None:
    delays = HubSpotSandboxConfig().retry_delays
    assert len(delays) == 10
    assert 20 * 3600 <= sum(delays) <= 24 * 3600


# -- faults --------------------------------------------------------------------------------------------------


def _statuses(seed: int) -> list[int]:
    sandbox = make(faults=Faults(FaultConfig(error_rate=0.3, burst_429_rate=0.2, seed=seed)))
    with running(sandbox) as client:
        return [client.get(DEALS).status_code for _ in range(30)]


def test_faults_repeat_with_a_seed() -> None:
    first = _statuses(11)
    assert first == _statuses(11)
    assert {200, 429} <= set(first) and set(first) & {500, 502, 503}
    assert first != _statuses(12)


def test_fault_knobs_via_admin_route(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    assert client.post("/_sandbox/faults", json={"error_rate": 1.0, "seed": 1}).status_code == 200
    failed = client.get(DEALS)
    assert failed.status_code in (500, 502, 503) and failed.json()["status"] == "error"
    client.post("/_sandbox/faults", json={})
    assert client.get(DEALS).status_code == 200
    seeded = client.post("/_sandbox/deals", json={"properties": {"dealname": "seeded"}}).json()["id"]
    changed = client.post(f"/_sandbox/deals/{seeded}/user-change", json={"properties": {"amount": "3"}})
    assert changed.json()["properties"]["amount"] == "3"
    calls = client.get("/_sandbox/calls").json()
    assert calls["by_path"] == {DEALS: 2} and calls["total"] == 2


# -- contacts and associations -------------------------------------------------------------------------------

CONTACTS_READ = "/crm/v3/objects/contacts/batch/read"
DEAL_CONTACTS = "/crm/v4/associations/deals/contacts/batch/read"


def test_contacts_batch_read_by_id_and_by_email(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    ada = sandbox.contacts.add_contact("Ada@Acme.example", firstname="Ada", lastname="Lovelace")
    grace = sandbox.contacts.add_contact("grace@globex.example")
    assert sandbox.contacts.add_contact("ada@acme.example") == ada  # one contact per e-mail

    by_id = client.post(CONTACTS_READ, json={"properties": ["email"], "inputs": [{"id": ada}, {"id": grace}]})
    assert by_id.status_code == 200 and by_id.json()["status"] == "COMPLETE"
    assert [(c["id"], c["properties"]["email"]) for c in by_id.json()["results"]] == [
        (ada, "Ada@Acme.example"),
        (grace, "grace@globex.example"),
    ]
    assert set(by_id.json()["results"][0]["properties"]) == {
        "email",
        "createdate",
        "hs_object_id",
        "lastmodifieddate",
    }

    by_email = client.post(
        CONTACTS_READ,
        json={
            "idProperty": "email",
            "properties": ["email"],
            "inputs": [{"id": "ADA@acme.example"}, {"id": "x@y.z"}],
        },
    )
    assert by_email.status_code == 207
    body = by_email.json()
    assert [c["id"] for c in body["results"]] == [ada]
    assert body["numErrors"] == 1 and body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"] == {"ids": ["x@y.z"]}

    too_many = client.post(CONTACTS_READ, json={"inputs": [{"id": str(i)} for i in range(101)]})
    assert too_many.status_code == 400 and too_many.json()["category"] == "VALIDATION_ERROR"


def test_contact_by_id(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    ada = sandbox.contacts.add_contact("ada@acme.example", firstname="Ada", lastname="Lovelace")
    found = client.get(f"/crm/v3/objects/contacts/{ada}").json()
    assert found["id"] == ada and found["archived"] is False
    assert {k: found["properties"][k] for k in ("email", "firstname", "lastname")} == {
        "email": "ada@acme.example",
        "firstname": "Ada",
        "lastname": "Lovelace",
    }
    only = client.get(f"/crm/v3/objects/contacts/{ada}", params={"properties": "email"}).json()
    assert set(only["properties"]) == {"email", "createdate", "hs_object_id", "lastmodifieddate"}
    missing = client.get("/crm/v3/objects/contacts/999999")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


def test_deal_contact_associations_batch_read(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    # Given a deal with two contacts and a deal with none
    both = sandbox.put_deal({"dealname": "two contacts"})
    alone = sandbox.put_deal({"dealname": "no contact"})
    first, second = sandbox.contacts.add_contact("a@x.example"), sandbox.contacts.add_contact("b@x.example")
    sandbox.associate_contact(both, first)
    sandbox.associate_contact(both, second)
    with pytest.raises(KeyError):
        sandbox.associate_contact(both, "424242")

    response = client.post(DEAL_CONTACTS, json={"inputs": [{"id": both}, {"id": alone}]})

    # Then the documented shape comes back, the contact-less deal as a 207 error
    assert response.status_code == 207
    body = response.json()
    assert body["results"] == [
        {
            "from": {"id": both},
            "to": [
                {
                    "toObjectId": int(c),
                    "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}],
                }
                for c in (first, second)
            ],
        }
    ]
    (error,) = body["errors"]
    assert error["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"
    assert error["context"] == {"fromObjectId": [alone]}

    # and the reverse direction carries type 4
    reverse = client.post("/crm/v4/associations/contacts/deals/batch/read", json={"inputs": [{"id": first}]})
    assert reverse.status_code == 200
    assert reverse.json()["results"][0]["to"][0]["associationTypes"][0]["typeId"] == 4


def test_associations_batch_read_limit_and_paging(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    deal = sandbox.put_deal({"dealname": "crowded"})
    for n in range(501):
        sandbox.associate_contact(deal, sandbox.contacts.add_contact(f"c{n}@x.example"))
    first = client.post(DEAL_CONTACTS, json={"inputs": [{"id": deal}]}).json()["results"][0]
    assert len(first["to"]) == 500 and first["paging"]["next"]["after"] == "500"
    rest = client.post(DEAL_CONTACTS, json={"inputs": [{"id": deal, "after": "500"}]}).json()["results"][0]
    assert len(rest["to"]) == 1 and "paging" not in rest

    assert (
        client.post(DEAL_CONTACTS, json={"inputs": [{"id": str(i)} for i in range(1000)]}).status_code == 207
    )
    too_many = client.post(DEAL_CONTACTS, json={"inputs": [{"id": str(i)} for i in range(1001)]})
    assert too_many.status_code == 400 and "1000" in too_many.json()["message"]
    assert (
        client.post("/crm/v4/associations/deals/tickets/batch/read", json={"inputs": []}).status_code == 400
    )


def test_batch_create_with_contact_associations(sandbox: HubSpotSandbox, client: httpx.Client) -> None:
    contact = sandbox.contacts.add_contact("ada@acme.example")
    association = {
        "to": {"id": contact},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
    }
    response = client.post(
        f"{DEALS}/batch/create",
        json={
            "inputs": [
                {
                    "properties": {"dealname": "linked"},
                    "objectWriteTraceId": "t1",
                    "associations": [association],
                },
                {
                    "properties": {"dealname": "bad link"},
                    "objectWriteTraceId": "t2",
                    "associations": [{**association, "to": {"id": "987654"}}],
                },
                {
                    "properties": {"dealname": "bad type"},
                    "objectWriteTraceId": "t3",
                    "associations": [
                        {
                            **association,
                            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
                        }
                    ],
                },
            ]
        },
    )
    assert response.status_code == 207
    body = response.json()
    (created,) = body["results"]
    assert created["objectWriteTraceId"] == "t1"
    assert sorted(c for e in body["errors"] for c in e["context"]["objectWriteTraceId"]) == ["t2", "t3"]
    assert sandbox.contacts.contacts_of(created["id"]) == [contact]
    read = client.post(DEAL_CONTACTS, json={"inputs": [{"id": created["id"]}]}).json()
    assert read["results"][0]["to"][0]["toObjectId"] == int(contact)

    single = client.post(DEALS, json={"properties": {"dealname": "one"}, "associations": [association]})
    assert single.status_code == 201 and sandbox.contacts.contacts_of(single.json()["id"]) == [contact]


def test_seeded_hubspot_twins_carry_their_pipedrive_persons_email() -> None:
    now = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    hubspot = HubSpotSandbox(clock=lambda: now.timestamp())
    pipedrive = PipedriveSandbox(api_token="t", now=lambda: now)
    summary = seed_sandboxes(hubspot, pipedrive, None, deals=40, seed=5, now=now)
    hubspot.close()
    pipedrive.close()
    assert len(summary.hubspot_deal_ids) == 10
    for pipedrive_id, hubspot_id in zip(summary.pipedrive_deal_ids, summary.hubspot_deal_ids, strict=False):
        person = pipedrive.persons[pipedrive.deals[pipedrive_id]["person_id"]]
        (contact,) = hubspot.contacts.contacts_of(hubspot_id)
        wired = hubspot.contacts.wire(contact, ["email"])
        assert wired is not None and wired["properties"]["email"] == person["emails"][0]["value"]
