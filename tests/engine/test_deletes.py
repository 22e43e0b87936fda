"""Deletions through the routes' ``on_delete``: delete, archive, mark (default), ignore (#13 defect 4)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sync_worker.canonical import StageKey, UpdateResult
from sync_worker.engine import SyncService
from sync_worker.engine.outbox import REMOVE
from sync_worker.mappings import Mappings, MatchBy, OnDelete
from sync_worker.store import SyncStore

from .fakes import T0, FakeClock, FakeConnector, FakeHubSpot, FakePipedrive
from .world import HS_APP, World, deal

MIRROR_ROUTE = "pipedrive-hubspot-mirror"


def with_route(mappings: Mappings, name: str, **changes: Any) -> Mappings:
    """``mappings`` with both directions of route ``name`` changed."""
    routes = tuple(replace(r, **changes) if r.name == name else r for r in mappings.routes)
    return replace(mappings, routes=replace(mappings.routes, routes=routes))


@pytest.fixture(params=[OnDelete.DELETE, OnDelete.ARCHIVE])
def removing(request: pytest.FixtureRequest) -> OnDelete:
    mode: OnDelete = request.param
    return mode


def _world(store: SyncStore, mappings: Mappings, clock: FakeClock, mode: OnDelete, **route: Any) -> World:
    return World(store, with_route(mappings, MIRROR_ROUTE, on_delete=mode, **route), clock)


def test_a_pipedrive_deletion_removes_the_hubspot_twin_once(
    store: SyncStore, mappings: Mappings, clock: FakeClock, removing: OnDelete
) -> None:
    # Given a Pipedrive deal 7 linked to HubSpot 15 on a mirror route with on_delete delete/archive
    world = _world(store, mappings, clock, removing)
    world.linked_pair(StageKey.PROPOSAL)
    # When a person deletes the Pipedrive deal
    result = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROPOSAL, T0, status="deleted", change_source="app:1")
    )
    # Then one removal is queued for HubSpot, and no field write anywhere
    assert "status_change" in result.events and result.enqueued == 1
    (item,) = world.due("hubspot")
    assert item.kind == REMOVE and item.payload["external_id"] == "15"
    assert item.payload["mode"] == removing.value
    clock.advance(seconds=3)
    stats = world.service.push("hubspot")
    assert stats.removed == 1 and stats.dead == ()
    (removal,) = world.hubspot.removals
    assert (removal.external_id, removal.mode, removal.kind) == ("15", removing.value, "deal")
    assert (removal.origin, removal.origin_id) == ("pipedrive", "7")
    assert world.hubspot.updates == [] and world.pipedrive.updates == []
    # And the twin is stored as deleted, the removal remembered as our write
    twin = store.get_record("hubspot", "deal", "15")
    assert twin is not None and twin.deleted and twin.status == "deleted"
    # When HubSpot's archived stream brings the twin back, deleted by our app
    back = world.service.ingest_record(
        deal(
            "hubspot",
            "15",
            StageKey.PROPOSAL,
            T0 + timedelta(seconds=5),
            status="deleted",
            change_source=HS_APP,
        )
    )
    # Then it is our echo: nothing is routed back to Pipedrive, and a replay removes nothing more
    assert back.enqueued == 0
    world.push_all()
    assert len(world.hubspot.removals) == 1 and world.pipedrive.removals == []
    again = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROPOSAL, T0, status="deleted", change_source="app:1")
    )
    assert again.enqueued == 0


def _deleted_on(world: World, source: str, external_id: str, by: str, *, removed_from: FakeConnector) -> Any:
    """The linked pair, then a person deletes ``source``'s copy and the outbox is pushed: the one
    removal the twin's system received."""
    world.linked_pair()
    world.service.ingest_record(
        deal(source, external_id, StageKey.CONTACTED, T0, status="deleted", change_source=by)
    )
    world.push_all()
    (removal,) = removed_from.removals
    return removal


