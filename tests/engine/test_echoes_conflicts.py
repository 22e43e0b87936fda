"""Echo detection, coalescing of close changes, and the conflict rules (newest wins, fixed tie order)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sync_worker.canonical import (
    StageKey,
)
from sync_worker.engine.push import merge_items
from sync_worker.store import OutboxItem

from .fakes import T0
from .world import HS_APP, World, deal

# -- echoes -----------------------------------------------------------------------------------


def test_our_own_write_coming_back_is_not_routed_again(world: World) -> None:
    world.linked_pair()
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0, change_source="app:9001"))
    world.push_all()
    assert len(world.hubspot.updates) == 1
    # When HubSpot reports the stage we wrote, without any change source (as a poll does)
    echo = world.service.ingest_record(deal("hubspot", "15", StageKey.MEETING, T0 + timedelta(seconds=5)))
    world.push_all()
    # Then nothing is routed back to Pipedrive
    assert echo.enqueued == 0
    assert world.pipedrive.updates == []


def test_write_memory_alone_recognises_an_echo(world: World) -> None:
    world.linked_pair()
    # Given we wrote amount 500 to HubSpot deal 15 a minute ago (the stored copy not updated)
    world.store.remember_write("hubspot", "15", "amount", Decimal("500"), at=T0 - timedelta(minutes=1))
    # When HubSpot reports amount "500.00"
    result = world.service.ingest_record(
        deal("hubspot", "15", StageKey.CONTACTED, T0, amount=Decimal("500.00"))
    )
    # Then it is our echo: stored, not routed
    assert result.echo and result.enqueued == 0
    stored = world.store.get_record("hubspot", "deal", "15")
    assert stored is not None and stored.amount == Decimal("500.0000")


def test_change_source_marks_an_echo_even_for_new_values(world: World) -> None:
    world.linked_pair()
    result = world.service.ingest_record(
        deal("hubspot", "15", StageKey.NEGOTIATION, T0, change_source=HS_APP)
    )
    assert result.echo and result.enqueued == 0
    history = world.store.stage_history(result.record_id)
    assert history[-1].to_stage is StageKey.NEGOTIATION and history[-1].written_by_worker


def test_user_change_with_a_value_we_never_wrote_is_routed(world: World) -> None:
    world.linked_pair()
    world.store.remember_write("hubspot", "15", "stage", "meeting", at=T0 - timedelta(minutes=1))
    result = world.service.ingest_record(deal("hubspot", "15", StageKey.PROPOSAL, T0))
    assert not result.echo and result.enqueued == 1


# -- coalescing -------------------------------------------------------------------------------


def test_changes_within_the_window_coalesce_into_one_write(world: World) -> None:
    world.linked_pair(amount=Decimal("100"))
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0, amount=Decimal("100")))
    world.clock.advance(seconds=1)
    world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROPOSAL, T0 + timedelta(seconds=1), amount=Decimal("250"))
    )
    # Within the window nothing is due yet
    assert world.service.push("hubspot").items == 0
    assert world.hubspot.applied == []
    # After it: one write carrying the newest stage and the amount
    world.clock.advance(seconds=3)
    stats = world.service.push("hubspot")
    assert stats.items == 2 and stats.writes == 1
    (update,) = world.hubspot.updates
    assert update.stage is StageKey.PROPOSAL and update.amount == Decimal("250")


def test_many_records_go_in_one_apply_call(world: World) -> None:
    for n in range(5):
        pd = world.service.ingest_record(
            deal("pipedrive", f"{n}", StageKey.CONTACTED, T0 - timedelta(hours=1))
        )
        hs = world.service.ingest_record(
            deal("hubspot", f"h{n}", StageKey.CONTACTED, T0 - timedelta(hours=1))
        )
        world.store.link_records([pd.record_id, hs.record_id])
        world.service.ingest_record(deal("pipedrive", f"{n}", StageKey.MEETING, T0))
    world.push_all()
    assert len(world.hubspot.applied) == 1 and len(world.hubspot.updates) == 5


def test_merge_takes_the_newest_value_per_field_and_breaks_ties_by_system_order() -> None:
    def item(n: int, origin: str, ts: datetime, fields: dict[str, Any]) -> OutboxItem:
        payload = {
            "ref": "pipedrive:deal:7",
            "kind": "deal",
            "external_id": "7",
            "origin": origin,
            "origin_id": "x",
            "fields": {k: {"v": v, "ts": ts.isoformat(), "o": origin} for k, v in fields.items()},
        }
        return OutboxItem(n, "pipedrive", f"k{n}", payload, "pending", 0, T0, T0 + timedelta(seconds=n))

    later = T0 + timedelta(minutes=1)
    (plan,) = merge_items(
        [
            item(1, "hubspot", later, {"stage": "meeting", "amount": "10"}),
            item(2, "lagrowthmachine", T0, {"stage": "contacted"}),  # older: loses
            item(3, "lagrowthmachine", later, {"amount": "20"}),  # tie: hubspot ranks first
        ]
    )
    assert plan.fields["stage"][0] == "meeting"
    assert plan.fields["amount"][0] == "10"
    assert len(plan.items) == 3


# -- conflicts --------------------------------------------------------------------------------


def test_newer_independent_target_change_wins_the_conflict(world: World) -> None:
    world.linked_pair(amount=Decimal("100"))
    # HubSpot changed the amount on its own at T0+10min (not synced yet: no link echo)
    world.store.upsert_record(
        deal("hubspot", "15", StageKey.CONTACTED, T0 + timedelta(minutes=10), amount=Decimal("300")),
        origin="hubspot",
        written_by_worker=False,
    )
    # When an older Pipedrive change of the amount arrives (T0)
    result = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.CONTACTED, T0, amount=Decimal("200"))
    )
    # Then it does not overwrite HubSpot's newer value
    assert result.enqueued == 0


def test_newer_source_change_wins_the_conflict(world: World) -> None:
    world.linked_pair(amount=Decimal("100"))
    world.store.upsert_record(
        deal("hubspot", "15", StageKey.CONTACTED, T0, amount=Decimal("300")),
        origin="hubspot",
        written_by_worker=False,
    )
    result = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.CONTACTED, T0 + timedelta(minutes=1), amount=Decimal("200"))
    )
    assert result.enqueued == 1
    world.push_all()
    assert world.hubspot.updates[0].amount == Decimal("200")


def test_tie_goes_to_the_system_first_in_the_fixed_order(world: World) -> None:
    world.linked_pair(amount=Decimal("100"))
    same = T0 + timedelta(minutes=5)
    world.store.upsert_record(
        deal("hubspot", "15", StageKey.CONTACTED, same, amount=Decimal("300")),
        origin="hubspot",
        written_by_worker=False,
    )
    # Pipedrive's change at the very same instant loses to HubSpot (first in SYSTEM_ORDER) ...
    assert (
        world.service.ingest_record(
            deal("pipedrive", "7", StageKey.CONTACTED, same, amount=Decimal("200"))
        ).enqueued
        == 0
    )
    # ... and HubSpot's own change at that instant wins over Pipedrive's
    world.store.upsert_record(
        deal("hubspot", "15", StageKey.CONTACTED, same - timedelta(seconds=1), amount=Decimal("100")),
        origin="hubspot",
        written_by_worker=False,
    )
    assert (
        world.service.ingest_record(
            deal("hubspot", "15", StageKey.CONTACTED, same, amount=Decimal("400"))
        ).enqueued
        == 1
    )


def test_stale_record_is_stored_but_not_routed(world: World) -> None:
    world.linked_pair()
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    result = world.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, T0 - timedelta(hours=1)))
    assert result.stale and result.enqueued == 0
