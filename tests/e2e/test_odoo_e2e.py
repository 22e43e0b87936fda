"""Odoo end to end: a lost opportunity raises a dropped flag and its Pipedrive twin follows.

The Odoo sandbox (JSON-2 and JSON-RPC) and the Pipedrive sandbox are live; the connectors, the
webhook intake, :class:`~sync_worker.engine.SyncService`, the store and the leak scan are real. The
mappings are the shipped ones plus one route, Odoo <-> Pipedrive mirrored both ways by e-mail: the
route ``routes.yaml`` ships commented out, uncommented.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from connectors.odoo import OdooConnector, OdooSettings, from_settings
from connectors.odoo.sandbox import OdooSandbox, start_sandbox
from connectors.pipedrive.client import from_section as pipedrive_from_section
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import Connector, WebhookRequest
from sync_worker.engine import EngineConfig, SyncService, full_pull_started
from sync_worker.intake import accept_webhook
from sync_worker.leaks import deserialise_update, scan_leaks
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.sandbox.pipedrive import PipedriveSandbox
from sync_worker.sandbox.pipedrive import create_app as pipedrive_app
from sync_worker.store import SyncStore, upgrade_database
from tests.e2e.conftest import WebhookSink

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PD_TOKEN = "pd-e2e-token"
ROUTE = """
  - name: odoo-pipedrive-mirror
    from: odoo
    to: pipedrive
    two_way: true
    when: any_change
    match: [link, email]
    create: false
    stage: mirror
    fields: [status, lost_reason, amount, close_date]
