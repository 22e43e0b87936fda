"""The LaGrowthMachine sandbox: apikey auth, paging, lead status, 50 calls / 10 s, reply webhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.lagrowthmachine import LaGrowthMachineSandbox, create_app
from tests.sandbox.conftest import Receiver

KEY = "lgm-test-key"


class Clock:
    def __init__(self) -> None:
        self.seconds = 50.0
        self.wall = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

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
def sandbox(clock: Clock) -> Iterator[LaGrowthMachineSandbox]:
    box = LaGrowthMachineSandbox(api_key=KEY, clock=clock.monotonic, now=clock.now, rate_limit=1000)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def client(sandbox: LaGrowthMachineSandbox) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(sandbox)) as handle,
        httpx.Client(base_url=handle.url + "/flow", params={"apikey": KEY}) as http,
    ):
        yield http


def _campaign_with_leads(sandbox: LaGrowthMachineSandbox, n: int) -> tuple[str, list[dict[str, Any]]]:
    campaign = sandbox.add_campaign("Q1 outbound")
    leads = [
        sandbox.add_lead(
            firstname=f"Lead{i}",
            lastname="Test",
            email=f"lead{i}@example.com",
            company="ACME",
            campaign_id=campaign["id"],
        )
        for i in range(n)
    ]
    return campaign["id"], leads


def test_apikey_is_required(sandbox: LaGrowthMachineSandbox) -> None:
    with serve_in_thread(create_app(sandbox)) as handle:
        assert httpx.get(handle.url + "/flow/members").status_code == 401
        assert httpx.get(handle.url + "/flow/members", params={"apikey": "nope"}).status_code == 401
        members = httpx.get(handle.url + "/flow/members", params={"apikey": KEY})
    assert members.status_code == 200
    assert set(members.json()[0]) == {"id", "name", "label"}


def test_campaigns_page_with_skip_and_limit(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    ids = [sandbox.add_campaign(f"Campaign {i}")["id"] for i in range(30)]
    first = client.get("/campaigns").json()
    second = client.get("/campaigns", params={"skip": 25, "limit": 25}).json()
    assert [c["id"] for c in first + second] == ids
    assert client.get("/campaigns", params={"limit": 26}).status_code == 400
    assert client.get(f"/campaigns/{ids[3]}").json()["name"] == "Campaign 3"


def test_lead_stats_cursor_pages_by_25(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 60)
    seen: list[str] = []
    sizes: list[int] = []
    more_flags: list[bool] = []
    after: str | None = None
    while True:
        params = {"getLeadsAfter": after} if after else {}
        rows = client.get(f"/campaigns/{campaign_id}/statsleads", params=params).json()
        sizes.append(len(rows))
        more_flags.append(rows[-1]["hasMore"])
        seen += [row["id"] for row in rows]
        if not rows[-1]["hasMore"]:
            break
        after = rows[-1]["id"]
    assert (sizes, more_flags) == ([25, 25, 10], [True, True, False])
    assert seen == [lead["id"] for lead in leads]
    resumed = client.get(f"/campaigns/{campaign_id}/statsleads", params={"getLeadsAfter": seen[24]}).json()
    assert [row["leadId"] for row in resumed] == seen[25:50]
    assert resumed[0]["email"] == leads[25]["proEmail"] and resumed[0]["status"] == "CONTACTED"
    assert client.get("/campaigns/ffffffffffffffffffffffff/statsleads").status_code == 404


def test_lead_search_and_status_update_form_encoded(
    client: httpx.Client, sandbox: LaGrowthMachineSandbox
) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 2)
    found = client.get("/leads/search", params={"email": "LEAD1@example.com"}).json()
    assert found["id"] == leads[1]["id"]
    assert found["campaigns"][0]["status"] == "CONTACTED"
    assert client.get("/leads/search", params={"email": "nobody@example.com"}).status_code == 404

    response = client.post(
        "/leads/status",
        data={"status": "CONVERTED", "campaign": campaign_id, "proEmail": "lead1@example.com"},
    )
    assert response.status_code == 200
    assert response.json() == [
        {
            "campaign": "Q1 outbound",
            "campaignId": campaign_id,
            "leadId": leads[1]["id"],
            "leadStatus": "CONVERTED",
            "leadUpdated": True,
            "reason": None,
        }
    ]
    assert sandbox.memberships[(campaign_id, leads[1]["id"])]["status"] == "CONVERTED"
    assert sandbox.memberships[(campaign_id, leads[0]["id"])]["status"] == "CONTACTED"

    by_name = client.post(
        "/leads/status",
        data={
            "status": "NOT_INTERESTED",
            "campaign[]": ["Q1 outbound", "Nope"],
            "proEmail": "lead0@example.com",
        },
    )
    assert [(log["leadUpdated"], log["reason"]) for log in by_name.json()] == [
        (True, None),
        (False, "unknown campaign"),
    ]
    assert sandbox.memberships[(campaign_id, leads[0]["id"])]["status"] == "NOT_INTERESTED"
    bad = client.post(
        "/leads/status", data={"status": "WON", "campaign": "all", "proEmail": "lead0@example.com"}
    )
    assert bad.status_code == 400 and "status" in bad.json()["error"]
    missing = client.post(
        "/leads/status", data={"status": "CONVERTED", "campaign": "all", "proEmail": "x@example.com"}
    )
    assert missing.status_code == 404


def test_429_beyond_50_calls_in_10_seconds(clock: Clock) -> None:
    box = LaGrowthMachineSandbox(api_key=KEY, clock=clock.monotonic, now=clock.now)
    with (
        serve_in_thread(create_app(box)) as handle,
        httpx.Client(base_url=handle.url + "/flow", params={"apikey": KEY}) as http,
    ):
        statuses = [http.get("/members").status_code for _ in range(50)]
        clock.advance(9.0)
        refused = http.get("/members")
        clock.advance(1.0)
        allowed_again = http.get("/members")
    box.close()
    assert statuses == [200] * 50
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert allowed_again.status_code == 200
    assert box.calls.by_status[429] == 1 and box.calls.total == 52


def test_reply_webhook_delivered_with_the_registered_token(
    client: httpx.Client, sandbox: LaGrowthMachineSandbox, receiver: Receiver
) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 2)
    other = sandbox.add_campaign("Other")
    url = receiver.url("/webhooks/lagrowthmachine") + "?token=s3cret"
    hook = client.post("/inboxWebhooks", json={"url": url, "name": "sync", "campaigns": [campaign_id]})
    assert hook.status_code == 201
    assert [h["url"] for h in client.get("/inboxWebhooks").json()] == [url]

    sandbox.simulate_reply(leads[1]["id"], "Sounds good", campaign_id=campaign_id)
    sandbox.add_to_campaign(leads[0]["id"], other["id"])
    sandbox.simulate_reply(leads[0]["id"], "Not this one", campaign_id=other["id"])
    assert sandbox.deliverer.wait_idle(10)

    (delivered,) = receiver.received
    assert parse_qs(urlsplit(delivered.url).query) == {"token": ["s3cret"]}
    body = json.loads(delivered.body)
    assert (body["type"], body["event"]) == ("INBOX_EVENT", "MESSAGE_RECEIVED")
    assert body["lead"]["proEmail"] == "lead1@example.com"
    assert body["campaign"]["id"] == campaign_id
    assert (body["direction"], body["received"], body["text"]) == ("INBOUND", True, "Sounds good")
    assert body["leadId"] == leads[1]["id"] and body["messageId"] and body["conversationId"]
    stats = client.get(f"/campaigns/{campaign_id}/statsleads").json()
    replied = {row["leadId"]: (row["replied"], row["status"]) for row in stats}
    assert replied[leads[1]["id"]] == (True, "TO_QUALIFY")
    assert replied[leads[0]["id"]] == (False, "CONTACTED")


def test_inbox_messages_search_after(
    client: httpx.Client, sandbox: LaGrowthMachineSandbox, clock: Clock
) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 3)
    for lead in leads:
        sandbox.add_message(lead["id"], "Hello", campaign_id=campaign_id)
        clock.advance(60)
        sandbox.simulate_reply(lead["id"], "Hi back", campaign_id=campaign_id, notify=False)
        clock.advance(60)
    texts: list[tuple[str, str]] = []
    token = None
    while True:
        params: dict[str, Any] = {"limit": 2, "direction": "INBOUND"}
        if token:
            params["searchAfter"] = token
        page = client.get("/inbox/conversations/search", params=params).json()
        texts += [(m["lead"]["id"], m["text"]) for m in page["conversations"]]
        token = page["searchAfter"]
        if token is None:
            break
    assert texts == [(lead["id"], "Hi back") for lead in leads]
    conversations = client.get(f"/leads/{leads[0]['id']}/conversations").json()
    messages = client.get(f"/conversations/{conversations[0]['id']}/messages").json()
    assert [(m["direction"], m["text"]) for m in messages] == [("OUTBOUND", "Hello"), ("INBOUND", "Hi back")]
    assert client.get("/inbox/conversations/search", params={"searchAfter": "garbage"}).status_code == 400


def test_admin_reply_route_is_not_counted(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    _, leads = _campaign_with_leads(sandbox, 1)
    base = str(client.base_url).removesuffix("/flow").removesuffix("/flow/")
    response = httpx.post(f"{base}/_sandbox/leads/{leads[0]['id']}/reply", json={"text": "Call me"})
    assert response.json()["direction"] == "INBOUND"
    assert sandbox.calls.total == 0