def test_a_hubspot_archive_deletes_the_pipedrive_twin(
    store: SyncStore, mappings: Mappings, clock: FakeClock
) -> None:
    world = _world(store, mappings, clock, OnDelete.DELETE)
    # When a person archives the HubSpot twin
    removal = _deleted_on(world, "hubspot", "15", "CRM_UI", removed_from=world.pipedrive)
    # Then Pipedrive 7 is deleted, and HubSpot gets nothing
    assert (removal.external_id, removal.mode) == ("7", "delete")
    assert world.hubspot.removals == [] and world.hubspot.updates == [] and world.pipedrive.updates == []
    stored = store.get_record("pipedrive", "deal", "7")
    assert stored is not None and stored.deleted


def test_the_shipped_mirror_archives_the_twin_of_a_deleted_deal(world: World) -> None:
    # Given the shipped routes (the mirror says on_delete: archive, reversible on both sides)
    removal = _deleted_on(world, "pipedrive", "7", "app:1", removed_from=world.hubspot)
    # Then the HubSpot twin is archived, nothing else written
    assert (removal.external_id, removal.mode) == ("15", "archive")
    assert world.hubspot.updates == [] and world.pipedrive.updates == []


def test_a_route_without_on_delete_marks_writes_nothing_and_says_so(
    store: SyncStore, mappings: Mappings, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a mirror route that leaves on_delete out (the default: mark)
    world = _world(store, mappings, clock, OnDelete.MARK)
    world.linked_pair()
    with caplog.at_level(logging.WARNING, logger="sync_worker.engine.router"):
        result = world.service.ingest_record(
            deal("pipedrive", "7", StageKey.CONTACTED, T0, status="deleted", change_source="app:1")
        )
    world.push_all()
    # Then nothing is queued or written, the twin stays live, and a warning names both records
    assert result.enqueued == 0
    assert world.hubspot.removals == [] and world.hubspot.updates == []
    twin = world.store.get_record("hubspot", "deal", "15")
    assert twin is not None and not twin.deleted
    (line,) = [r.getMessage() for r in caplog.records if "left live" in r.getMessage()]
    assert "pipedrive deal 7" in line and "hubspot twin 15" in line and "on_delete: mark" in line
    # And the deleted deal is kept in the store as deleted (the leak scan's `dropped` rule sees it)
    origin = world.store.get_record("pipedrive", "deal", "7")
    assert origin is not None and origin.deleted


def test_ignore_leaves_the_twin_without_a_warning(
    store: SyncStore, mappings: Mappings, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    world = _world(store, mappings, clock, OnDelete.IGNORE)
    world.linked_pair()
    with caplog.at_level(logging.INFO, logger="sync_worker.engine.router"):
        result = world.service.ingest_record(deal("hubspot", "15", StageKey.CONTACTED, T0, status="deleted"))
    world.push_all()
    assert result.enqueued == 0 and world.pipedrive.removals == [] and world.pipedrive.updates == []
    assert not [r for r in caplog.records if "deleted" in r.getMessage()]


def test_a_deletion_never_creates_a_twin(store: SyncStore, mappings: Mappings, clock: FakeClock) -> None:
    # Given a route that creates missing twins, and a Pipedrive deal with no twin
    world = _world(store, mappings, clock, OnDelete.DELETE, create=True)
    world.service.ingest_record(deal("pipedrive", "8", StageKey.PROPOSAL, T0 - timedelta(hours=1)))
    world.push_all()
    assert len(world.hubspot.updates) == 1  # the live deal was created in HubSpot (the route creates)
    # When a deal never seen before arrives already deleted, and a deal with no twin is deleted
    first = world.service.ingest_record(deal("pipedrive", "9", StageKey.PROPOSAL, T0, status="deleted"))
    world.service.ingest_record(deal("pipedrive", "10", StageKey.PROPOSAL, T0 - timedelta(hours=1)))
    store.mark_outbox_sent(*(i.id for i in world.due("hubspot")))  # its create is not what we test
    gone = world.service.ingest_record(deal("pipedrive", "10", StageKey.PROPOSAL, T0, status="deleted"))
    # Then neither queues anything: no create of a deleted deal, no removal without a twin
    assert first.enqueued == 0 and gone.enqueued == 0
    world.push_all()
    assert len(world.hubspot.updates) == 1 and world.hubspot.removals == []


def test_a_target_that_cannot_remove_turns_removals_into_dead_letters(
    store: SyncStore, mappings: Mappings, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a HubSpot connector without remove_records, on a route with on_delete: archive
    hubspot = FakeConnector("hubspot")
    service = SyncService(
        store,
        lambda: with_route(mappings, MIRROR_ROUTE, on_delete=OnDelete.ARCHIVE),
        {"hubspot": hubspot, "pipedrive": FakePipedrive("pipedrive")},
        clock=clock,
    )
    pd = service.ingest_record(deal("pipedrive", "7", StageKey.CONTACTED, T0 - timedelta(hours=2)))
    hs = service.ingest_record(deal("hubspot", "15", StageKey.CONTACTED, T0 - timedelta(hours=2)))
    store.link_records([pd.record_id, hs.record_id])
    service.ingest_record(deal("pipedrive", "7", StageKey.CONTACTED, T0, status="deleted"))
    clock.advance(seconds=3)
    with caplog.at_level(logging.WARNING, logger="sync_worker.engine.removal"):
        stats = service.push("hubspot")
    # Then the removal is dead (for the caller's dead letters), naming the route and the mode
    (dead,) = stats.dead
    assert "hubspot cannot remove records" in dead.reason and MIRROR_ROUTE in dead.reason
    assert "archive" in dead.reason and stats.removed == 0
    assert len([r for r in caplog.records if "cannot remove records" in r.getMessage()]) == 1
    twin = store.get_record("hubspot", "deal", "15")
    assert twin is not None and not twin.deleted
    assert store.due_outbox(clock() + timedelta(days=1), 10, target="hubspot") == []


@pytest.mark.parametrize(
    ("answer", "retried", "dead"),
    [
        (UpdateResult("k", False, error="hubspot: 503", retryable=True), 1, 0),
        (UpdateResult("k", False, error="hubspot: 400 bad id", retryable=False), 0, 1),
    ],
)
def test_a_failed_removal_is_retried_or_dead(
    store: SyncStore, mappings: Mappings, clock: FakeClock, answer: UpdateResult, retried: int, dead: int
) -> None:
    world = _world(store, mappings, clock, OnDelete.ARCHIVE)
    assert isinstance(world.hubspot, FakeHubSpot)
    world.hubspot.remove_fail_with.append(answer)
    world.linked_pair()
    world.service.ingest_record(deal("pipedrive", "7", StageKey.CONTACTED, T0, status="deleted"))
    clock.advance(seconds=3)
    stats = world.service.push("hubspot")
    assert (stats.removed, stats.retried, len(stats.dead)) == (0, retried, dead)
    twin = store.get_record("hubspot", "deal", "15")
    assert twin is not None and not twin.deleted
    # A retried removal goes out again later and succeeds
    if retried:
        clock.advance(hours=1)
        assert world.service.push("hubspot").removed == 1


def test_a_deletion_never_removes_a_deal_found_by_email_alone(
    store: SyncStore, mappings: Mappings, clock: FakeClock
) -> None:
    # Given a Pipedrive deal and a HubSpot deal of the same contact, never linked (seen while the
    # route matched by link only)
    at, email = T0 - timedelta(hours=2), "ada@example.com"
    before = _world(store, mappings, clock, OnDelete.DELETE, match=(MatchBy.LINK,))
    before.service.ingest_record(deal("hubspot", "15", StageKey.PROPOSAL, at, contact_email=email))
    before.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, at, contact_email=email))
    pd = store.get_record("pipedrive", "deal", "7")
    assert pd is not None and store.linked_records(pd.id) == []
    # When the Pipedrive deal is deleted under the shipped match order (link, external_id, email)
    world = _world(store, mappings, clock, OnDelete.DELETE)
    result = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROPOSAL, T0, status="deleted", contact_email=email)
    )
    world.push_all()
    # Then the HubSpot deal of the same contact is left alone
    assert result.enqueued == 0 and world.hubspot.removals == []
    twin = store.get_record("hubspot", "deal", "15")
    assert twin is not None and not twin.deleted
