"""End-to-end: the sync service against the three sandbox servers, with the real connectors.

The sandboxes deliver their webhooks to a small capturing server; each test feeds what arrived
through the connector's ``parse_webhook`` into the inbox (as the receiver does) and calls the
service entry points the actors call. API calls are counted by the sandboxes themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import AnyHttpUrl, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import connectors.hubspot as hubspot_connector
import connectors.lagrowthmachine as lgm_connector
import connectors.pipedrive as pipedrive_connector
from connectors.hubspot.settings import HubSpotSettings
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.connector import Connector
from sync_worker.engine import EngineConfig, SyncService
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import Mappings
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.settings import Settings
from sync_worker.store import SyncStore

pytestmark = pytest.mark.slow


@dataclass
class Capture:
    """Webhook bodies received, per source (``/webhooks/<source>``)."""

    handle: ServerHandle | None = None
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, source: str) -> list[bytes]:
        with self.lock:
            return self.bodies.pop(source, [])


@pytest.fixture
def capture() -> Iterator[Capture]:
    cap = Capture()

    async def hook(request: Request) -> Response:
        body = await request.body()
        with cap.lock:
            cap.bodies.setdefault(request.path_params["source"], []).append(body)
        return Response(status_code=200)

    cap.handle = serve_in_thread(Starlette(routes=[Route("/webhooks/{source}", hook, methods=["POST"])]))
    try:
        yield cap
    finally:
        cap.handle.stop()


class CountingTransport(httpx.BaseTransport):
    """Counts every request a connector sends to its sandbox, by method and path."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.calls: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()

    def writes(self) -> list[tuple[str, str]]:
        """Requests that change data: PATCH, PUT, and POSTs other than searches and batch reads."""
        return [
            (method, path)
            for method, path in self.calls
            if method in ("PATCH", "PUT")
            or (method == "POST" and not path.endswith(("/search", "/batch/read")))
        ]


