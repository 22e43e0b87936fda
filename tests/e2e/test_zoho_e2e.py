"""Zoho CRM end to end: a stage change reaches the HubSpot twin and back with no echo, and a stalled
Zoho deal gets its flag written back through the push.

The Zoho sandbox (OAuth, Get Records, ``PUT /Deals``, ``/actions/watch`` callbacks) and the HubSpot
sandbox are live; the connectors, the webhook intake, :class:`~sync_worker.engine.SyncService`, the
store and the leak scan are real. The mappings are the shipped ones plus one route, Zoho <-> HubSpot
mirrored both ways: the route ``routes.yaml`` ships commented out, uncommented.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import AnyHttpUrl, SecretStr

from connectors.hubspot.client import from_section as hubspot_from_section
from connectors.hubspot.settings import HubSpotSettings
from connectors.zoho import SPEC as ZOHO
from connectors.zoho import ZohoConnector, ZohoSettings
from connectors.zoho.sandbox import ZohoSandboxServer, start_zoho_sandbox
from sync_worker.canonical import StageKey
from sync_worker.connector import Connector, WebhookRequest
from sync_worker.engine import EngineConfig, IngestResult, SyncService
from sync_worker.intake import accept_webhook
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import BuildContext, SandboxOptions
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.sandbox.hubspot import create_app as hubspot_app
from sync_worker.store import SyncStore, upgrade_database
from tests.e2e.conftest import WebhookSink
from tests.engine.test_engine_sandbox import CountingTransport

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HS_TOKEN = "pat-zoho-e2e"
HS_SECRET = "zoho-e2e-client-secret"
EMAIL = "ada@zoho-e2e.example.test"
ROUTE = """
  - name: zoho-hubspot-mirror
    from: zoho
    to: hubspot
    two_way: true
    when: any_change
    match: [link, external_id, email]
    create: false
    stage: mirror
    fields: [amount, close_date, status]
