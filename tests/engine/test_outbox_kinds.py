"""Typed outbox items: the push writes each kind the way its producer meant, and never marks an
item it cannot read as sent."""

from __future__ import annotations

from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey, UpdateResult
from sync_worker.engine.outbox import FLAG, MIRROR
from sync_worker.leaks import serialise_update
from sync_worker.store import SyncStore

from .fakes import T0
from .world import World, deal


def _flag(world: World, target: str, external_id: str, rule: str | None, key: str) -> None:
    update = CanonicalUpdate(
        target=target,
        idempotency_key=key,
        origin="leak-scan",
        external_id=external_id,
        flag=LeakFlag(rule=rule, reason=f"{rule} for a test", stage=StageKey.CONTACTED, since=T0),
    )
    world.store.enqueue_outbox(target, key, serialise_update(update), kind=FLAG)


def test_a_flag_write_back_reaches_the_connector_and_is_sent_once(world: World, store: SyncStore) -> None:
    # Given a leak-flag write-back queued for HubSpot deal 15
    _flag(world, "hubspot", "15", "stalled", "leak:1:raise:2")
    # When the push runs twice
    first = world.service.push("hubspot")
    second = world.service.push("hubspot")
    # Then the connector got the flag once, and the item is settled
    [[update]] = world.hubspot.applied
    assert (update.external_id, update.flag.rule if update.flag else None) == ("15", "stalled")
    assert (first.writes, second.writes, second.items) == (1, 0, 0)
    assert world.due("hubspot") == []


def test_only_the_newest_flag_of_a_record_is_written_and_it_rides_on_the_mirror_write(
    world: World, store: SyncStore
) -> None:
    # Given a linked pair, a Pipedrive stage change routed to HubSpot, then a raise and a clear
    world.linked_pair()
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    _flag(world, "hubspot", "15", "stalled", "leak:1:raise:2")
    world.clock.advance(seconds=1)
    _flag(world, "hubspot", "15", None, "leak:1:clear:2")
    [mirror] = [i for i in world.due("hubspot") if i.kind == MIRROR]
    # When the push runs after the coalescing window
    world.clock.advance(seconds=3)
    stats = world.service.push("hubspot")
    # Then HubSpot deal 15 gets ONE input carrying the stage and the clear, and all three settle
    [[update]] = world.hubspot.applied
    assert update.external_id == "15" and update.stage is StageKey.MEETING
    assert update.flag is not None and update.flag.rule is None
    assert update.idempotency_key == mirror.idempotency_key
    assert (stats.items, stats.writes, world.due("hubspot")) == (3, 1, [])


def test_an_item_of_an_unknown_kind_is_dead_with_its_reason_not_sent(world: World, store: SyncStore) -> None:
    store.enqueue_outbox("hubspot", "future:1", {"something": "new"}, kind="coupon")
    stats = world.service.push("hubspot")
    assert world.hubspot.applied == []
    [dead] = stats.dead
    assert dead.idempotency_key == "future:1" and "unknown kind 'coupon'" in dead.reason
    assert world.due("hubspot") == []
    assert store.get_outbox(dead.outbox_id).status == "dead"  # type: ignore[union-attr]


def test_an_unreadable_flag_item_is_dead_not_sent(world: World, store: SyncStore) -> None:
    store.enqueue_outbox("pipedrive", "leak:9:raise:1", {"target": "pipedrive"}, kind=FLAG)
    stats = world.service.push("pipedrive")
    assert world.pipedrive.applied == [] and len(stats.dead) == 1
    assert "flag write-back" in stats.dead[0].reason


def test_a_failed_flag_write_is_retried_later(world: World, store: SyncStore) -> None:
    world.hubspot.fail_with.append(UpdateResult("x", False, error="busy", retryable=True))
    _flag(world, "hubspot", "15", "stalled", "leak:1:raise:2")
    assert world.service.push("hubspot").retried == 1
    world.clock.advance(seconds=3600)
    assert world.service.push("hubspot").writes == 1