class E2E:
    """Sandbox + real connectors + the service, and helpers to move webhooks into the inbox."""

    def __init__(self, box: RunningSandbox, capture: Capture, store: SyncStore, mappings: Mappings) -> None:
        self.box, self.capture, self.store = box, capture, store
        creds = box.credentials
        settings = Settings(
            hubspot=HubSpotSettings(
                token=SecretStr(creds.hubspot_token),
                client_secret=SecretStr(creds.hubspot_client_secret),
                base_url=AnyHttpUrl(box.hubspot_url),
            ),
            pipedrive=PipedriveSettings(
                api_token=SecretStr(creds.pipedrive_api_token), base_url=AnyHttpUrl(box.pipedrive_url)
            ),
            lagrowthmachine=LaGrowthMachineSettings(
                api_key=SecretStr(creds.lgm_api_key), base_url=AnyHttpUrl(box.lgm_url)
            ),
        )
        self.wire = {name: CountingTransport() for name in ("hubspot", "pipedrive", "lagrowthmachine")}
        self.connectors: dict[str, Connector] = {
            "hubspot": hubspot_connector.from_settings(settings, mappings, transport=self.wire["hubspot"]),
            "pipedrive": pipedrive_connector.from_settings(
                settings, mappings, transport=self.wire["pipedrive"]
            ),
            "lagrowthmachine": lgm_connector.from_settings(
                settings, mappings, transport=self.wire["lagrowthmachine"]
            ),
        }
        source, app_id = box.hubspot.api_source()
        markers = {
            "hubspot": frozenset({f"{source}:{app_id}"}),
            "pipedrive": frozenset({f"api:{box.pipedrive.user_id}"}),
        }
        self.config = EngineConfig(coalesce_window=timedelta(0), own_change_sources=markers)
        self.service = SyncService(store, mappings, self.connectors, config=self.config)

    def close(self) -> None:
        for connector in self.connectors.values():
            connector.close()

    def deliveries(self, source: str) -> list[int]:
        """Wait for the sandbox's webhooks, then accept them into the inbox; the new inbox ids."""
        deliverer = {
            "hubspot": self.box.hubspot.deliverer,
            "pipedrive": self.box.pipedrive.deliverer,
            "lagrowthmachine": self.box.lgm.deliverer,
        }[source]
        assert deliverer.wait_idle(10.0)
        ids: list[int] = []
        for body in self.capture.take(source):
            events = [e for e in self.connectors[source].parse_webhook(body) if e.handled]
            ids.extend(self.store.accept_events(source, events).new_ids)
        return ids

    def sync_webhooks(self, *sources: str) -> None:
        for source in sources:
            self.service.handle_inbox_events(self.deliveries(source))

    def push_all(self, at: datetime | None = None) -> None:
        """Push every target (at time ``at``: the outbox items due by then; default now)."""
        service = self.service
        if at is not None:
            service = SyncService(
                self.store, self.service.mappings(), self.connectors, config=self.config, clock=lambda: at
            )
        for target in ("hubspot", "pipedrive", "lagrowthmachine"):
            stats = service.push(target)
            assert stats.dead == (), stats.dead

    def stage_id(self, name: str) -> int:
        return int(next(s["id"] for s in self.box.pipedrive.stages.values() if s["name"] == name))

    def linked_deals(self, **pd_fields: Any) -> tuple[int, str]:
        """A Pipedrive deal and a HubSpot deal in the same stage, pulled into the store and linked."""
        pd = self.box.pipedrive.create_deal(
            {"title": "Acme - Pilot", "stage_id": self.stage_id("Contact Made"), "value": 1000, **pd_fields},
            notify=False,
        )
        hs = self.box.hubspot.put_deal(
            {"dealname": "Acme - Pilot", "dealstage": "appointmentscheduled", "amount": "1000"}
        )
        self.service.poll("pipedrive", "deals")
        self.service.poll("hubspot", "deals")
        pd_rec = self.store.get_record("pipedrive", "deal", str(pd["id"]))
        hs_rec = self.store.get_record("hubspot", "deal", hs)
        assert pd_rec is not None and hs_rec is not None
        self.store.link_records([pd_rec.id, hs_rec.id])
        self.reset_counts()
        return int(pd["id"]), hs

    def reset_counts(self) -> None:
        for transport in self.wire.values():
            transport.calls.clear()
        self.box.hubspot.calls.reset()
        self.box.pipedrive.calls.reset()

    def writes(self, system: str) -> list[tuple[str, str]]:
        return self.wire[system].writes()


@pytest.fixture
def e2e(capture: Capture, store: SyncStore, mappings: Mappings, tmp_path: Path) -> Iterator[E2E]:
    assert capture.handle is not None
    box = start_sandbox(deals=0, webhook_base_url=capture.handle.url, time_scale=0.001)
    world = E2E(box, capture, store, mappings)
    try:
        yield world
    finally:
        world.close()
        box.stop()


@pytest.fixture
def store(tmp_path: Path, migrated_db: Path) -> Iterator[SyncStore]:
    # The engine suite's store with the real clock: the sandboxes stamp changes with real time.
    target = tmp_path / "e2e.db"
    target.write_bytes(migrated_db.read_bytes())
    sync_store = SyncStore(f"sqlite:///{target}")
    try:
        yield sync_store
    finally:
        sync_store.close()


def _lead(box: RunningSandbox, email: str = "ada@example.com") -> tuple[str, str]:
    campaign = box.lgm.add_campaign("Q3 outbound")["id"]
    lead = box.lgm.add_lead(firstname="Ada", lastname="Lovelace", email=email, campaign_id=campaign)
    return lead["id"], campaign


