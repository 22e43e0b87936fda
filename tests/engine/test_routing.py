"""Routing through the shipped routes.yaml: creates, advance-only, mirror, outcomes, idempotency."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sync_worker.canonical import (
    StageKey,
    WebhookEvent,
)
from sync_worker.engine.model import EngineConfig
from sync_worker.store import SyncStore

from .fakes import T0
from .world import World, deal, reply

# -- routing ----------------------------------------------------------------------------------


def test_reply_creates_crm_deals_at_contacted_and_links_them(world: World) -> None:
    # Given a lead that replied, with no deal anywhere
    result = world.service.ingest_record(reply("L1", "ada@example.com", T0))
    # Then a create is queued for each CRM route (HubSpot and Pipedrive in the shipped routes.yaml)
    assert result.events >= {"reply", "created"}
    assert result.enqueued == 2
    # When the outbox is pushed
    world.push_all()
    # Then each CRM got one create at the canonical stage "contacted", titled after the lead
    (created,) = world.hubspot.updates
    assert created.external_id is None and created.stage is StageKey.CONTACTED
    assert created.title == "Ada Lovelace" and created.origin == "lagrowthmachine"
    assert world.pipedrive.updates[0].external_id is None
    # And the new deals are stored and linked to the lead
    lead = world.store.get_record("lagrowthmachine", "lead", "L1")
    assert lead is not None
    linked = {(r.source, r.external_id) for r in world.store.linked_records(lead.id)}
    assert linked == {("hubspot", "901"), ("pipedrive", "901")}
    hs = world.store.get_record("hubspot", "deal", "901")
    assert hs is not None and hs.stage is StageKey.CONTACTED and hs.contact_email == "ada@example.com"


def test_reply_advances_a_matching_deal_found_by_email(world: World) -> None:
    # Given a Pipedrive deal of the same contact sitting in prospect
    world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROSPECT, T0 - timedelta(days=1), contact_email="Ada@Example.com")
    )
    world.service.ingest_record(
        deal("hubspot", "15", StageKey.PROPOSAL, T0 - timedelta(days=1), contact_email="ada@example.com")
    )
    # When the lead replies
    world.service.ingest_record(reply("L1", "ada@example.com", T0))
    world.push_all()
    # Then the Pipedrive deal moves forward to contacted (an update, no create)
    (update,) = world.pipedrive.updates
    assert update.external_id == "7" and update.stage is StageKey.CONTACTED
    # And the HubSpot deal, already further along, is never moved backwards (no stage written)
    assert all(u.stage is None for u in world.hubspot.updates)
    assert all(u.external_id is not None for u in world.hubspot.updates)


def test_pipedrive_stage_change_reaches_the_linked_hubspot_deal(world: World) -> None:
    world.linked_pair()
    # When the Pipedrive deal moves to proposal (a person did it in the app)
    result = world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROPOSAL, T0, change_source="app:9001")
    )
    assert "stage_change" in result.events and result.enqueued == 1
    world.push_all()
    # Then HubSpot gets exactly that stage, and Pipedrive gets nothing back
    (update,) = world.hubspot.updates
    assert update.external_id == "15" and update.stage is StageKey.PROPOSAL
    assert world.pipedrive.updates == []


def test_a_stage_the_target_cannot_hold_is_skipped_and_the_other_fields_still_flow(world: World) -> None:
    world.linked_pair()
    # When the Pipedrive deal goes back to "prospect" (stock HubSpot has no stage for it) and its
    # amount changes in the same edit
    world.service.ingest_record(
        deal("pipedrive", "7", StageKey.PROSPECT, T0, change_source="app:9001", amount=Decimal("4200"))
    )
    world.push_all()
    # Then HubSpot gets the amount without a stage: nothing fails, nothing is dead-lettered
    (update,) = world.hubspot.updates
    assert update.external_id == "15" and update.stage is None and update.amount == Decimal("4200")
    assert world.store.list_dead_letters() == []


def test_an_amount_is_written_with_its_currency_even_when_only_the_amount_changed(world: World) -> None:
    # Given twins in step, the HubSpot copy without a currency (deal_currency_code unset)
    world.linked_pair(amount=Decimal("1000"))
    world.service.ingest_record(
        deal(
            "pipedrive",
            "7",
            StageKey.CONTACTED,
            T0 - timedelta(hours=1),
            amount=Decimal("1000"),
            currency="EUR",
        )
    )
    world.push_all()
    world.hubspot.applied.clear()
    # When only the Pipedrive amount changes
    world.service.ingest_record(
        deal(
            "pipedrive",
            "7",
            StageKey.CONTACTED,
            T0,
            change_source="app:9001",
            amount=Decimal("4200"),
            currency="EUR",
        )
    )
    world.push_all()
    # Then HubSpot gets the amount together with its currency
    (update,) = world.hubspot.updates
    assert update.amount == Decimal("4200") and update.currency == "EUR"


def test_crm_win_sets_the_lead_status_with_its_email(world: World) -> None:
    world.service.ingest_record(reply("L1", "ada@example.com", T0 - timedelta(days=2)))
    world.push_all()
    world.hubspot.applied.clear()
    world.pipedrive.applied.clear()
    # When the HubSpot deal created for the lead is won
    world.service.ingest_record(deal("hubspot", "901", StageKey.WON, T0 + timedelta(hours=1)))
    world.push_all()
    # Then LaGrowthMachine gets the won stage for the lead, addressed by its e-mail
    (update,) = world.lgm.updates
    assert update.external_id == "L1" and update.stage is StageKey.WON
    assert update.contact_email == "ada@example.com"
    # And the Pipedrive copy (linked through the lead) mirrors the win
    (mirrored,) = world.pipedrive.updates
    assert mirrored.external_id == "901" and mirrored.stage is StageKey.WON


def test_unlinked_record_without_match_routes_nowhere(world: World) -> None:
    result = world.service.ingest_record(deal("pipedrive", "7", StageKey.MEETING, T0))
    assert result.enqueued == 0
    world.push_all()
    assert world.hubspot.applied == []


# -- idempotency ------------------------------------------------------------------------------


def test_the_same_change_twice_is_queued_once(world: World) -> None:
    world.linked_pair()
    change = deal("pipedrive", "7", StageKey.MEETING, T0)
    assert world.service.ingest_record(change).enqueued == 1
    assert world.service.ingest_record(change).enqueued == 0
    world.push_all()
    assert len(world.hubspot.updates) == 1


def test_a_replayed_reply_never_creates_a_second_deal(world: World) -> None:
    world.service.ingest_record(reply("L1", "ada@example.com", T0))
    world.push_all()
    assert len(world.hubspot.updates) == 1
    # A replay of the reply with a later timestamp but the link in place advances nothing
    world.service.ingest_record(reply("L1", "ada@example.com", T0 + timedelta(minutes=1)))
    world.push_all()
    assert [u.external_id for u in world.hubspot.updates] == [None]


def test_a_create_claimed_before_turns_into_an_update(world: World, store: SyncStore) -> None:
    # Given a create that succeeded earlier (its key holds the new id) but whose link was lost
    store.claim_key("create:hubspot:lagrowthmachine:lead:L1")
    store.record_result("create:hubspot:lagrowthmachine:lead:L1", {"external_id": "555"})
    # When the reply is routed again
    world.service.ingest_record(reply("L1", "ada@example.com", T0))
    world.push_all()
    # Then HubSpot deal 555 is updated, not a new deal created
    (update,) = world.hubspot.updates
    assert update.external_id == "555"


DEAD_PUSH_KEY = "create:hubspot:lagrowthmachine:lead:L1"


def _reply_whose_create_a_dead_push_claimed(world: World, store: SyncStore) -> None:
    """A reply routed to a HubSpot create that a push claimed, then died (no result recorded)."""
    assert store.claim_key(DEAD_PUSH_KEY, at=world.clock())
    world.service.ingest_record(reply("L1", "ada@example.com", T0))


def test_a_create_left_unfinished_by_a_dead_push_is_taken_over_after_the_lease(
    world: World, store: SyncStore
) -> None:
    # Given a push that claimed the HubSpot create of a reply, then died before HubSpot answered
    _reply_whose_create_a_dead_push_claimed(world, store)
    # When the next push runs while the claim is fresh: the create waits (someone may be on it)
    world.push_all()
    assert world.hubspot.updates == []
    # When the lease has run out with no result: one push takes the create over and makes the deal
    world.push_all(after=EngineConfig().create_lease + timedelta(seconds=1))
    (created,) = world.hubspot.updates
    assert created.external_id is None
    # And it is made once: later pushes find the result and create nothing more
    world.push_all(after=EngineConfig().create_lease * 2)
    assert [u.external_id for u in world.hubspot.updates] == [None]
    assert (store.key_result(DEAD_PUSH_KEY) or {}).get("external_id") == "901"


def test_a_create_taken_over_becomes_an_update_of_the_deal_the_dead_push_made(
    world: World, store: SyncStore
) -> None:
    # Given a push that created the HubSpot deal of a reply, then died before recording it
    _reply_whose_create_a_dead_push_claimed(world, store)
    world.pipedrive.applied.clear()
    # And a later poll brought that deal in, linked to the lead by the id the create carried
    polled = deal("hubspot", "777", StageKey.CONTACTED, T0, links={"lagrowthmachine": "L1"})
    world.service.ingest_record(polled)
    lead = store.get_record("lagrowthmachine", "lead", "L1")
    made = store.get_record("hubspot", "deal", "777")
    assert lead is not None and made is not None
    store.link_records([lead.id, made.id])
    # When the lease runs out
    world.push_all(after=EngineConfig().create_lease + timedelta(seconds=1))
    # Then no second deal: whatever is written goes to deal 777, and the create key names it
    assert all(u.external_id == "777" for u in world.hubspot.updates)
    assert (store.key_result(DEAD_PUSH_KEY) or {}).get("external_id") == "777"


def test_inbox_event_handled_twice_writes_once(world: World, store: SyncStore) -> None:
    world.linked_pair()
    world.pipedrive.by_payload["7"] = deal("pipedrive", "7", StageKey.MEETING, T0, change_source="app:9001")
    event = WebhookEvent(
        source="pipedrive",
        dedupe_key="v2:abc",
        object_type="deal",
        object_id="7",
        action="change",
        occurred_at=T0,
        raw={"meta": {"id": "abc"}, "data": {"id": 7}, "previous": {"stage_id": 1}},
        change_source="app:9001",
    )
    (inbox_id,) = store.accept_events("pipedrive", [event]).new_ids
    world.service.handle_inbox_event(inbox_id)
    world.service.handle_inbox_event(inbox_id)
    world.push_all()
    assert len(world.hubspot.updates) == 1
    stored = store.get_inbox_event(inbox_id)
    assert stored is not None and stored.processed_at is not None