"""


@dataclass
class World:
    odoo_box: OdooSandbox
    pd_box: PipedriveSandbox
    odoo: OdooConnector
    pd: Connector
    store: SyncStore
    mappings: Mappings
    service: SyncService
    sink: WebhookSink


@pytest.fixture(params=[19, 17], ids=["json2", "jsonrpc"])
def world(request: pytest.FixtureRequest, tmp_path: Path, webhook_sink: WebhookSink) -> Iterator[World]:
    directory = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", directory)
    routes = directory / "routes.yaml"
    routes.write_text(routes.read_text() + ROUTE)
    mappings = load_mappings(directory)
    odoo_box = start_sandbox(
        SandboxOptions(seed=9, deals=16, webhook_base_url=webhook_sink.url), version=request.param
    )
    pd_box = PipedriveSandbox(api_token=PD_TOKEN, time_scale=0.001)
    handle: ServerHandle = serve_in_thread(pipedrive_app(pd_box))
    env = {k.removeprefix("SYNC_ODOO__").lower(): v for k, v in odoo_box.env().items()}
    odoo = from_settings(OdooSettings(**env), lambda: mappings)
    pd = pipedrive_from_section(
        PipedriveSettings(api_token=PD_TOKEN, base_url=handle.url, user_id=str(pd_box.user_id)), mappings
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    markers = {
        "odoo": frozenset({f"user:{odoo_box.ids.bot_uid}"}),
        "pipedrive": frozenset({f"api:{pd_box.user_id}"}),
    }
    service = SyncService(
        store,
        lambda: mappings,
        {"odoo": odoo, "pipedrive": pd},
        config=EngineConfig(coalesce_window=timedelta(0), own_change_sources=markers),
    )
    try:
        yield World(odoo_box, pd_box, odoo, pd, store, mappings, service, webhook_sink)
    finally:
        odoo.close()
        pd.close()
        store.close()
        handle.stop()
        pd_box.close()
        odoo_box.stop()


def _twin(world: World) -> tuple[int, int]:
    """An open Odoo opportunity in Proposition, and a Pipedrive deal for the same contact e-mail."""
    box = world.odoo_box
    proposition = box.ids.stages["Proposition"]
    lead_id = next(i for i in box.open_opportunities() if box.state.lead(i)["stage_id"] == proposition)
    lead = box.state.lead(lead_id)
    person = world.pd_box.add_person("Ada Lovelace", [lead["email_from"]])
    deal = world.pd_box.create_deal(
        {"title": lead["name"], "person_id": person["id"], "value": 100}, notify=False
    )
    return lead_id, int(deal["id"])


def _deliver(world: World, lead_id: int) -> list[int]:
    """Hand the Odoo webhook deliveries about ``lead_id`` to the intake, as the receiver would."""
    world.odoo_box.deliverer.wait_idle(5)
    ids: list[int] = []
    for request in world.sink.requests_for("odoo"):
        query = dict(parse_qsl(urlsplit(request.url).query))
        # the sink is shared by the session: only this sandbox's deliveries about this lead
        if (
            query.get("token") != world.odoo_box.webhook_secret
            or f'"_id": {lead_id},' not in request.body.decode()
        ):
            continue
        accepted = accept_webhook(
            "odoo",
            WebhookRequest("POST", request.url, request.headers, request.body, query),
            connector=world.odoo,
            store=world.store,
            enqueue=ids.append,
        )
        assert accepted.stored or accepted.duplicates
    return ids


def test_a_lost_opportunity_raises_dropped_and_the_pipedrive_twin_follows(world: World) -> None:
    box, service, store = world.odoo_box, world.service, world.store
    lead_id, deal_id = _twin(world)
    # Given both CRMs pulled in full: the twin is found by e-mail and mirrors Odoo's stage
    service.poll("pipedrive", "deals", full=True)
    service.poll("odoo", "deals", full=True)
    assert service.push("pipedrive").dead == ()
    service.push("odoo")
    odoo_record = store.get_record("odoo", "deal", str(lead_id))
    assert odoo_record is not None and odoo_record.stage is StageKey.PROPOSAL
    assert str(deal_id) in {
        r.external_id for r in store.linked_records(odoo_record.id) if r.source == "pipedrive"
    }
    assert world.pd_box.get_deal(deal_id)["status"] == "open"

    # When a person marks the Odoo opportunity lost (Odoo archives it) and Odoo's webhook arrives
    reason = box.ids.lost_reasons["Too expensive"]
    box.as_person("crm.lead", "action_set_lost", [lead_id], lost_reason_id=reason)
    inbox_ids = _deliver(world, lead_id)
    assert inbox_ids
    service.handle_inbox_events(inbox_ids)

    # Then the store holds it lost, in the stage it had, and the Pipedrive twin is lost too
    lost = store.get_record("odoo", "deal", str(lead_id))
    assert lost is not None and (lost.status, lost.stage, lost.lost_reason) == (
        "lost",
        StageKey.LOST,
        "Too expensive",
    )
    assert service.push("pipedrive").dead == ()
    twin = world.pd_box.get_deal(deal_id)
    assert (twin["status"], twin["lost_reason"]) == ("lost", "Too expensive")

    # And the leak scan raises dropped once on the deal (on whichever copy is its newest: the Odoo
    # opportunity or the Pipedrive twin the push refreshed) and queues its write-back to Odoo
    copies = {lost.id} | {r.id for r in store.linked_records(lost.id)}
    scan = scan_leaks(store, world.mappings.model, now=datetime.now(UTC), alerts=False)
    dropped = [f for f in scan.raised if f.rule == "dropped" and f.record_id in copies]
    assert len(dropped) == 1
    queued = _flag_updates(store, lead_id)
    assert [(u.flag.rule if u.flag else None) for u in queued] == ["dropped"]
    # which the connector writes as a tag and a chatter note on the archived opportunity
    [written] = world.odoo.apply_updates(queued)
    assert written.ok
    lead = box.state.lead(lead_id)
    tags = {box.state.records["crm.tag"][t]["name"] for t in lead["tag_ids"]}
    assert tags == {"Leak: dropped"} and lead["active"] is False
    notes = [m for m in box.state.messages if m["res_id"] == lead_id]
    assert len(notes) == 1 and "dropped" in notes[0]["body"] and notes[0]["subtype_xmlid"] == "mail.mt_note"

    # And the service's own writes come back as echoes, not as changes to route again
    again = _deliver(world, lead_id)
    results = service.handle_inbox_events(again)
    assert all(r.echo or r.enqueued == 0 for r in results)


def _flag_updates(store: SyncStore, lead_id: int) -> list[CanonicalUpdate]:
    """The queued leak-flag write-backs (the leak scan's outbox items) for one Odoo lead."""
    items = store.due_outbox(datetime.now(UTC) + timedelta(minutes=1), 500, target="odoo")
    return [
        deserialise_update(item.payload)
        for item in items
        if item.payload.get("flag") is not None and item.payload.get("external_id") == str(lead_id)
    ]


def test_the_push_step_writes_the_flag_back_to_odoo(world: World) -> None:
    box, service, store = world.odoo_box, world.service, world.store
    service.poll("odoo", "deals", full=True)
    lead_id = box.open_opportunities()[0]
    box.as_person("crm.lead", "action_set_lost", [lead_id])
    service.poll("odoo", "deals")
    scan_leaks(store, world.mappings.model, now=datetime.now(UTC), alerts=False)
    first = service.push("odoo")
    assert first.writes >= 1 and first.dead == ()  # the other flags of the scan went back too
    tags = {box.state.records["crm.tag"][t]["name"] for t in box.state.lead(lead_id)["tag_ids"]}
    assert tags == {"Leak: dropped"}
    notes = [m for m in box.state.messages if m["res_id"] == lead_id]
    assert len(notes) == 1 and "dropped" in notes[0]["body"]
    # A second scan and push write nothing more: the flag went back once
    scan_leaks(store, world.mappings.model, now=datetime.now(UTC), alerts=False)
    assert service.push("odoo").writes == 0
    assert len([m for m in box.state.messages if m["res_id"] == lead_id]) == 1


def test_a_deletion_seen_only_through_a_full_pull_is_dropped(world: World) -> None:
    box, service, store = world.odoo_box, world.service, world.store
    service.poll("odoo", "deals", full=True)
    victim = box.open_opportunities()[0]
    box.as_person("crm.lead", "unlink", [victim])
    # An incremental pull says nothing about it (Odoo has no deleted-records feed)
    assert service.poll("odoo", "deals").records == 0
    stored = store.get_record("odoo", "deal", str(victim))
    assert stored is not None and stored.status == "open"
    # The next complete full pull does not return it, and the scan calls it dropped
    service.poll("odoo", "deals", full=True)
    started: dict[str, Any] = full_pull_started(store, {"odoo": "deals"})
    scan = scan_leaks(
        store, world.mappings.model, now=datetime.now(UTC), full_pull_started=started, alerts=False
    )
    assert [f.record_id for f in scan.raised if f.rule == "dropped"] == [stored.id]
