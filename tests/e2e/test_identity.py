"""Deal identity end to end: a Pipedrive deal and its HubSpot twin are matched by the contact's e-mail.

Given the seeded sandboxes (each HubSpot mirror deal is associated with a contact bearing its Pipedrive
person's e-mail), a full pull of Pipedrive then HubSpot through the real connectors and
:class:`~sync_worker.engine.SyncService` links every twin; a later stage change in Pipedrive then
reaches the HubSpot twin with the mapped stage through the default two-way mirror route
(``create: false``), and nothing is created in HubSpot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import connectors.hubspot as hubspot
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import Connector
from sync_worker.engine import SyncService
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.store import SyncStore, upgrade_database
from tests.e2e.conftest import crm_service

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 23
DEALS = 48


@dataclass
class World:
    box: RunningSandbox
    store: SyncStore
    mappings: Mappings
    hubspot: hubspot.HubSpotConnector
    pipedrive: Connector
    service: SyncService


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    box = start_sandbox(seed=SEED, deals=DEALS, time_scale=0.001)
    url = f"sqlite:///{tmp_path_factory.mktemp('identity') / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    mappings = load_mappings(REPO / "mappings")
    crm = crm_service(box, store, mappings)
    try:
        yield World(box, store, mappings, crm.hubspot, crm.pipedrive, crm.service)
    finally:
        crm.close()
        store.close()
        box.stop()


def _twins(box: RunningSandbox) -> list[tuple[int, str]]:
    """(Pipedrive deal id, HubSpot deal id) of every seeded mirror pair."""
    mirrored = box.summary.pipedrive_deal_ids[: len(box.summary.hubspot_deal_ids)]
    return list(zip(mirrored, box.summary.hubspot_deal_ids, strict=True))


def test_a_pipedrive_stage_change_reaches_the_hubspot_twin_matched_by_email(world: World) -> None:
    box, store, service = world.box, world.store, world.service
    twins = _twins(box)
    assert len(twins) == DEALS // 4

    # Given both systems pulled in full, Pipedrive first (no HubSpot record to match yet)
    service.poll("pipedrive", "deals", full=True)
    box.hubspot.calls.reset()
    hubspot_pull = service.poll("hubspot", "deals", full=True)

    # Then each HubSpot twin carries its contact's e-mail and is linked to its Pipedrive deal,
    # at the cost of one associations call and one contacts call for the whole (single) page
    assert hubspot_pull.pages == 1
    by_path = dict(box.hubspot.calls.by_path)
    assert by_path.get("/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read") == 1
    assert by_path.get("/crm/v3/objects/contacts/batch/read") == 1
    for pd_id, hs_id in twins:
        pd_record = store.get_record("pipedrive", "deal", str(pd_id))
        hs_record = store.get_record("hubspot", "deal", hs_id)
        assert pd_record is not None and hs_record is not None
        assert hs_record.contact_email is not None
        assert hs_record.contact_email == pd_record.contact_email
        if not pd_record.deleted:
            assert hs_id in {
                r.external_id for r in store.linked_records(pd_record.id) if r.source == "hubspot"
            }

    # Given an open, mirrored Pipedrive deal and a stage of its pipeline that maps to another
    # HubSpot stage than the twin's
    world.hubspot.ensure_identity_properties()
    hs_stages = world.hubspot.list_stages()

    def hubspot_stage(key: StageKey) -> str | None:
        """The HubSpot stage the mappings write for ``key``; None when HubSpot has none for it."""
        update = CanonicalUpdate(target="hubspot", idempotency_key="probe", origin="test", stage=key)
        try:
            return hubspot.from_canonical(update, world.mappings, stages=hs_stages)["dealstage"]
        except PermanentError:
            return None

    choice: tuple[int, str, int, str] | None = None
    for pd_id, hs_id in twins:
        deal = box.pipedrive.deals[pd_id]
        if deal["status"] != "open" or deal["is_deleted"]:
            continue
        current = (box.hubspot.deal_properties(hs_id) or {}).get("dealstage")
        for stage in sorted(box.pipedrive.stages.values(), key=lambda s: s["order_nr"]):
            if stage["pipeline_id"] != deal["pipeline_id"] or stage["id"] == deal["stage_id"]:
                continue
            key = world.mappings.to_canonical(
                "pipedrive",
                pipeline=str(deal["pipeline_id"]),
                stage=str(stage["id"]),
                pipeline_name=box.pipedrive.pipelines[deal["pipeline_id"]]["name"],
                stage_name=stage["name"],
                status="open",
            )
            target = hubspot_stage(key) if isinstance(key, StageKey) else None
            if target is not None and target != current:
                choice = (pd_id, hs_id, int(stage["id"]), target)
                break
        if choice is not None:
            break
    assert choice is not None, "the seed has no open mirrored deal with a stage to move to"
    pd_id, hs_id, new_stage, expected = choice
    deals_before = box.hubspot.deal_ids()

    # When a user moves it in Pipedrive and the change is polled and pushed
    box.pipedrive.simulate_user_change(pd_id, stage_id=new_stage)
    polled = service.poll("pipedrive", "deals")
    assert polled.enqueued >= 1
    box.hubspot.calls.reset()
    pushed = service.push("hubspot")

    # Then the HubSpot twin is in the mapped stage, written as an update, and nothing was created
    assert pushed.dead == () and pushed.created == 0 and pushed.writes >= 1
    props = box.hubspot.deal_properties(hs_id) or {}
    assert props["dealstage"] == expected
    assert props["sync_worker_pipedrive_id"] == str(pd_id)
    assert box.hubspot.deal_ids() == deals_before
    # one batch write (the sandbox counts calls per route template), no single-object create
    assert box.hubspot.calls.by_path.get("/crm/v3/objects/deals/batch/{action}") == 1
    assert "/crm/v3/objects/deals" not in box.hubspot.calls.by_path

    # And the twin now names its Pipedrive deal itself, so the match survives a changed e-mail
    (reread,) = world.hubspot.read_deals([hs_id])
    assert reread.links == {"pipedrive": str(pd_id)}
