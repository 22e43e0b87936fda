"""The LaGrowthMachine sandbox on the vendor's paths and envelopes: key auth (Bearer, x-api-key,
?apikey=), paging, lead status, the conversation search, 50 calls / 10 s, INBOX_MESSAGE webhooks.

The shapes asserted are those the vendor's own clients send and read
(``LaGrowthMachine/n8n-nodes-lagrowthmachine``, ``LaGrowthMachine/lgm-mcp-server``).
"""

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


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": f"Bearer {KEY}"}, {}),
        ({"x-api-key": KEY}, {}),
        ({}, {"apikey": KEY}),
    ],
)
def test_the_key_is_accepted_three_equivalent_ways(
    sandbox: LaGrowthMachineSandbox, headers: dict[str, str], params: dict[str, str]
) -> None:
    with serve_in_thread(create_app(sandbox)) as handle:
        members = httpx.get(handle.url + "/flow/members", headers=headers, params=params)
    assert members.status_code == 200
    assert set(members.json()[0]) == {"id", "name", "label"}


def test_a_missing_or_wrong_key_is_401(sandbox: LaGrowthMachineSandbox) -> None:
    with serve_in_thread(create_app(sandbox)) as handle:
        url = handle.url + "/flow/members"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, params={"apikey": "nope"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        assert httpx.get(url, headers={"x-api-key": "nope"}).status_code == 401


def test_campaigns_page_with_skip_and_limit(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    ids = [sandbox.add_campaign(f"Campaign {i}")["id"] for i in range(30)]
    first = client.get("/campaigns").json()
    second = client.get("/campaigns", params={"skip": 25, "limit": 25}).json()
    assert set(first) == {"campaigns"}
    assert [c["id"] for c in first["campaigns"] + second["campaigns"]] == ids
    # "The campaigns endpoint caps limit at 25 per page (higher values return empty)."
    assert client.get("/campaigns", params={"limit": 26}).json() == {"campaigns": []}
    assert client.get(f"/campaigns/{ids[3]}").json()["campaign"]["name"] == "Campaign 3"


def test_lead_stats_cursor_pages_by_25(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 60)
    seen: list[str] = []
    sizes: list[int] = []
    more_flags: list[bool] = []
    after: str | None = None
    while True:
        params = {"getLeadsAfter": after} if after else {}
        page = client.get(f"/campaigns/{campaign_id}/statsleads", params=params).json()
        assert set(page) == {"leads", "hasMore"}
        rows = page["leads"]
        sizes.append(len(rows))
        more_flags.append(page["hasMore"])
        seen += [row["id"] for row in rows]
        if not page["hasMore"]:
            break
        after = rows[-1]["id"]
    assert (sizes, more_flags) == ([25, 25, 10], [True, True, False])
    assert seen == [lead["id"] for lead in leads]
    resumed = client.get(f"/campaigns/{campaign_id}/statsleads", params={"getLeadsAfter": seen[24]}).json()
    assert [row["leadId"] for row in resumed["leads"]] == seen[25:50]
    first = resumed["leads"][0]
    assert first["email"] == leads[25]["proEmail"] and first["status"] == "CONTACTED"
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
    assert response.json() == {
        "logs": [
            {
                "campaign": "Q1 outbound",
                "campaignId": campaign_id,
                "leadId": leads[1]["id"],
                "leadStatus": "CONVERTED",
                "leadUpdated": True,
                "reason": None,
            }
        ]
    }
    assert sandbox.memberships[(campaign_id, leads[1]["id"])]["status"] == "CONVERTED"
    assert sandbox.memberships[(campaign_id, leads[0]["id"])]["status"] == "CONTACTED"

    # `campaign` repeated for several names, as the vendor's node sends a list.
    by_name = client.post(
        "/leads/status",
        data={
            "status": "NOT_INTERESTED",
            "campaign": ["Q1 outbound", "Nope"],
            "proEmail": "lead0@example.com",
        },
    )
    assert [(log["leadUpdated"], log["reason"]) for log in by_name.json()["logs"]] == [
        (True, None),
        (False, "unknown campaign"),
    ]
    assert sandbox.memberships[(campaign_id, leads[0]["id"])]["status"] == "NOT_INTERESTED"
    every = client.post(
        "/leads/status", data={"status": "CALL_BOOKED", "campaign": "all", "proEmail": "lead0@example.com"}
    )
    assert [log["campaign"] for log in every.json()["logs"]] == ["Q1 outbound"]
    assert sandbox.memberships[(campaign_id, leads[0]["id"])]["status"] == "CALL_BOOKED"
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
    # The published INBOX_MESSAGE shape: no top-level message id; the message in messages[].
    assert (body["type"], body["messageChannel"]) == ("INBOX_MESSAGE", "EMAIL")
    assert "messageId" not in body
    lead = body["lead"]
    assert (lead["id"], lead["email"], lead["linkedinUrl"]) == (leads[1]["id"], "lead1@example.com", None)
    (message,) = body["messages"]
    assert set(message) == {"id", "content", "direction", "createdAt"}
    assert (message["direction"], message["content"]) == ("INCOMING", "Sounds good")
    stats = client.get(f"/campaigns/{campaign_id}/statsleads").json()["leads"]
    replied = {row["leadId"]: (row["replied"], row["status"]) for row in stats}
    assert replied[leads[1]["id"]] == (True, "TO_QUALIFY")
    assert replied[leads[0]["id"]] == (False, "CONTACTED")


def _search(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every conversation of the search, following ``searchAfter=<nextToken>`` while ``hasMore``."""
    found: list[dict[str, Any]] = []
    while True:
        page = client.get("/conversations/search", params=params).json()
        assert set(page) == {"data", "hasMore", "nextToken"}
        found += page["data"]
        if not (page["hasMore"] and page["nextToken"]):
            return found
        params["searchAfter"] = page["nextToken"]


def test_conversation_search_pages_with_search_after(
    client: httpx.Client, sandbox: LaGrowthMachineSandbox, clock: Clock
) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 4)
    for lead in leads:
        sandbox.add_message(lead["id"], "Hello", campaign_id=campaign_id)
        clock.advance(60)
    for lead in leads[:3]:
        sandbox.simulate_reply(lead["id"], "Hi back", campaign_id=campaign_id, notify=False)
        clock.advance(60)

    # Oldest first, two a page, only conversations where the lead replied.
    ascending = _search(client, limit=2, leadReplied="true", sortField="lastMessageAt", sortDirection=1)
    assert [c["leadId"] for c in ascending] == [lead["id"] for lead in leads[:3]]
    assert {(c["leadReplied"], c["lastMessageStatus"], c["lastMessageType"]) for c in ascending} == {
        (True, "RECEIVED", "EMAIL")
    }
    stamps = [c["lastMessageAt"] for c in ascending]
    assert stamps == sorted(stamps) and all(isinstance(s, int) for s in stamps)
    assert ascending[0]["lead"]["proEmail"] == "lead0@example.com"
    # The default order is newest first; the other filters narrow it.
    newest = _search(client)
    assert [c["leadId"] for c in newest] == [lead["id"] for lead in reversed(leads[:3])] + [leads[3]["id"]]
    assert [c["leadId"] for c in _search(client, lastMessageStatus="SENT")] == [leads[3]["id"]]
    assert [c["leadId"] for c in _search(client, leadIds=f"{leads[1]['id']},{leads[2]['id']}")] == [
        leads[2]["id"],
        leads[1]["id"],
    ]
    # A conversation that changes moves past a saved token.
    saved = client.get("/conversations/search", params={"sortDirection": 1, "limit": 4}).json()["nextToken"]
    sandbox.simulate_reply(leads[3]["id"], "Late answer", campaign_id=campaign_id, notify=False)
    after = _search(client, sortDirection=1, searchAfter=saved)
    assert [(c["leadId"], c["lastMessageStatus"]) for c in after] == [(leads[3]["id"], "RECEIVED")]
    assert client.get("/conversations/search", params={"searchAfter": "garbage"}).status_code == 400
    assert client.get("/inbox/conversations/search").status_code == 404


def test_lead_conversations_and_their_messages(
    client: httpx.Client, sandbox: LaGrowthMachineSandbox, clock: Clock
) -> None:
    campaign_id, leads = _campaign_with_leads(sandbox, 1)
    sandbox.add_message(leads[0]["id"], "Hello", campaign_id=campaign_id)
    clock.advance(60)
    sandbox.simulate_reply(leads[0]["id"], "Hi back", campaign_id=campaign_id, notify=False)
    (conversation,) = client.get(f"/leads/{leads[0]['id']}/conversations").json()["data"]
    page = client.get(f"/conversations/{conversation['id']}/messages", params={"page": 0}).json()
    assert page["total"] == 2
    assert [(m["direction"], m["content"]) for m in page["data"]] == [
        ("OUTGOING", "Hello"),
        ("INCOMING", "Hi back"),
    ]
    assert client.get(f"/conversations/{conversation['id']}/messages", params={"page": 1}).json() == {
        "data": [],
        "total": 2,
    }


def test_admin_reply_route_is_not_counted(client: httpx.Client, sandbox: LaGrowthMachineSandbox) -> None:
    _, leads = _campaign_with_leads(sandbox, 1)
    base = str(client.base_url).removesuffix("/flow").removesuffix("/flow/")
    response = httpx.post(f"{base}/_sandbox/leads/{leads[0]['id']}/reply", json={"text": "Call me"})
    assert response.json()["direction"] == "INBOUND"
    assert sandbox.calls.total == 0