"""


@dataclass
class World:
    zoho_box: ZohoSandboxServer
    hs_box: HubSpotSandbox
    zoho: ZohoConnector
    hubspot: Connector
    hs_wire: CountingTransport
    store: SyncStore
    mappings: Mappings
    service: SyncService
    config: EngineConfig
    sink: WebhookSink
    seen: set[int]
    delivered: int = 0

    def deliver(self, source: str, connector: Connector) -> list[int]:
        """Hand the deliveries not handed over yet to the intake, as the receiver would; inbox ids."""
        if source == "zoho":
            assert self.zoho_box.state.deliverer.wait_idle(10.0)
        else:
            assert self.hs_box.deliverer.wait_idle(10.0)
        ids: list[int] = []
        for request in self.sink.requests_for(source):
            # the sink is shared by the session: only this world's deliveries, each once
            if id(request) in self.seen or not self._ours(source, request):
                continue
            self.seen.add(id(request))
            accepted = accept_webhook(
                source, request, connector=connector, store=self.store, enqueue=ids.append
            )
            assert accepted.stored or accepted.duplicates
        return ids

    def _ours(self, source: str, request: WebhookRequest) -> bool:
        if source == "zoho":
            body = json.loads(request.body)
            return bool(body.get("token") == self.zoho_box.env()["SYNC_ZOHO__WEBHOOK_TOKEN"])
        return bool(request.query.get("world") == str(id(self)))

    def sync_webhooks(self, source: str) -> list[IngestResult]:
        """Deliver and handle the new deliveries of ``source``; the ingest results (none for echoes)."""
        connector = self.zoho if source == "zoho" else self.hubspot
        ids = self.deliver(source, connector)
        self.delivered = len(ids)
        results = self.service.handle_inbox_events(ids)
        assert all(self.store.get_inbox_event(i).processed_at is not None for i in ids)  # type: ignore[union-attr]
        return results

    def sync_echoes(self, source: str) -> None:
        """Deliver and handle the new deliveries of ``source``, which must all be echoes."""
        results = self.sync_webhooks(source)
        assert self.delivered > 0, f"no {source} callback arrived"
        assert all(r.echo or r.enqueued == 0 for r in results), results

    def push(self, target: str, *, at: datetime | None = None) -> int:
        service = self.service
        if at is not None:
            service = SyncService(
                self.store,
                lambda: self.mappings,
                self.service_connectors(),
                config=self.config,
                clock=lambda: at,
            )
        stats = service.push(target)
        assert stats.dead == (), stats.dead
        return stats.writes

    def service_connectors(self) -> dict[str, Connector]:
        return {"zoho": self.zoho, "hubspot": self.hubspot}


@pytest.fixture
def world(tmp_path: Path, webhook_sink: WebhookSink) -> Iterator[World]:
    directory = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", directory)
    routes = directory / "routes.yaml"
    routes.write_text(routes.read_text() + ROUTE)
    mappings = load_mappings(directory)
    zoho_box = start_zoho_sandbox(SandboxOptions(seed=17, deals=0, webhook_base_url=webhook_sink.url))
    hs_box = HubSpotSandbox(
        HubSpotSandboxConfig(
            private_app_tokens=frozenset({HS_TOKEN}), client_secret=HS_SECRET, time_scale=0.001
        )
    )
    handle: ServerHandle = serve_in_thread(hubspot_app(hs_box))
    env = {k.removeprefix("SYNC_ZOHO__").lower(): v for k, v in zoho_box.env().items()}
    section = ZohoSettings.model_validate(env)
    zoho = ZOHO.build(BuildContext(section, None, lambda: mappings, None, lambda: datetime.now(UTC)))
    assert isinstance(zoho, ZohoConnector)
    hs_wire = CountingTransport()
    hubspot = hubspot_from_section(
        HubSpotSettings(
            token=SecretStr(HS_TOKEN), client_secret=SecretStr(HS_SECRET), base_url=AnyHttpUrl(handle.url)
        ),
        lambda: mappings,
        transport=hs_wire,
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    change_source, app_id = hs_box.api_source()
    markers = {"zoho": ZOHO.echo_markers(section), "hubspot": frozenset({f"{change_source}:{app_id}"})}
    config = EngineConfig(coalesce_window=timedelta(0), own_change_sources=markers)
    connectors: dict[str, Connector] = {"zoho": zoho, "hubspot": hubspot}
    service = SyncService(store, lambda: mappings, connectors, config=config)
    world = World(
        zoho_box, hs_box, zoho, hubspot, hs_wire, store, mappings, service, config, webhook_sink, set()
    )
    hs_box.webhook_url = f"{webhook_sink.url}/webhooks/hubspot?world={id(world)}"
    try:
        yield world
    finally:
        zoho.close()
        hubspot.close()
        store.close()
        handle.stop()
        hs_box.close()
        zoho_box.stop()


def _zoho_deal(world: World, stage: str, *, at: datetime, email: str = EMAIL) -> str:
    """A Zoho deal last modified (by a person) at ``at``, with a contact that has ``email``."""
    state = world.zoho_box.state
    contact = state.add_contact("Ada Lovelace", email)
    fields = {
        "Deal_Name": "Acme - Pilot",
        "Stage": stage,
        "Amount": 1000,
        "Closing_Date": (date.today() + timedelta(days=30)).isoformat(),
        "Contact_Name": {"name": contact["Last_Name"], "id": contact["id"]},
    }
    return str(state.seed_deal(fields, at=at)["id"])


def _twins(world: World) -> tuple[str, str]:
    """A Zoho deal and a HubSpot deal in the same canonical stage (qualified) for one contact e-mail,
    pulled in full and linked by the route's e-mail match."""
    zoho_id = _zoho_deal(world, "Qualification", at=datetime.now(UTC) - timedelta(hours=2))
    contact = world.hs_box.contacts.add_contact(EMAIL, firstname="Ada", lastname="Lovelace")
    hs_id = world.hs_box.put_deal(
        {
            "dealname": "Acme - Pilot",
            "dealstage": "qualifiedtobuy",
            "amount": "1000",
            "closedate": f"{(date.today() + timedelta(days=30)).isoformat()}T00:00:00Z",
        }
    )
    world.hs_box.associate_contact(hs_id, contact)
    world.service.poll("hubspot", "deals", full=True)
    world.service.poll("zoho", "deals", full=True)
    world.push("hubspot")
    world.push("zoho")
    record = world.store.get_record("zoho", "deal", zoho_id)
    assert record is not None and record.stage is StageKey.QUALIFIED
    twins = {(r.source, r.external_id) for r in world.store.linked_records(record.id)}
    assert ("hubspot", hs_id) in twins
    # the HubSpot echoes of whatever the first sync wrote route nothing
    world.sync_webhooks("hubspot")
    assert world.push("zoho") == 0
    return zoho_id, hs_id