def test_lgm_reply_creates_the_hubspot_deal_at_contacted(e2e: E2E) -> None:
    lead_id, campaign = _lead(e2e.box)
    # When the lead replies in LaGrowthMachine
    e2e.box.lgm.simulate_reply(lead_id, campaign_id=campaign)
    e2e.sync_webhooks("lagrowthmachine")
    e2e.push_all()
    # Then HubSpot has one deal, in the stage mapped to canonical "contacted"
    deals = e2e.box.hubspot.live_deals()
    assert len(deals) == 1
    deal_id, props = deals[0]
    assert props["dealstage"] == "appointmentscheduled"
    assert props["dealname"] == "Ada Lovelace"
    assert e2e.writes("hubspot") == [("POST", "/crm/v3/objects/deals/batch/create")]
    # And the echo of our create is recognised without a read and routes nothing
    e2e.reset_counts()
    e2e.sync_webhooks("hubspot")
    e2e.push_all()
    assert e2e.wire["hubspot"].calls == []
    assert e2e.box.hubspot.calls.total == 0
    assert e2e.store.get_record("hubspot", "deal", deal_id) is not None


def test_pipedrive_stage_change_reaches_hubspot_once_and_nothing_comes_back(e2e: E2E) -> None:
    pd_id, hs_id = e2e.linked_deals()
    # When a person moves the Pipedrive deal to "Demo Scheduled"
    e2e.box.pipedrive.simulate_user_change(pd_id, stage_id=e2e.stage_id("Demo Scheduled"))
    e2e.sync_webhooks("pipedrive")
    e2e.push_all()
    # Then HubSpot shows the stage mapped to canonical "meeting"
    assert e2e.box.hubspot.deal_properties(hs_id)["dealstage"] == "presentationscheduled"  # type: ignore[index]
    # And when HubSpot's webhooks for our write come back, nothing is written back to Pipedrive
    e2e.sync_webhooks("hubspot")
    e2e.push_all()
    e2e.sync_webhooks("pipedrive", "hubspot")
    e2e.push_all()
    assert e2e.writes("hubspot") == [("POST", "/crm/v3/objects/deals/batch/update")]
    assert e2e.writes("pipedrive") == []


def test_two_way_without_change_source_markers_still_does_not_bounce(
    e2e: E2E, store: SyncStore, mappings: Mappings
) -> None:
    # The service knows nothing of the providers' change sources: write memory alone must do
    service = SyncService(store, mappings, e2e.connectors, config=EngineConfig(coalesce_window=timedelta(0)))
    e2e.service = service
    pd_id, hs_id = e2e.linked_deals()
    e2e.box.hubspot.simulate_user_change(hs_id, {"amount": "2500"})
    e2e.sync_webhooks("hubspot")
    e2e.push_all()
    assert e2e.box.pipedrive.get_deal(pd_id)["value"] == 2500
    for _ in range(2):
        e2e.sync_webhooks("pipedrive", "hubspot")
        e2e.push_all()
    assert e2e.writes("pipedrive") == [("PATCH", f"/api/v2/deals/{pd_id}")]
    assert e2e.writes("hubspot") == []


def test_crm_win_sets_the_lagrowthmachine_lead_status(e2e: E2E) -> None:
    lead_id, campaign = _lead(e2e.box)
    e2e.box.lgm.simulate_reply(lead_id, campaign_id=campaign)
    e2e.sync_webhooks("lagrowthmachine")
    e2e.push_all()
    e2e.sync_webhooks("hubspot", "pipedrive")
    ((deal_id, _),) = e2e.box.hubspot.live_deals()
    # When the deal is won in HubSpot
    e2e.box.hubspot.simulate_user_change(deal_id, {"dealstage": "closedwon"})
    e2e.sync_webhooks("hubspot")
    e2e.push_all()
    # Then the lead's status in its campaign is the one mapped to canonical "won"
    assert e2e.box.lgm.memberships[(campaign, lead_id)]["status"] == "CONVERTED"
    # And the Pipedrive deal created for the same reply is won too
    (pd_deal,) = [d for d in e2e.box.pipedrive.deals.values() if not d["is_deleted"]]
    assert pd_deal["status"] == "won"


