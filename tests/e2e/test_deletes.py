"""Deletions end to end against the sandboxes, through routes.yaml's ``on_delete`` (#13 defect 4).

Given the seeded sandboxes pulled in full (every mirror twin linked by the contact's e-mail) and the
shipped two-way mirror route with ``on_delete: delete``: a deal a person deletes in Pipedrive is
archived in HubSpot (HubSpot's delete), a deal a person archives in HubSpot is deleted in Pipedrive,
and neither removal comes back as a change. With ``on_delete: ignore`` the twin stays live.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync_worker.engine import SyncService
from sync_worker.mappings import load_mappings
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.store import SyncStore, upgrade_database
from tests.e2e.conftest import crm_service

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 29
DEALS = 48
MIRROR_FIELDS = "    fields: [amount, currency, close_date, status, lost_reason]\n"
SHIPPED = "    on_delete: archive\n"  # the shipped mirror route's choice


@dataclass
class World:
    box: RunningSandbox
    store: SyncStore
    services: dict[str, SyncService]
    """One service per ``on_delete`` of the mirror route (same store, same connectors)."""


def _mappings_with(directory: Path, on_delete: str) -> Path:
    """A copy of the shipped mappings whose mirror route says ``on_delete``."""
    shutil.copytree(REPO / "mappings", directory)
    routes = directory / "routes.yaml"
    text = routes.read_text(encoding="utf-8")
    assert text.count(MIRROR_FIELDS) == 1, "the shipped mirror route changed: update this test"
    routes.write_text(
        text.replace(f"{MIRROR_FIELDS}{SHIPPED}", f"{MIRROR_FIELDS}    on_delete: {on_delete}\n"),
        encoding="utf-8",
    )
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    box = start_sandbox(seed=SEED, deals=DEALS, time_scale=0.001)
    tmp = tmp_path_factory.mktemp("deletes")
    url = f"sqlite:///{tmp / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    crms = {
        mode: crm_service(box, store, load_mappings(_mappings_with(tmp / mode, mode)))
        for mode in ("delete", "ignore")
    }
    try:
        yield World(box, store, {mode: crm.service for mode, crm in crms.items()})
    finally:
        for crm in crms.values():
            crm.close()
        store.close()
        box.stop()


def _live_twins(world: World) -> list[tuple[int, str]]:
    """(Pipedrive id, HubSpot id) of the seeded mirror pairs both live and linked in the store."""
    box, store = world.box, world.store
    mirrored = box.summary.pipedrive_deal_ids[: len(box.summary.hubspot_deal_ids)]
    out = []
    for pd_id, hs_id in zip(mirrored, box.summary.hubspot_deal_ids, strict=True):
        record = store.get_record("pipedrive", "deal", str(pd_id))
        if record is None or record.deleted or box.hubspot.is_archived(hs_id):
            continue
        if hs_id in {r.external_id for r in store.linked_records(record.id) if r.source == "hubspot"}:
            out.append((pd_id, hs_id))
    return out


def test_deletions_reach_the_twin_both_ways_and_ignore_leaves_it(world: World) -> None:
    box, store, service = world.box, world.store, world.services["delete"]
    # Given both systems pulled in full (and their deleted/archived deals), every twin linked
    for source, stream in (("pipedrive", "deals"), ("hubspot", "deals")):
        service.poll(source, stream, full=True)
    service.poll("pipedrive", "deals_deleted")
    service.poll("hubspot", "deals_archived")
    twins = _live_twins(world)
    assert len(twins) >= 3, "the seed has too few live mirror pairs"
    (pd_a, hs_a), (pd_b, hs_b), (pd_c, hs_c) = twins[:3]

    # When a person deletes Pipedrive deal A (DELETE /api/v2/deals/{id} in the app)
    box.pipedrive.delete_deal(pd_a, change_source="app")
    assert service.poll("pipedrive", "deals_deleted").enqueued == 1
    pushed = service.push("hubspot")
    # Then its HubSpot twin is archived: one removal, no write, nothing dead
    assert (pushed.removed, pushed.writes, pushed.dead) == (1, 0, ())
    assert box.hubspot.is_archived(hs_a)
    # And the archive coming back from HubSpot is no change (the store knows it as our write)
    back = service.poll("hubspot", "deals_archived")
    assert back.records >= 1 and back.changed == 0 and back.enqueued == 0
    assert service.push("pipedrive").removed == 0

    # When a person archives HubSpot deal B in the CRM
    assert box.hubspot.simulate_user_archive(hs_b)
    assert service.poll("hubspot", "deals_archived").enqueued == 1
    pushed = service.push("pipedrive")
    # Then its Pipedrive twin is deleted, and that deletion is not routed back
    assert (pushed.removed, pushed.writes, pushed.dead) == (1, 0, ())
    assert box.pipedrive.deals[pd_b]["is_deleted"] is True
    back = service.poll("pipedrive", "deals_deleted")
    assert back.records >= 1 and back.changed == 0 and back.enqueued == 0
    assert service.push("hubspot").removed == 0

    # When the route says on_delete: ignore and a person deletes Pipedrive deal C
    ignoring = world.services["ignore"]
    box.pipedrive.delete_deal(pd_c, change_source="app")
    assert ignoring.poll("pipedrive", "deals_deleted").enqueued == 0
    # Then its HubSpot twin stays live
    assert ignoring.push("hubspot").removed == 0
    assert not box.hubspot.is_archived(hs_c)
    twin = store.get_record("hubspot", "deal", hs_c)
    assert twin is not None and not twin.deleted
