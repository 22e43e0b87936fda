"""Seed data is repeatable and realistic; the runner's environment points at live, authenticated servers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync_worker.sandbox.hubspot import HubSpotSandbox
from sync_worker.sandbox.lagrowthmachine import LaGrowthMachineSandbox
from sync_worker.sandbox.pipedrive import PipedriveSandbox
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.sandbox.seed import STALLED_AFTER_DAYS, SeedSummary, seed_sandboxes
from sync_worker.settings import Settings
from tests.sandbox.conftest import Receiver

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


def _seeded(
    seed: int, deals: int = 60
) -> tuple[HubSpotSandbox, PipedriveSandbox, LaGrowthMachineSandbox, SeedSummary]:
    hubspot = HubSpotSandbox(clock=lambda: NOW.timestamp())
    pipedrive = PipedriveSandbox(api_token="t", now=lambda: NOW)
    lgm = LaGrowthMachineSandbox(api_key="k", now=lambda: NOW)
    summary = seed_sandboxes(hubspot, pipedrive, lgm, deals=deals, seed=seed, now=NOW)
    for box in (hubspot, pipedrive, lgm):
        box.close()
    return hubspot, pipedrive, lgm, summary


def _snapshot(
    hubspot: HubSpotSandbox, pipedrive: PipedriveSandbox, lgm: LaGrowthMachineSandbox
) -> dict[str, Any]:
    return {
        "deals": pipedrive.deals,
        "persons": pipedrive.persons,
        "stages": pipedrive.stages,
        "hubspot": hubspot.live_deals(),
        "leads": lgm.leads,
        "memberships": {f"{c}/{lead}": m for (c, lead), m in lgm.memberships.items()},
        "messages": lgm.messages,
    }


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = _seeded(7)
    again = _seeded(7)
    other = _seeded(8)
    assert first[3] == again[3]
    assert _snapshot(*first[:3]) == _snapshot(*again[:3])
    assert _snapshot(*first[:3])["deals"] != _snapshot(*other[:3])["deals"]


def test_seed_data_is_realistic() -> None:
    hubspot, pipedrive, lgm, summary = _seeded(3, deals=120)
    deals = [pipedrive.deals[i] for i in summary.pipedrive_deal_ids]
    assert len(deals) == 120
    assert len({d["pipeline_id"] for d in deals}) == 2
    assert len({d["stage_id"] for d in deals}) >= 7
    assert {d["currency"] for d in deals} >= {"EUR", "USD"}
    assert len({d["owner_id"] for d in deals}) == 3
    assert all(d["value"] > 0 and isinstance(d["value"], int) for d in deals)
    for deal in deals:
        emails = pipedrive.persons[deal["person_id"]]["emails"]
        assert emails and "@" in emails[0]["value"]
        assert deal["add_time"] <= deal["stage_change_time"] <= NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    lost = [d for d in deals if d["status"] == "lost"]
    won = [d for d in deals if d["status"] == "won"]
    assert len(lost) == summary.lost > 0 and len(won) == summary.won > 0
    assert all(d["lost_reason"] and d["lost_time"] and d["close_time"] for d in lost)
    assert all(d["won_time"] and d["lost_reason"] is None for d in won)
    assert summary.stalled_deal_ids
    for deal_id in summary.stalled_deal_ids:
        stalled = pipedrive.deals[deal_id]
        changed = datetime.fromisoformat(stalled["stage_change_time"])
        assert stalled["status"] == "open" and (NOW - changed).days > STALLED_AFTER_DAYS

    assert len(summary.hubspot_deal_ids) == 30
    names = {pipedrive.deals[i]["title"] for i in summary.pipedrive_deal_ids[:30]}
    assert {props["dealname"] for _, props in hubspot.live_deals()} == names

    person_emails = {p["emails"][0]["value"] for p in pipedrive.persons.values()}
    replied_emails = {lgm.leads[i]["proEmail"] for i in summary.replied_lead_ids}
    orphan_emails = {lgm.leads[i]["proEmail"] for i in summary.replied_without_deal_ids}
    assert replied_emails & person_emails, "some replied leads match deal contacts"
    assert orphan_emails and not orphan_emails & person_emails
    inbound = {m["leadId"] for m in lgm.messages if m["direction"] == "INBOUND"}
    assert inbound == set(summary.replied_lead_ids)


@pytest.fixture
def running(receiver: Receiver) -> Iterator[RunningSandbox]:
    with start_sandbox(seed=2, deals=20, time_scale=0.001, webhook_base_url=receiver.handle.url) as box:
        yield box


def test_runner_env_points_at_live_servers(running: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in running.env().items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    hubspot = httpx.get(
        str(settings.hubspot.base_url).rstrip("/") + "/crm/v3/objects/deals",
        headers={"authorization": f"Bearer {settings.hubspot.token.get_secret_value()}"},  # type: ignore[union-attr]
    )
    assert hubspot.status_code == 200 and len(hubspot.json()["results"]) > 0
    pipedrive = httpx.get(
        str(settings.pipedrive.base_url).rstrip("/") + "/api/v2/deals",
        headers={"x-api-token": settings.pipedrive.api_token.get_secret_value()},  # type: ignore[union-attr]
    )
    assert pipedrive.status_code == 200 and len(pipedrive.json()["data"]) > 0
    lgm = httpx.get(
        str(settings.lagrowthmachine.base_url).rstrip("/") + "/campaigns",
        params={"apikey": settings.lagrowthmachine.api_key.get_secret_value()},  # type: ignore[union-attr]
    )
    assert lgm.status_code == 200 and len(lgm.json()["campaigns"]) == 3
    unauthorised = httpx.get(str(settings.pipedrive.base_url).rstrip("/") + "/api/v2/deals")
    assert unauthorised.status_code == 401
    assert running.credentials.pipedrive_api_token not in repr(running)


def test_runner_delivers_webhooks_to_the_service_paths(running: RunningSandbox, receiver: Receiver) -> None:
    creds = running.credentials
    deal_id = next(
        d for d in running.summary.pipedrive_deal_ids if not running.pipedrive.deals[d]["is_deleted"]
    )
    running.pipedrive.simulate_user_change(deal_id, title="Changed in the UI")
    running.lgm.simulate_reply(running.summary.lgm_lead_ids[0], "Interested!")
    running.hubspot.simulate_user_change(running.summary.hubspot_deal_ids[0], {"amount": "12345"})
    for box in (running.pipedrive, running.lgm, running.hubspot):
        assert box.deliverer.wait_idle(10)
    by_path = {r.path: r for r in receiver.received}
    assert set(by_path) == {"/webhooks/pipedrive", "/webhooks/lagrowthmachine", "/webhooks/hubspot"}
    expected = (
        "Basic "
        + base64.b64encode(
            f"{creds.pipedrive_webhook_user}:{creds.pipedrive_webhook_password}".encode()
        ).decode()
    )
    assert by_path["/webhooks/pipedrive"].headers["authorization"] == expected
    assert json.loads(by_path["/webhooks/pipedrive"].body)["meta"]["change_source"] == "app"
    token = parse_qs(urlsplit(by_path["/webhooks/lagrowthmachine"].url).query)["token"]
    assert token == [creds.lgm_webhook_secret]
    assert "x-hubspot-signature-v3" in by_path["/webhooks/hubspot"].headers
