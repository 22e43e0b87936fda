"""Webhook normalisation (batched reads, no needless reads), push failures, and polls with cursors."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from sync_worker.canonical import (
    CanonicalRecord,
    PullPage,
    StageKey,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.engine import SyncService, dead_letter_items
from sync_worker.errors import ConfigError, TransientError
from sync_worker.mappings import Mappings
from sync_worker.store import SyncStore

from .fakes import T0, FakeClock, transient
from .world import HS_APP, World, deal, hs_event, reply


def test_hubspot_events_of_a_batch_are_read_together(world: World, store: SyncStore) -> None:
    for deal_id in ("15", "16"):
        world.hubspot.records[deal_id] = deal("hubspot", deal_id, StageKey.MEETING, T0)
    world.service.ingest_record(deal("hubspot", "17", StageKey.MEETING, T0 - timedelta(days=1)))
    events = [
        hs_event(1, "15"),
        hs_event(2, "16"),
        hs_event(3, "15"),
        hs_event(4, "17", action="deletion", change_source="CRM_UI:userId:1"),
        hs_event(5, "16", change_source=HS_APP),
    ]
    ids = store.accept_events("hubspot", events).new_ids
    results = world.service.handle_inbox_events(ids)
    # One batch read for the two deals that need it; the deletion and our own echo need none
    assert world.hubspot.reads == [["15", "16"]]
    assert {r.external_id for r in results} == {"15", "16", "17"}
    deleted = store.get_record("hubspot", "deal", "17")
    assert deleted is not None and deleted.status == "deleted"
    assert all(store.get_inbox_event(i).processed_at is not None for i in ids)  # type: ignore[union-attr]


def test_unhandled_events_are_marked_processed(world: World, store: SyncStore) -> None:
    contact = replace(hs_event(1, "99"), object_type="contact")
    sent = WebhookEvent(
        source="lagrowthmachine",
        dedupe_key="m1",
        object_type="lead",
        object_id="L1",
        action="message_sent",
        occurred_at=T0,
        raw={"messageId": "m1"},
    )
    (hs_id,) = store.accept_events("hubspot", [contact]).new_ids
    (lgm_id,) = store.accept_events("lagrowthmachine", [sent]).new_ids
    assert world.service.handle_inbox_events([hs_id, lgm_id]) == []
    assert world.hubspot.reads == []
    assert store.inbox_depth() == 0


def test_a_read_failure_leaves_the_event_unprocessed(world: World, store: SyncStore) -> None:
    def failing_read(ids: Any) -> list[CanonicalRecord]:
        raise transient()

    world.hubspot.read_deals = failing_read  # type: ignore[method-assign]
    (inbox_id,) = store.accept_events("hubspot", [hs_event(1, "15")]).new_ids
    with pytest.raises(TransientError):
        world.service.handle_inbox_event(inbox_id)
    assert store.get_inbox_event(inbox_id).processed_at is None  # type: ignore[union-attr]


# -- push failures ----------------------------------------------------------------------------


def test_permanent_failure_goes_dead_with_its_reason(world: World, store: SyncStore) -> None:
    world.linked_pair()
    world.hubspot.fail_with.append(UpdateResult("", False, "15", "hubspot: VALIDATION_ERROR: bad stage"))
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    world.clock.advance(seconds=3)
    stats = world.service.push("hubspot")
    (dead,) = stats.dead
    assert "VALIDATION_ERROR" in dead.reason
    assert store.get_outbox(dead.outbox_id).status == "dead"  # type: ignore[union-attr]
    (letter_id,) = dead_letter_items(store, stats.dead)
    letter = store.get_dead_letter(letter_id)
    assert letter is not None and letter.message_id == f"outbox:{dead.outbox_id}"


def test_retryable_failure_is_retried_later(world: World, store: SyncStore) -> None:
    world.linked_pair()
    world.hubspot.fail_with.append(UpdateResult("", False, "15", "hubspot: RATE_LIMITS", retryable=True))
    world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    world.clock.advance(seconds=3)
    assert world.service.push("hubspot").retried == 1
    assert world.service.push("hubspot").items == 0  # not due again yet
    world.clock.advance(minutes=5)
    assert world.service.push("hubspot").writes == 1


def test_transient_error_propagates_and_keeps_the_item_due(world: World, store: SyncStore) -> None:
    world.service.ingest_record(reply("L1", "ada@example.com", T0))
    world.hubspot.fail_with.append(transient())
    world.clock.advance(seconds=3)
    with pytest.raises(TransientError):
        world.service.push("hubspot")
    # The claimed create was released, so the retry creates the deal (once)
    assert world.service.push("hubspot").created == 1
    assert [u.external_id for u in world.hubspot.updates] == [None, None]
    assert world.service.push("hubspot").items == 0


# -- polls ------------------------------------------------------------------------------------


def test_poll_persists_each_cursor_after_its_page_and_reports_progress(
    world: World, store: SyncStore
) -> None:
    world.linked_pair()
    world.pipedrive.pages = [
        PullPage("deals", (deal("pipedrive", "7", StageKey.MEETING, T0),), "c1", False),
        PullPage("deals", (deal("pipedrive", "8", StageKey.MEETING, T0),), "c2", True),
    ]
    seen: list[int] = []
    stats = world.service.poll("pipedrive", "deals", progress=seen.append)
    assert (stats.pages, stats.records, stats.enqueued, stats.cursor) == (2, 2, 1, "c2")
    assert seen == [1, 1]
    assert store.get_cursor("pipedrive", "deals") == "c2"


def test_poll_failing_mid_stream_keeps_the_cursor_of_the_last_stored_page(
    world: World, store: SyncStore
) -> None:
    world.pipedrive.pages = [
        PullPage("deals", (deal("pipedrive", "7", StageKey.MEETING, T0),), "c1", False),
        transient(),  # type: ignore[list-item]
    ]
    with pytest.raises(TransientError):
        world.service.poll("pipedrive", "deals")
    assert store.get_cursor("pipedrive", "deals") == "c1"
    assert store.get_record("pipedrive", "deal", "7") is not None


def test_poll_of_a_finished_sweep_starts_over_next_time(world: World, store: SyncStore) -> None:
    store.set_cursor("lagrowthmachine", "lead_statuses", '{"campaign":"c"}')
    world.lgm.pages = [PullPage("lead_statuses", (), None, True)]
    world.service.poll("lagrowthmachine", "lead_statuses")
    assert store.get_cursor("lagrowthmachine", "lead_statuses") == ""


def test_unconfigured_target_is_a_config_error(
    store: SyncStore, mappings: Mappings, clock: FakeClock
) -> None:
    service = SyncService(store, mappings, {}, clock=clock)
    with pytest.raises(ConfigError, match="no connector configured"):
        service.push("hubspot")


def test_hubspot_event_reporting_a_value_we_wrote_needs_no_read(
    store: SyncStore, mappings: Mappings, clock: FakeClock
) -> None:
    # Without change-source markers, write memory settles the event: no read
    world = World(store, mappings, clock, own_change_sources={})
    store.remember_write("hubspot", "15", "stage", "meeting", at=T0)
    store.remember_write("hubspot", "15", "amount", Decimal("500"), at=T0)
    events = [
        replace(hs_event(1, "15"), property_name="dealstage", property_value="presentationscheduled"),
        replace(hs_event(2, "15"), property_name="amount", property_value="500.00", dedupe_key="hs-2b"),
    ]
    ids = store.accept_events("hubspot", events).new_ids
    assert world.service.handle_inbox_events(ids) == []
    assert world.hubspot.reads == []
    assert store.inbox_depth() == 0


def test_a_person_setting_a_value_we_wrote_is_a_real_change(world: World, store: SyncStore) -> None:
    # With markers known, a change the provider attributes to a person is read and routed
    world.linked_pair()
    store.remember_write("hubspot", "15", "stage", "meeting", at=T0)
    world.hubspot.records["15"] = deal("hubspot", "15", StageKey.MEETING, T0 + timedelta(seconds=1))
    event = replace(
        hs_event(1, "15", change_source="CRM_UI:userId:42"),
        property_name="dealstage",
        property_value="presentationscheduled",
    )
    ids = store.accept_events("hubspot", [event]).new_ids
    (result,) = world.service.handle_inbox_events(ids)
    assert world.hubspot.reads == [["15"]]
    assert not result.echo and result.enqueued == 1


def test_a_mappings_holder_is_read_on_every_call(store: SyncStore, clock: FakeClock) -> None:
    from sync_worker.mappings import MappingsHolder

    from .conftest import MAPPINGS_DIR

    holder = MappingsHolder(MAPPINGS_DIR, interval=60.0)
    service = SyncService(store, holder, {}, clock=clock)
    assert service.mappings() is holder.current
    assert service.mappings().routes.routes_from("lagrowthmachine", "reply")


def test_a_delivery_reads_its_write_memory_once(
    world: World, store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.hubspot.records["17"] = deal("hubspot", "17", StageKey.MEETING, T0)
    for deal_id in ("15", "16"):  # amounts we wrote: their webhooks are our echoes
        store.remember_write("hubspot", deal_id, "amount", Decimal("500"), at=T0 - timedelta(minutes=1))
    asked: list[str] = []
    for name in ("was_written", "recent_writes"):
        original = getattr(store, name)
        monkeypatch.setattr(
            store, name, lambda *a, _f=original, _n=name, **k: (asked.append(_n), _f(*a, **k))[1]
        )
    events = [
        replace(hs_event(n, deal_id), property_name="amount", property_value=value)
        for n, (deal_id, value) in enumerate([("15", "500.00"), ("16", "500"), ("17", "700")], start=1)
    ]
    ids = store.accept_events("hubspot", events).new_ids
    results = world.service.handle_inbox_events(ids)
    # One read of the write memory answers the three events; only the change nobody wrote is read
    # from HubSpot, and storing that record checks it once more (the echo check every ingest makes)
    assert asked == ["recent_writes", "was_written"]
    assert world.hubspot.reads == [["17"]]
    assert [r.external_id for r in results] == ["17"]
    assert all(store.get_inbox_event(i).processed_at is not None for i in ids)  # type: ignore[union-attr]