def test_the_same_inbox_event_handled_twice_writes_once(e2e: E2E) -> None:
    pd_id, hs_id = e2e.linked_deals()
    e2e.box.pipedrive.simulate_user_change(pd_id, value=4321)
    assert e2e.box.pipedrive.deliverer.wait_idle(10.0)
    (body,) = e2e.capture.take("pipedrive")
    events = e2e.connectors["pipedrive"].parse_webhook(body)
    ids = e2e.store.accept_events("pipedrive", events).new_ids
    # The sender retries the same delivery: the inbox drops it
    assert e2e.store.accept_events("pipedrive", events).new_ids == ()
    # The broker redelivers the message: the second handling does nothing
    e2e.service.handle_inbox_events(ids)
    e2e.service.handle_inbox_events(ids)
    e2e.push_all()
    e2e.push_all()
    assert e2e.box.hubspot.deal_properties(hs_id)["amount"] == "4321"  # type: ignore[index]
    assert e2e.writes("hubspot") == [("POST", "/crm/v3/objects/deals/batch/update")]


def test_poll_after_missed_webhooks_converges_both_sides(e2e: E2E) -> None:
    pd_id, hs_id = e2e.linked_deals()
    # Changes on both sides whose webhooks are lost
    e2e.box.pipedrive.simulate_user_change(pd_id, stage_id=e2e.stage_id("Proposal Made"))
    e2e.box.hubspot.simulate_user_change(hs_id, {"amount": "7777"})
    assert e2e.box.pipedrive.deliverer.wait_idle(10.0) and e2e.box.hubspot.deliverer.wait_idle(10.0)
    e2e.capture.take("pipedrive")
    e2e.capture.take("hubspot")
    # When both sides are polled and the outbox pushed
    e2e.service.poll("pipedrive", "deals")
    e2e.service.poll("hubspot", "deals")
    e2e.push_all()
    # Then both sides agree: the stage from Pipedrive, the amount from HubSpot
    assert e2e.box.hubspot.deal_properties(hs_id)["dealstage"] == "decisionmakerboughtin"  # type: ignore[index]
    assert e2e.box.pipedrive.get_deal(pd_id)["value"] == 7777
    # And further polls find nothing left to write (converged, no ping-pong)
    e2e.reset_counts()
    for _ in range(2):
        e2e.service.poll("pipedrive", "deals")
        e2e.service.poll("hubspot", "deals")
        e2e.push_all()
    assert e2e.writes("hubspot") == []
    assert e2e.writes("pipedrive") == []
    assert Decimal(e2e.box.hubspot.deal_properties(hs_id)["amount"]) == Decimal(7777)  # type: ignore[index]


def test_a_leak_flag_reaches_every_copy_through_the_push_exactly_once(e2e: E2E) -> None:
    # Given a deal kept in Pipedrive and in HubSpot, linked, with the flag properties in place
    pd_id, hs_id = e2e.linked_deals()
    e2e.connectors["hubspot"].prepare()
    notes_before = [n for n in e2e.box.pipedrive.notes.values() if n["deal_id"] == pd_id]
    # When a leak scan, run long after the stage's time limit, flags it and the pushes run
    later = datetime.now(UTC) + timedelta(days=400)
    scan = scan_leaks(e2e.store, e2e.service.mappings().model, now=later, alerts=False)
    assert {f.rule for f in scan.raised} == {"stalled"}
    e2e.reset_counts()
    e2e.push_all(at=later)
    # Then the HubSpot deal carries the flag in its properties and Pipedrive has one note about it
    props = e2e.box.hubspot.deal_properties(hs_id)
    assert props is not None and props["sync_worker_leak_status"] == "stalled"
    notes = [n for n in e2e.box.pipedrive.notes.values() if n["deal_id"] == pd_id]
    assert len(notes) == len(notes_before) + 1 and "stalled" in notes[-1]["content"].lower()
    assert e2e.writes("hubspot") and e2e.writes("pipedrive")
    # And a second scan and push write nothing more anywhere
    scan_leaks(e2e.store, e2e.service.mappings().model, now=later + timedelta(hours=1), alerts=False)
    e2e.reset_counts()
    e2e.push_all(at=later + timedelta(hours=2))
    assert e2e.writes("hubspot") == [] and e2e.writes("pipedrive") == []
    assert len([n for n in e2e.box.pipedrive.notes.values() if n["deal_id"] == pd_id]) == len(notes)
