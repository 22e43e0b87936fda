"""Two-way mirror rules that make both copies converge (#13 defects 1-3), on the engine with fake systems.

Newest wins per field even when the target's own change is observed after the other side's change
was queued; a value the service once wrote stops being its echo once it is overwritten; several
moves within one second of a source with second precision end on the last one.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sync_worker.canonical import StageKey

from .fakes import T0
from .world import World, deal

PERSON = "CRM_UI:7"  # a HubSpot change made by a person in the web app


def _stage(world: World, source: str, external_id: str) -> StageKey | None:
    stored = world.store.get_record(source, "deal", external_id)
    assert stored is not None
    return stored.stage


def test_concurrent_changes_end_on_the_newer_one_on_both_copies(world: World) -> None:
    world.linked_pair()
    # Pipedrive 7 moves to proposal; 1.5 s later (before any push) a person moves its HubSpot twin on
    world.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, T0))
    world.clock.advance(seconds=1.5)
    world.service.ingest_record(
        deal("hubspot", "15", StageKey.NEGOTIATION, T0 + timedelta(seconds=1.5), change_source=PERSON)
    )
    world.push_all()
    # HubSpot keeps its newer stage (the queued older write is not sent), Pipedrive follows it
    assert [u.stage for u in world.hubspot.updates] == []
    assert [u.stage for u in world.pipedrive.updates] == [StageKey.NEGOTIATION]
    assert _stage(world, "hubspot", "15") is StageKey.NEGOTIATION
    assert _stage(world, "pipedrive", "7") is StageKey.NEGOTIATION


def test_a_queued_write_still_carries_the_fields_the_target_did_not_change(world: World) -> None:
    world.linked_pair(amount=Decimal("100"))
    # Pipedrive's amount and stage change; then HubSpot's stage changes on its own, newer
    world.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, T0, amount=Decimal("250")))
    world.clock.advance(seconds=1)
    world.service.ingest_record(
        deal("hubspot", "15", StageKey.NEGOTIATION, T0 + timedelta(seconds=1), amount=Decimal("100"))
    )
    world.push_all()
    # HubSpot gets the amount it never changed, not the older stage
    (update,) = world.hubspot.updates
    assert update.amount == Decimal("250") and update.stage is None
    assert _stage(world, "hubspot", "15") is StageKey.NEGOTIATION


def test_an_older_target_change_observed_late_is_overwritten_by_the_newer_source_change(world: World) -> None:
    world.linked_pair()
    # HubSpot's own move (at T0) is observed only after Pipedrive's newer move (T0+5 s) was queued
    world.clock.advance(seconds=6)
    world.service.ingest_record(deal("pipedrive", "7", StageKey.NEGOTIATION, T0 + timedelta(seconds=5)))
    world.service.ingest_record(deal("hubspot", "15", StageKey.PROPOSAL, T0, change_source=PERSON))
    world.push_all()
    assert [u.stage for u in world.hubspot.updates] == [StageKey.NEGOTIATION]
    assert world.pipedrive.updates == []  # HubSpot's older move loses at routing already


def test_a_person_reverting_to_a_value_the_service_once_wrote_is_propagated(world: World) -> None:
    world.linked_pair()
    # Pipedrive 7 to meeting: HubSpot follows (the service writes meeting)
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    world.push_all()
    assert [u.stage for u in world.hubspot.updates] == [StageKey.MEETING]
    # A person moves HubSpot to proposal (seen by a poll: no change source): Pipedrive follows
    world.service.ingest_record(deal("hubspot", "15", StageKey.PROPOSAL, world.clock()))
    world.push_all()
    assert [u.stage for u in world.pipedrive.updates] == [StageKey.PROPOSAL]
    # The person moves HubSpot back to meeting, a value the service wrote there minutes ago
    back = world.service.ingest_record(deal("hubspot", "15", StageKey.MEETING, world.clock()))
    assert not back.echo and back.enqueued == 1
    world.push_all()
    assert [u.stage for u in world.pipedrive.updates] == [StageKey.PROPOSAL, StageKey.MEETING]
    assert _stage(world, "pipedrive", "7") is StageKey.MEETING


def test_our_echo_is_still_recognised_while_the_target_holds_our_value(world: World) -> None:
    world.linked_pair()
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    world.push_all()
    # HubSpot reports what we wrote (a poll), twice: an echo both times, nothing forgotten
    for _ in range(2):
        world.clock.advance(seconds=5)
        echo = world.service.ingest_record(deal("hubspot", "15", StageKey.MEETING, world.clock()))
        assert echo.enqueued == 0
    world.push_all()
    assert world.pipedrive.updates == []


def test_flapping_within_one_second_ends_on_the_last_move(world: World) -> None:
    world.linked_pair()
    # Pipedrive 27-style flapping: five moves 0.45 s apart, reported at one-second precision
    moves = [StageKey.MEETING, StageKey.PROPOSAL, StageKey.NEGOTIATION, StageKey.PROPOSAL, StageKey.MEETING]
    start = world.clock()
    for n, stage in enumerate(moves):
        at = start + timedelta(seconds=0.45 * n)
        world.clock.advance(seconds=0.45 if n else 0)
        world.service.ingest_record(deal("pipedrive", "7", stage, at.replace(microsecond=0)))
    world.push_all()
    assert [u.stage for u in world.hubspot.updates] == [StageKey.MEETING]
    assert _stage(world, "hubspot", "15") is StageKey.MEETING


def test_flapping_across_pushes_ends_on_the_last_move(world: World) -> None:
    world.linked_pair()
    start = world.clock()
    for stage in [StageKey.MEETING, StageKey.PROPOSAL, StageKey.MEETING]:
        world.service.ingest_record(deal("pipedrive", "7", stage, start.replace(microsecond=0)))
        world.push_all()  # each move pushed on its own, within the same source second
    assert [u.stage for u in world.hubspot.updates][-1] is StageKey.MEETING
    assert _stage(world, "hubspot", "15") is StageKey.MEETING
