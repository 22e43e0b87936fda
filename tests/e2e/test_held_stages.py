"""Held stages end to end: a deal moved into the unmapped Partnerships pipeline is held and listed,
and its twin moves once a mapping covering the pipeline is written and reloaded.

Against the seeded sandboxes (Pipedrive seeds a second pipeline, ``Partnerships``, that the
shipped mappings do not name), through the real connectors, a real :class:`MappingsHolder` on a
copy of the shipped mappings and :class:`~sync_worker.engine.SyncService` (issue #13, defect 5).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

import connectors.hubspot as hubspot
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.engine import SyncService
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, MappingsHolder, load_mappings
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.store import SyncStore, upgrade_database
from tests.e2e.conftest import crm_service

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 29
DEALS = 48
PARTNERSHIPS = """
  - name: Partnerships
    stages:
      - name: Qualified
        canonical: prospect
      - name: Demo Scheduled
        canonical: meeting
      - name: Proposal Made
        canonical: proposal
      - name: Negotiations Started
        canonical: negotiation
"""


@dataclass
class World:
    box: RunningSandbox
    store: SyncStore
    folder: Path
    holder: MappingsHolder
    hubspot: hubspot.HubSpotConnector
    service: SyncService


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    box = start_sandbox(seed=SEED, deals=DEALS, time_scale=0.001)
    base = tmp_path_factory.mktemp("held")
    url = f"sqlite:///{base / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    folder = base / "mappings"
    shutil.copytree(REPO / "mappings", folder)
    holder = MappingsHolder(folder, interval=60.0)
    crm = crm_service(box, store, holder)
    try:
        yield World(box, store, folder, holder, crm.hubspot, crm.service)
    finally:
        crm.close()
        store.close()
        box.stop()


def _covering(tmp_path: Path) -> Mappings:
    """What the mappings will be once Partnerships is mapped (loaded aside, to pick the move)."""
    preview = tmp_path / "preview"
    shutil.copytree(REPO / "mappings", preview)
    with (preview / "pipedrive.yaml").open("a", encoding="utf-8") as out:
        out.write(PARTNERSHIPS)
    return load_mappings(preview)


def test_a_deal_moved_into_an_unmapped_pipeline_is_held_then_reapplied_after_the_mapping(
    world: World, tmp_path: Path
) -> None:
    box, store, service = world.box, world.store, world.service
    # Given both systems pulled in full (Pipedrive first), so the mirrored twins are linked
    service.poll("pipedrive", "deals", full=True)
    service.poll("hubspot", "deals", full=True)
    world.hubspot.ensure_identity_properties()
    hs_stages = world.hubspot.list_stages()
    covering = _covering(tmp_path)
    partnerships = next(p for p in box.pipedrive.pipelines.values() if p["name"] == "Partnerships")

    def hubspot_stage(key: StageKey) -> str | None:
        update = CanonicalUpdate(target="hubspot", idempotency_key="probe", origin="test", stage=key)
        try:
            return hubspot.from_canonical(update, covering, stages=hs_stages)["dealstage"]
        except PermanentError:
            return None

    # And an open linked Pipedrive deal in the mapped pipeline, and a Partnerships stage that the
    # coming mapping turns into another HubSpot stage than its twin's
    choice: tuple[int, str, int, str, str] | None = None
    mirrored = box.summary.pipedrive_deal_ids[: len(box.summary.hubspot_deal_ids)]
    for pd_id, hs_id in zip(mirrored, box.summary.hubspot_deal_ids, strict=True):
        deal = box.pipedrive.deals[pd_id]
        stored = store.get_record("pipedrive", "deal", str(pd_id))
        if deal["status"] != "open" or deal["is_deleted"] or deal["pipeline_id"] == partnerships["id"]:
            continue
        if stored is None or hs_id not in {r.external_id for r in store.linked_records(stored.id)}:
            continue
        current = (box.hubspot.deal_properties(hs_id) or {}).get("dealstage")
        for stage in box.pipedrive.stages.values():
            if stage["pipeline_id"] != partnerships["id"]:
                continue
            key = covering.to_canonical(
                "pipedrive",
                pipeline=str(partnerships["id"]),
                stage=str(stage["id"]),
                pipeline_name="Partnerships",
                stage_name=stage["name"],
            )
            target = hubspot_stage(key) if isinstance(key, StageKey) else None
            if target is not None and target != current:
                choice = (pd_id, hs_id, int(stage["id"]), str(stage["name"]), target)
                break
        if choice is not None:
            break
    assert choice is not None, "the seed has no linked open deal with a Partnerships stage to move to"
    pd_id, hs_id, stage_id, stage_name, expected = choice
    before = (box.hubspot.deal_properties(hs_id) or {}).get("dealstage")

    # When a person moves it into Partnerships (and changes its value), and it is polled and pushed
    box.pipedrive.simulate_user_change(pd_id, stage_id=stage_id, value=12345)
    service.poll("pipedrive", "deals")
    pushed = service.push("hubspot")

    # Then the amount reaches the twin but its stage stays
    assert pushed.dead == ()
    props = box.hubspot.deal_properties(hs_id) or {}
    assert Decimal(props["amount"]) == Decimal("12345") and props.get("dealstage") == before
    # And the deal is listed as held on the raw Partnerships stage, and counted
    (held,) = [h for h in store.held_stages("pipedrive") if h.external_id == str(pd_id)]
    assert (held.pipeline, held.pipeline_name) == (str(partnerships["id"]), "Partnerships")
    assert (held.stage, held.stage_name) == (str(stage_id), stage_name)
    assert any(g.pipeline_name == "Partnerships" and g.stage == str(stage_id) for g in store.held_groups())

    # When the operator maps Partnerships and the mappings are reloaded, then held stages re-applied
    with (world.folder / "pipedrive.yaml").open("a", encoding="utf-8") as out:
        out.write(PARTNERSHIPS)
    assert world.holder.reload() is True
    outcome = service.reapply_held()
    pushed = service.push("hubspot")

    # Then the twin moves to the stage the new mapping gives, and the deal is no longer held
    assert outcome.reapplied >= 1 and "hubspot" in outcome.targets
    assert pushed.dead == () and pushed.created == 0
    assert (box.hubspot.deal_properties(hs_id) or {}).get("dealstage") == expected
    assert [h for h in store.held_stages("pipedrive") if h.external_id == str(pd_id)] == []
    # And deals seeded into Partnerships were re-applied too: nothing mapped is left held
    assert [h for h in store.held_stages("pipedrive") if h.pipeline_name == "Partnerships"] == []