def test_a_zoho_stage_change_reaches_hubspot_and_back_without_an_echo(world: World) -> None:
    zoho_id, hs_id = _twins(world)
    state = world.zoho_box.state
    # Given nothing changed, an incremental poll finds nothing: the deal at the cursor is not new
    assert world.service.poll("zoho", "deals").records == 0

    # When a person moves the Zoho deal to "Proposal/Price Quote" and Zoho's callback arrives
    state.write(zoho_id, {"Stage": "Proposal/Price Quote"}, state.person)
    world.sync_webhooks("zoho")
    world.hs_wire.calls.clear()
    assert world.push("hubspot") == 1
    # Then the HubSpot twin is in the stage mapped to canonical proposal
    assert world.hs_box.deal_properties(hs_id)["dealstage"] == "decisionmakerboughtin"  # type: ignore[index]
    assert world.hs_wire.writes() == [("POST", "/crm/v3/objects/deals/batch/update")]
    # And HubSpot's webhooks about our write are echoes: nothing goes back to Zoho
    before = copy.deepcopy(state.deals[zoho_id])
    world.sync_echoes("hubspot")
    assert world.push("zoho") == 0
    assert state.deals[zoho_id] == before

    # When a person then moves the HubSpot deal on to "Contract Sent"
    world.hs_box.simulate_user_change(hs_id, {"dealstage": "contractsent"})
    world.sync_webhooks("hubspot")
    assert world.push("zoho") == 1
    # Then the Zoho deal is in the stage mapped to canonical negotiation, written by the integration
    deal = state.deals[zoho_id]
    assert (deal["Stage"], deal["Modified_By"]["id"]) == ("Negotiation/Review", state.integration.id)
    # And Zoho's callback for our write is an echo (Modified_By): nothing goes back to HubSpot
    world.hs_wire.calls.clear()
    world.sync_echoes("zoho")
    assert world.push("hubspot") == 0
    assert world.hs_wire.writes() == []
    assert world.hs_box.deal_properties(hs_id)["dealstage"] == "contractsent"  # type: ignore[index]
    # And a poll of either side finds only the echo, which routes nothing
    assert world.service.poll("zoho", "deals").enqueued == 0
    assert world.service.poll("hubspot", "deals").enqueued == 0
    assert world.push("zoho") == 0 and world.push("hubspot") == 0


def test_a_stalled_zoho_deal_gets_its_flag_written_back_through_the_push(world: World) -> None:
    state = world.zoho_box.state
    # Given a Zoho deal untouched in "Proposal/Price Quote" for 40 days (canonical proposal allows 21)
    max_days = world.mappings.model.get(StageKey.PROPOSAL).max_days
    assert max_days is not None and max_days < 40
    stalled = _zoho_deal(world, "Proposal/Price Quote", at=datetime.now(UTC) - timedelta(days=40))
    fresh = _zoho_deal(world, "Proposal/Price Quote", at=datetime.now(UTC) - timedelta(days=2))
    world.service.poll("zoho", "deals", full=True)
    # When the leak scan runs after the first sync
    now = datetime.now(UTC)
    scan = scan_leaks(world.store, world.mappings.model, now=now, alerts=False)
    record = world.store.get_record("zoho", "deal", stalled)
    assert record is not None
    flags = [f for f in scan.raised if f.record_id == record.id]
    assert [f.rule for f in flags] == ["stalled"]
    assert {f.record_id for f in scan.raised if f.rule == "stalled"} == {record.id}
    # Then the scan queued one outbox item of kind flag for Zoho, which the push writes into the
    # deal's flag field
    queued = world.store.due_outbox(now + timedelta(minutes=1), 500, target="zoho")
    assert [(i.kind, i.payload.get("external_id")) for i in queued] == [("flag", stalled)]
    assert world.push("zoho") == 1
    deal = state.deals[stalled]
    assert deal["Leak_Flag"].startswith("stalled: ") and "stage proposal" in deal["Leak_Flag"]
    assert deal["Modified_By"]["id"] == state.integration.id
    assert "Leak_Flag" not in state.deals[fresh]
    # And Zoho's callback for the write is an echo that routes nothing
    world.sync_echoes("zoho")
    # And a second scan and push write nothing more: the flag went back once
    scan_leaks(world.store, world.mappings.model, now=now + timedelta(hours=1), alerts=False)
    assert world.push("zoho", at=now + timedelta(hours=2)) == 0
    assert world.push("hubspot", at=now + timedelta(hours=2)) == 0
