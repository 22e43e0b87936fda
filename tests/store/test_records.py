"""Records: upserts with stage history and transitions, lookups, links, time zones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.store import SyncStore

from .fakes import FakeClock

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def _deal(external_id: str = "42", **changes: object) -> CanonicalRecord:
    base = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id=external_id,
        updated_at=T0,
        stage=StageKey.QUALIFIED,
        pipeline_id="1",
        source_stage="2",
        title="Acme expansion",
        amount=Decimal("12500.50"),
        currency="EUR",
        owner_id="u-7",
        contact_email="  Jane.Doe@Example.COM ",
        company="Acme",
        close_date=date(2024, 6, 30),
        created_at=T0 - timedelta(days=3),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_first_sight_inserts_and_starts_the_stage_history(store: SyncStore, clock: FakeClock) -> None:
    change = store.upsert_record(_deal(), origin="pipedrive", written_by_worker=False)
    assert change.created and change.applied
    assert change.previous_stage is None and change.previous_status is None
    assert not change.stage_changed
    rec = change.record
    assert rec.stage is StageKey.QUALIFIED and rec.status == "open" and not rec.deleted
    assert rec.amount == Decimal("12500.50") and isinstance(rec.amount, Decimal)
    assert rec.contact_email == "jane.doe@example.com"
    assert rec.close_date == date(2024, 6, 30)
    assert rec.stage_entered_at == rec.first_seen_at == rec.last_seen_at == clock.now
    assert rec.source_updated_at == T0 and rec.source_created_at == T0 - timedelta(days=3)
    history = store.stage_history(rec.id)
    assert [(h.from_stage, h.to_stage, h.origin) for h in history] == [
        (None, StageKey.QUALIFIED, "pipedrive")
    ]
    assert store.get_record("pipedrive", "deal", "42") == rec
    assert store.get_record_by_id(rec.id) == rec
    assert store.get_record("pipedrive", "lead", "42") is None


def test_stage_change_appends_history_and_resets_the_stage_clock(store: SyncStore, clock: FakeClock) -> None:
    # Given a deal first seen in "qualified"
    first = store.upsert_record(_deal(), origin="pipedrive", written_by_worker=False).record
    # When the same stage comes again a day later, nothing about the stage moves
    clock.advance(timedelta(days=1))
    same = store.upsert_record(
        _deal(updated_at=T0 + timedelta(days=1)), origin="pipedrive", written_by_worker=False
    )
    assert not same.stage_changed and same.record.stage_entered_at == first.stage_entered_at
    assert same.record.last_seen_at == clock.now
    # When the worker moves it to "proposal" with the source's own transition time
    moved_at = T0 + timedelta(days=2, hours=3)
    change = store.upsert_record(
        _deal(stage=StageKey.PROPOSAL, updated_at=moved_at, stage_changed_at=moved_at),
        origin="hubspot",
        written_by_worker=True,
    )
    # Then the caller sees the transition and the clock restarts at that time
    assert change.stage_changed and not change.status_changed
    assert change.previous_stage is StageKey.QUALIFIED and change.record.stage is StageKey.PROPOSAL
    assert change.record.stage_entered_at == moved_at
    # And it closes as lost without a transition time: seen_at is used
    clock.advance(timedelta(days=5))
    lost = store.upsert_record(
        _deal(stage=StageKey.LOST, status="lost", lost_reason="budget", updated_at=clock.now),
        origin="pipedrive",
        written_by_worker=False,
    )
    assert lost.status_changed and lost.previous_status == "open" and lost.record.status == "lost"
    assert lost.record.stage_entered_at == clock.now and lost.record.lost_reason == "budget"
    history = store.stage_history(first.id)
    assert [(h.from_stage, h.to_stage, h.written_by_worker) for h in history] == [
        (None, StageKey.QUALIFIED, False),
        (StageKey.QUALIFIED, StageKey.PROPOSAL, True),
        (StageKey.PROPOSAL, StageKey.LOST, False),
    ]
    assert history[1].at == moved_at and history[1].origin == "hubspot"


def test_stale_update_does_not_overwrite_newer_state(store: SyncStore, clock: FakeClock) -> None:
    store.upsert_record(
        _deal(stage=StageKey.PROPOSAL, updated_at=T0), origin="pipedrive", written_by_worker=False
    )
    clock.advance(timedelta(hours=1))
    stale = store.upsert_record(
        _deal(stage=StageKey.PROSPECT, title="old", updated_at=T0 - timedelta(hours=2)),
        origin="pipedrive",
        written_by_worker=False,
    )
    assert not stale.applied and not stale.stage_changed
    assert stale.record.stage is StageKey.PROPOSAL and stale.record.title == "Acme expansion"
    assert stale.record.last_seen_at == clock.now
    assert len(store.stage_history(stale.record.id)) == 1


def test_an_upsert_told_the_record_exists_updates_it_and_inserts_it_when_it_does_not(
    store: SyncStore, clock: FakeClock
) -> None:
    # Told it exists while it does not: inserted after all, history started
    first = store.upsert_record(_deal(), origin="pipedrive", written_by_worker=False, exists=True)
    assert first.created and first.record.stage is StageKey.QUALIFIED
    clock.advance(timedelta(minutes=5))
    moved = store.upsert_record(
        _deal(stage=StageKey.PROPOSAL, title="Moved", updated_at=T0 + timedelta(minutes=5)),
        origin="pipedrive",
        written_by_worker=True,
        exists=True,
    )
    assert not moved.created and moved.applied and moved.stage_changed
    assert moved.record.id == first.record.id and moved.record.title == "Moved"
    assert [
        (t.from_stage, t.to_stage, t.written_by_worker) for t in store.stage_history(first.record.id)
    ] == [
        (None, StageKey.QUALIFIED, False),
        (StageKey.QUALIFIED, StageKey.PROPOSAL, True),
    ]
    stale = store.upsert_record(_deal(title="old"), origin="pipedrive", written_by_worker=False, exists=True)
    assert not stale.applied and stale.record.title == "Moved"


def test_unmapped_stage_keeps_the_last_known_stage_and_clock(store: SyncStore, clock: FakeClock) -> None:
    first = store.upsert_record(_deal(), origin="pipedrive", written_by_worker=False).record
    clock.advance(timedelta(days=1))
    change = store.upsert_record(
        _deal(stage=None, source_stage="99", updated_at=T0 + timedelta(days=1)),
        origin="pipedrive",
        written_by_worker=False,
    )
    assert change.record.stage is StageKey.QUALIFIED and change.record.source_stage == "99"
    assert change.record.stage_entered_at == first.stage_entered_at
    assert not change.stage_changed


def test_replied_at_and_deleted(store: SyncStore) -> None:
    replied = T0 + timedelta(hours=5)
    lead = _deal(
        "lead-1", kind="lead", source="lagrowthmachine", replied_at=replied, stage=StageKey.CONTACTED
    )
    store.upsert_record(lead, origin="lagrowthmachine", written_by_worker=False)
    later = store.upsert_record(
        replace(lead, replied_at=None, updated_at=T0 + timedelta(days=1), status="deleted"),
        origin="lagrowthmachine",
        written_by_worker=False,
    )
    assert later.record.replied_at == replied  # a record without the reply does not erase it
    assert later.record.deleted and later.record.status == "deleted"


def test_find_records_by_email_is_case_insensitive(store: SyncStore) -> None:
    a = store.upsert_record(_deal("1"), origin="pipedrive", written_by_worker=False).record
    b = store.upsert_record(
        _deal("9", source="hubspot", contact_email="JANE.DOE@example.com"),
        origin="hubspot",
        written_by_worker=False,
    ).record
    store.upsert_record(
        _deal("2", contact_email="other@example.com"), origin="pipedrive", written_by_worker=False
    )
    assert [r.id for r in store.find_records_by_email("jane.doe@EXAMPLE.com ")] == [a.id, b.id]
    assert store.find_records_by_email("nobody@example.com") == []
    assert store.find_records_by_email("  ") == []


def test_get_records_reads_several_ids_of_one_source_at_once(store: SyncStore) -> None:
    ids = [str(n) for n in range(1, 601)]  # more than one read of 500
    for external_id in ids[::100]:
        store.upsert_record(_deal(external_id), origin="pipedrive", written_by_worker=False)
    store.upsert_record(_deal("1", source="hubspot"), origin="hubspot", written_by_worker=False)
    found = store.get_records("pipedrive", "deal", [*ids, "nope"])
    assert sorted(found, key=int) == ids[::100]
    assert all(r.source == "pipedrive" and r.external_id == k for k, r in found.items())
    assert found["101"] == store.get_record("pipedrive", "deal", "101")
    assert store.get_records("pipedrive", "lead", ids) == {}
    assert store.get_records("pipedrive", "deal", []) == {}


def test_records_in_stages_lists_longest_in_stage_first(store: SyncStore, clock: FakeClock) -> None:
    old = store.upsert_record(_deal("1", stage=StageKey.PROPOSAL), origin="p", written_by_worker=False).record
    clock.advance(timedelta(days=1))
    new = store.upsert_record(_deal("2", stage=StageKey.PROPOSAL), origin="p", written_by_worker=False).record
    store.upsert_record(_deal("3", stage=StageKey.WON, status="won"), origin="p", written_by_worker=False)
    assert [r.id for r in store.records_in_stages([StageKey.PROPOSAL, StageKey.NEGOTIATION])] == [
        old.id,
        new.id,
    ]


def test_link_records_groups_and_merges(store: SyncStore) -> None:
    a, b, c, d = (
        store.upsert_record(_deal(str(n)), origin="pipedrive", written_by_worker=False).record.id
        for n in range(4)
    )
    assert store.linked_records(a) == [] and store.link_id(a) is None
    group = store.link_records([a, b])
    assert [r.id for r in store.linked_records(a)] == [b]
    # Linking an already linked record with a new one extends its group
    assert store.link_records([b, c]) == group
    assert [r.id for r in store.linked_records(c)] == [a, b]
    # Two groups joined by one link become one
    other = store.link_records([d])
    assert other != group
    merged = store.link_records([d, a])
    assert merged == min(group, other)
    assert {store.link_id(x) for x in (a, b, c, d)} == {merged}
    with pytest.raises(ValueError, match="unknown record ids"):
        store.link_records([a, 10_000])
    with pytest.raises(ValueError):
        store.link_records([])


def test_timestamps_round_trip_as_utc(store: SyncStore) -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2024, 7, 1, 9, 30, 15, 123456, tzinfo=paris)
    rec = store.upsert_record(
        _deal(updated_at=local, stage_changed_at=local),
        origin="pipedrive",
        written_by_worker=False,
        seen_at=local,
    ).record
    fetched = store.get_record_by_id(rec.id)
    assert fetched is not None
    for value in (fetched.source_updated_at, fetched.stage_entered_at, fetched.first_seen_at):
        assert value == local
        assert value is not None and value.tzinfo is UTC
        assert value.hour == 7 and value.microsecond == 123456
    naive = datetime(2024, 7, 1, 9, 30)
    with pytest.raises(ValueError, match="naive"):
        store.upsert_record(_deal("n", updated_at=naive), origin="pipedrive", written_by_worker=False)
